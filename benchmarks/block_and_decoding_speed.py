"""TransformerBlock vs KerasHub's TransformerEncoder, and cached decoding.

Two tables, each measured in one process with interleaved repeats and
medians after warm-up (the machine is shared: read the ratios):

1. Forward+backward of `keras_selfattn.TransformerBlock` vs
   `keras_hub.layers.TransformerEncoder` with the same sizes (width 256,
   8 heads, feed-forward 1024, dropout 0, post-norm), float32, inside a
   `tf.function`.
2. Generating 128 tokens with `Seq2SeqTransformer.generate` (key/value
   cache) vs `generate_uncached` (`tests/models/uncached.py`, re-running
   the decoder on the whole prefix each step); both produce identical
   tokens, which is checked.

Usage:

    pip install keras-hub==0.32.0   # benchmark-only dependency
    python benchmarks/block_and_decoding_speed.py
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_selfattn import TransformerBlock  # noqa: E402
from keras_selfattn.models import Seq2SeqTransformer  # noqa: E402

# The uncached oracle is test code (tests/models/uncached.py), not shipped.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
from tests.models.uncached import generate_uncached  # noqa: E402

WIDTH, HEADS, FF = 256, 8, 1024


def _step_fn(layer, x):
    weights = layer.trainable_weights

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return tape.gradient(loss, [x, *weights])

    return step


def _time(fn):
    start = time.perf_counter()
    out = fn()
    # Pull one value to the host: the step has finished.
    np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
    return time.perf_counter() - start


def interleaved(fns, repeats, warmup=2):
    for fn in fns:
        for _ in range(warmup):
            _time(fn)
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            samples[i].append(_time(fn))
    return [statistics.median(s) for s in samples]


def block_table(configs, repeats):
    import keras_hub

    print("\n## TransformerBlock vs keras_hub.layers.TransformerEncoder")
    print("(forward+backward, float32, width 256, 8 heads, ff 1024)\n")
    print("| batch x length | ours (ms) | KerasHub (ms) | speed-up |")
    print("|---|---|---|---|")
    rows = []
    for config in configs:
        batch, length = (int(v) for v in config.split("x"))
        x = tf.random.normal((batch, length, WIDTH))
        ours = TransformerBlock(HEADS, FF, dropout=0.0)
        theirs = keras_hub.layers.TransformerEncoder(
            intermediate_dim=FF, num_heads=HEADS, dropout=0.0
        )
        ours(x)
        theirs(x)
        t_ours, t_theirs = interleaved(
            [_step_fn(ours, x), _step_fn(theirs, x)], repeats
        )
        ratio = t_theirs / t_ours
        rows.append((config, t_ours, t_theirs, ratio))
        print(
            f"| {config} | {1e3 * t_ours:.1f} | {1e3 * t_theirs:.1f} "
            f"| {ratio:.2f}x |"
        )
    return rows


def decoding_table(tokens, batch, repeats):
    print(f"\n## Generating {tokens} tokens (batch {batch}): cache vs none\n")
    keras.utils.set_random_seed(0)
    model = Seq2SeqTransformer(
        8000,
        8000,
        64,
        tokens + 1,
        embed_dim=WIDTH,
        num_heads=HEADS,
        ff_dim=FF,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout=0.0,
    )
    source = np.random.default_rng(0).integers(4, 8000, size=(batch, 64))
    source = tf.constant(source, dtype=tf.int32)
    # An end id the random model never emits, so all `tokens` are decoded.
    never = 0

    cached = tf.function(lambda s: model.generate(s, tokens, 2, never))
    uncached = tf.function(
        lambda s: generate_uncached(model, s, tokens, 2, never)
    )
    a, b = np.asarray(cached(source)), np.asarray(uncached(source))
    identical = bool(np.array_equal(a, b))
    t_cached, t_uncached = interleaved(
        [lambda: cached(source), lambda: uncached(source)], repeats, 1
    )
    print("| method | time (s) | tokens/s |")
    print("|---|---|---|")
    for name, t in (("cached", t_cached), ("uncached", t_uncached)):
        print(f"| {name} | {t:.2f} | {batch * tokens / t:.0f} |")
    print(
        f"\nspeed-up {t_uncached / t_cached:.2f}x; identical tokens: "
        f"{identical}"
    )
    return t_cached, t_uncached, identical


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--configs", nargs="+", default=["32x128", "8x512", "2x2048"]
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--skip-blocks", action="store_true")
    args = parser.parse_args()
    if not args.skip_blocks:
        block_table(args.configs, args.repeats)
    decoding_table(args.tokens, args.batch, max(3, args.repeats // 2))


if __name__ == "__main__":
    main()
