"""Training throughput of the example models: ours vs KerasHub layers.

The same architectures as `examples/text_classification.py` and
`examples/translation.py`, built once from keras_selfattn and once from
KerasHub's layers (as the keras.io examples do), trained on the same random
token batches with `train_on_batch`; interleaved repeats, medians after
warm-up, tokens per second (real tokens, padding excluded).

Usage:

    pip install keras-hub==0.32.0   # benchmark-only dependency
    python benchmarks/pipeline_throughput.py
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_selfattn.models import Seq2SeqTransformer  # noqa: E402
from keras_selfattn.models import build_text_classifier  # noqa: E402

VOCAB = 8000


def _batch(batch, length, rng):
    ids = rng.integers(1, VOCAB, size=(batch, length)).astype("int32")
    lengths = rng.integers(length // 4, length + 1, size=batch)
    ids[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return ids


def hub_classifier(length, dim, heads, ff, layers):
    import keras_hub

    ids = keras.Input((None,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        VOCAB, length, dim, mask_zero=True
    )(ids)
    for _ in range(layers):
        x = keras_hub.layers.TransformerEncoder(ff, heads, dropout=0.1)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dropout(0.1)(x)
    return keras.Model(ids, keras.layers.Dense(2, activation="softmax")(x))


def hub_seq2seq(length, dim, heads, ff, layers):
    import keras_hub

    src = keras.Input((None,), dtype="int32", name="encoder_ids")
    tgt = keras.Input((None,), dtype="int32", name="decoder_ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        VOCAB, length, dim, mask_zero=True
    )(src)
    for _ in range(layers):
        x = keras_hub.layers.TransformerEncoder(ff, heads, dropout=0.1)(x)
    y = keras_hub.layers.TokenAndPositionEmbedding(
        VOCAB, length, dim, mask_zero=True
    )(tgt)
    for _ in range(layers):
        y = keras_hub.layers.TransformerDecoder(ff, heads, dropout=0.1)(y, x)
    logits = keras.layers.Dense(VOCAB)(y)
    return keras.Model({"encoder_ids": src, "decoder_ids": tgt}, logits)


def _compile(model, seq2seq):
    loss = (
        keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0
        )
        if seq2seq
        else "sparse_categorical_crossentropy"
    )
    model.compile(optimizer="adam", loss=loss)
    return model


def measure(models, make_batch, tokens, repeats):
    batches = [make_batch() for _ in range(3)]
    for model in models:
        for x, y in batches:
            model.train_on_batch(x, y)
    times = [[] for _ in models]
    for r in range(repeats):
        x, y = batches[r % len(batches)]
        for i, model in enumerate(models):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[i].append(time.perf_counter() - start)
    return [tokens / statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| pipeline | batch x length | ours (tokens/s) | KerasHub | ratio |")
    print("|---|---|---|---|---|")

    # Classification: width 128, 4 heads, ff 256, 2 blocks (the example's).
    batch, length = 64, 128
    keras.utils.set_random_seed(0)
    ours = build_text_classifier(VOCAB, length, 2, 128, 4, 256, 2)
    theirs = hub_classifier(length, 128, 4, 256, 2)
    ids = _batch(batch, length, rng)
    labels = rng.integers(0, 2, size=batch)
    tokens = int((ids != 0).sum())
    a, b = measure(
        [_compile(ours, False), _compile(theirs, False)],
        lambda: (ids, labels),
        tokens,
        args.repeats,
    )
    print(
        f"| classification | {batch}x{length} | {a:.0f} | {b:.0f} | "
        f"{a / b:.2f}x |"
    )

    # Translation: width 256, 8 heads, ff 1024, 2+2 blocks.
    batch, length = 32, 40
    ours = Seq2SeqTransformer(
        VOCAB, VOCAB, length, length, 256, 8, 1024, 2, 2, dropout=0.1
    )
    theirs = hub_seq2seq(length, 256, 8, 1024, 2)
    src = _batch(batch, length, rng)
    tgt = _batch(batch, length, rng)
    inputs = {"encoder_ids": src, "decoder_ids": tgt}
    tokens = int((src != 0).sum() + (tgt != 0).sum())
    a, b = measure(
        [_compile(ours, True), _compile(theirs, True)],
        lambda: (inputs, tgt),
        tokens,
        args.repeats,
    )
    print(
        f"| translation | {batch}x{length} | {a:.0f} | {b:.0f} | {a / b:.2f}x |"
    )


if __name__ == "__main__":
    main()
