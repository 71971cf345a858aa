"""Write the `.keras` files that `tests/test_saved_files.py` reloads.

Run once with a release's code to freeze what its users saved (the files in
`saved_0_1/` were written at commit e01dc30, release 0.1 plus the cache,
grouped-query heads and LoRA):

    python tests/data/make_saved_files.py tests/data/saved_0_1

Each model is saved with its inputs and outputs (`<name>.npz`), so a later
release must reload it and compute the same outputs.
"""

import os
import sys

import keras
import numpy as np

import keras_selfattn as ksa

VOCAB, LENGTH, WIDTH = 50, 9, 16


def _token_ids(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(3, LENGTH))
    ids[0, 6:] = 0  # padding
    ids[2, 2:] = 0
    return ids.astype("int32")


def encoder_stack():
    """Embedding, a post-norm block, a causal pre-norm GQA block, additive
    self-attention and pooling: the classifier-shaped model."""
    keras.utils.set_random_seed(1)
    ids = keras.Input((None,), dtype="int32")
    x = ksa.TokenAndPositionEmbedding(VOCAB, 32, WIDTH)(ids)
    x = ksa.TransformerBlock(4, 24, dropout=0.1)(x)
    x = ksa.TransformerBlock(
        4, 20, causal=True, norm_first=True, num_key_value_heads=2
    )(x)
    x = ksa.MultiHeadSelfAttention(2, score="additive")(x)
    x = ksa.SequencePooling("mean")(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(ids, outputs), [_token_ids(2)]


def decoder_stack():
    """A decoder block over encoder outputs, with sinusoidal positions, RMS
    norm and no biases."""
    keras.utils.set_random_seed(3)
    target = keras.Input((None, WIDTH))
    source = keras.Input((None, WIDTH))
    x = ksa.PositionalEncoding()(target)
    x = ksa.TransformerDecoderBlock(
        4, 12, normalization="rms", use_bias=False, num_key_value_heads=1
    )(x, source)
    outputs = ksa.TransformerDecoderBlock(2, 12)(x, source)
    rng = np.random.default_rng(4)
    inputs = [
        rng.normal(size=(2, 5, WIDTH)).astype("float32"),
        rng.normal(size=(2, 7, WIDTH)).astype("float32"),
    ]
    return keras.Model([target, source], outputs), inputs


def lora_attention():
    """Attention with trained LoRA adapters on every projection, a learned
    position table and a window."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((None, WIDTH))
    x = ksa.PositionalEncoding("learned", max_length=16)(inputs)
    attention = ksa.MultiHeadSelfAttention(4, window=2, key_dim=6)
    x = attention(x)
    attention.enable_lora(2, targets=("query", "key", "value", "output"))
    for weight in attention.lora_weights:
        weight.assign(np.random.default_rng(6).normal(size=weight.shape))
    rng = np.random.default_rng(7)
    data = [rng.normal(size=(2, 6, WIDTH)).astype("float32")]
    return keras.Model(inputs, x), data


MODELS = {
    "encoder_stack": encoder_stack,
    "decoder_stack": decoder_stack,
    "lora_attention": lora_attention,
}


def main(directory):
    os.makedirs(directory, exist_ok=True)
    for name, make in MODELS.items():
        model, inputs = make()
        feed = inputs if len(inputs) > 1 else inputs[0]
        outputs = keras.ops.convert_to_numpy(model(feed, training=False))
        model.save(os.path.join(directory, f"{name}.keras"))
        np.savez(
            os.path.join(directory, f"{name}.npz"),
            outputs=outputs,
            **{f"input_{i}": x for i, x in enumerate(inputs)},
        )
        print(name, outputs.shape)


if __name__ == "__main__":
    main(sys.argv[1])
