"""Tests for `TokenAndPositionEmbedding`."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_selfattn.layers import _masking
from keras_selfattn.layers.sequence_pooling import SequencePooling
from keras_selfattn.layers.token_and_position_embedding import (
    TokenAndPositionEmbedding,
)
from tests import harness
from tests import reference

# Every axis a different size: batch 2, length 5, width 12, 7 positions,
# 23 ids.
BATCH, LENGTH, WIDTH, MAX_LENGTH, VOCAB = 2, 5, 12, 7, 23

VARIANTS = {
    "learned": {},
    "sinusoidal-scaled": {"position": "sinusoidal", "scale_embeddings": True},
    # No padding id: the output carries only a mask passed in.
    "learned-no-mask-zero": {"mask_zero": False},
}


def _ids():
    # Row 0 partly padded, row 1 fully padded (an empty string).
    return np.array([[3, 17, 5, 0, 0], [0, 0, 0, 0, 0]], dtype="int32")


def _make(**kwargs):
    return TokenAndPositionEmbedding(VOCAB, MAX_LENGTH, WIDTH, **kwargs)


def _spec(kwargs):
    return harness.LayerSpec(
        cls=TokenAndPositionEmbedding,
        init_kwargs={
            "vocab_size": VOCAB,
            "max_length": MAX_LENGTH,
            "embed_dim": WIDTH,
            **kwargs,
        },
        input_data=_ids(),
        mask=_ids() != 0,
        expected_num_trainable_weights=(
            1 if kwargs.get("position") == "sinusoidal" else 2
        ),
        # Padding is the id 0 itself, and padded positions hold its
        # embedding plus their position, not zeros.
        values_at_padding=False,
        zeros_at_padding=False,
    )


@pytest.mark.parametrize("check", harness.check_params(variant=True))
@pytest.mark.parametrize(
    "variant",
    # "learned" is the main spec on JAX and PyTorch.
    [
        pytest.param(v, marks=pytest.mark.all_backends) if v == "learned" else v
        for v in VARIANTS
    ],
)
def test_contract(variant, check):
    harness.CHECKS[check](_spec(VARIANTS[variant]))


def _numpy(x):
    return harness.to_numpy(x)


def _tables(layer):
    tokens = _numpy(layer.token_embedding.embeddings)
    if layer.position == "learned":
        positions = _numpy(layer.position_embedding.embeddings)
    else:
        positions = reference.sinusoidal(MAX_LENGTH, WIDTH)
    return tokens, positions


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("start", [0, 2])
def test_values(position, scale, start):
    layer = _make(position=position, scale_embeddings=scale)
    ids = _ids()
    out = layer(ids, start_index=start)
    tokens, positions = _tables(layer)
    factor = math.sqrt(WIDTH) if scale else 1.0
    expected = tokens[ids] * factor + positions[None, start : start + LENGTH]
    harness.assert_close(out, expected, 1e-5, "values")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_start_index_equals_slice_of_full_output(variant):
    layer = _make(**VARIANTS[variant])
    ids = np.array([[3, 17, 5, 9, 1], [8, 2, 22, 4, 0]], dtype="int32")
    full = _numpy(layer(ids))
    step = tf.function(lambda x, t: layer(x, start_index=t))
    for t in range(LENGTH):
        one = ids[:, t : t + 1]
        for start in (t, tf.constant(t)):
            out = layer(one, start_index=start)
            harness.assert_close(out[:, 0], full[:, t], 1e-6, f"{start!r}")
        out = step(tf.constant(one), tf.constant(t))
        harness.assert_close(out[:, 0], full[:, t], 1e-6, "graph")


def test_mask_is_ids_not_zero():
    out = _make()(_ids())
    np.testing.assert_array_equal(_numpy(out._keras_mask), _ids() != 0)


def test_no_mask_zero_emits_no_mask():
    out = _make(mask_zero=False)(_ids())
    assert getattr(out, "_keras_mask", None) is None


def test_explicit_mask_combines_with_ids_not_zero():
    mask = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=bool)
    out = _make()(_ids(), mask=mask)
    expected = mask & (_ids() != 0)
    np.testing.assert_array_equal(_numpy(out._keras_mask), expected)
    out = _make(mask_zero=False)(_ids(), mask=mask)
    np.testing.assert_array_equal(_numpy(out._keras_mask), mask)


def test_mask_reaches_a_mask_consumer():
    embedding = _make()
    inputs = keras.Input((None,), dtype="int32")
    symbolic = embedding(inputs)
    # Functional models take the symbolic mask from `compute_mask`.
    assert _masking.get_keras_mask(symbolic) is not None
    model = keras.Model(inputs, SequencePooling("mean")(symbolic))
    hidden = _numpy(embedding(_ids()))
    # The mean over real tokens only; the empty row pools to zeros (with a
    # lost mask, padded positions, non-zero here, would enter the mean).
    expected = np.stack([hidden[0, :3].mean(0), np.zeros(WIDTH)])
    harness.assert_close(model(_ids()), expected, 1e-6, "pooled")


def test_sub_layers_have_stable_names_and_distinct_tables():
    layer = _make()
    layer.build((None, None))
    paths = sorted(w.path for w in layer.weights)
    assert paths == [
        f"{layer.name}/position_embedding/embeddings",
        f"{layer.name}/token_embedding/embeddings",
    ]
    # Each table gets its own initializer instance, hence its own draw (one
    # shared instance gives two tables of the same shape the same values).
    layer = TokenAndPositionEmbedding(MAX_LENGTH, MAX_LENGTH, WIDTH)
    layer.build((None, None))
    tokens, positions = _tables(layer)
    assert tokens.shape == positions.shape
    assert not np.allclose(tokens, positions)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_over_length_raises_naming_max_length(position):
    layer = _make(position=position)
    too_long = np.ones((BATCH, MAX_LENGTH + 1), "int32")
    with pytest.raises(ValueError, match="argument `max_length`"):
        layer(too_long)
    with pytest.raises(ValueError, match="argument `max_length`"):
        layer(_ids(), start_index=MAX_LENGTH - LENGTH + 1)
    assert tuple(layer(_ids(), start_index=MAX_LENGTH - LENGTH).shape) == (
        BATCH,
        LENGTH,
        WIDTH,
    )


def test_out_of_range_ids_on_cpu():
    # What the docstring promises for ids outside [0, vocab_size) on CPU.
    layer = _make()
    ids = np.array([[1, 2, -1]], dtype="int32")
    with tf.device("/CPU:0"):
        wrapped = _numpy(layer(ids))
        tokens, positions = _tables(layer)
        harness.assert_close(
            wrapped[0, 2], tokens[VOCAB - 1] + positions[2], 1e-6, "wrap"
        )
        for bad in (VOCAB, -VOCAB - 1):
            with pytest.raises(tf.errors.InvalidArgumentError):
                layer(np.array([[1, bad]], dtype="int32"))
        # XLA clamps to the nearest valid id, silently.
        compiled = tf.function(layer, jit_compile=True)
        clamped = _numpy(compiled(tf.constant([[1, VOCAB + 5]])))
        harness.assert_close(
            clamped[0, 1], tokens[VOCAB - 1] + positions[1], 1e-6, "clamp"
        )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_mixed_precision_dtype(policy, position):
    layer = _make(position=position, scale_embeddings=True, dtype=policy)
    out = layer(_ids())
    assert keras.backend.standardize_dtype(out.dtype) == policy[6:]
    assert all(w.dtype == "float32" for w in layer.weights)
    assert layer.token_embedding.dtype_policy.name == policy
    assert layer.position_embedding.dtype_policy.name == policy


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 2.0}, "vocab_size"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": None}, "max_length"),
        ({"embed_dim": -1}, "embed_dim"),
        ({"position": "rotary"}, "position"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    args = {
        "vocab_size": VOCAB,
        "max_length": MAX_LENGTH,
        "embed_dim": WIDTH,
        **kwargs,
    }
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        TokenAndPositionEmbedding(**args)


@pytest.mark.parametrize("argument", ["mask_zero", "scale_embeddings"])
def test_invalid_types(argument):
    with pytest.raises(TypeError, match=f"argument `{argument}`"):
        _make(**{argument: 1})


@pytest.mark.parametrize("shape", [(BATCH,), (BATCH, LENGTH, 1)])
def test_wrong_rank_raises(shape):
    with pytest.raises(ValueError, match="argument `inputs`.*rank-2"):
        _make()(np.ones(shape, "int32"))


def test_invalid_start_index_raises():
    with pytest.raises(ValueError, match="argument `start_index`"):
        _make()(_ids(), start_index=-1)


def test_bad_mask_shape_raises():
    with pytest.raises(ValueError, match="argument `mask`"):
        _make()(_ids(), mask=np.ones((BATCH, 4), bool))
