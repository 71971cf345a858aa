"""Tests for `MultiHeadSelfAttention`."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_selfattn import MultiHeadSelfAttention
from tests import harness
from tests import reference

# Every axis a different size: batch 2, length 5, width 12, 3 heads.
BATCH, LENGTH, WIDTH, HEADS = 2, 5, 12, 3


def _inputs(seed=0, shape=(BATCH, LENGTH, WIDTH)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _mask():
    # Row 0 partly padded, row 1 fully padded (an empty string).
    return np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)


def _spec(**kwargs):
    init = {"num_heads": HEADS, **kwargs}
    return harness.LayerSpec(
        cls=MultiHeadSelfAttention,
        init_kwargs=init,
        input_data=_inputs(),
        mask=_mask(),
        expected_num_trainable_weights=8
        + (1 if init.get("score") == "additive" else 0),
    )


@pytest.mark.parametrize("check", harness.check_params())
def test_contract(check):
    harness.CHECKS[check](_spec(dropout=0.1, seed=3))


@pytest.mark.parametrize(
    "check",
    harness.check_params(["config", "train", "masking", "xla"], variant=True),
)
def test_contract_additive_causal_window(check):
    harness.CHECKS[check](_spec(score="additive", causal=True, window=2))


def _weights(layer):
    return {harness.weight_name(w): harness.to_numpy(w) for w in layer.weights}


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"causal": True},
        {"window": 1},
        {"causal": True, "window": 2},
        {"score": "additive"},
        {"key_dim": 7, "value_dim": 6, "output_dim": 9},
        {"use_bias": False},
    ],
)
def test_matches_numpy_reference(kwargs):
    layer = MultiHeadSelfAttention(HEADS, **kwargs)
    x = _inputs()
    layer(x)
    _randomize(layer)
    mask = np.array([[1, 1, 1, 1, 0], [1, 0, 1, 1, 1]], dtype=bool)
    out, probs = layer(x, mask=mask, return_attention_scores=True)
    expected, expected_probs = reference.attention(
        x,
        x,
        _weights(layer),
        HEADS,
        query_mask=mask,
        key_mask=mask,
        causal=kwargs.get("causal", False),
        window=kwargs.get("window"),
        score=kwargs.get("score", "dot_product"),
    )
    harness.assert_close(out, expected, 1e-4, "outputs")
    harness.assert_close(probs, expected_probs, 1e-5, "probs")


def _copy_to_keras_mha(layer, mha):
    mha._query_dense.kernel.assign(layer.query_kernel)
    mha._query_dense.bias.assign(layer.query_bias)
    mha._key_dense.kernel.assign(layer.key_kernel)
    mha._key_dense.bias.assign(layer.key_bias)
    mha._value_dense.kernel.assign(layer.value_kernel)
    mha._value_dense.bias.assign(layer.value_bias)
    mha._output_dense.kernel.assign(layer.output_kernel)
    mha._output_dense.bias.assign(layer.output_bias)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ({}, {}),
        ({"causal": True}, {}),
        ({"window": 2}, {"sliding_window": 3}),
        ({"key_dim": 5, "value_dim": 3}, {"value_dim": 3}),
    ],
)
def test_matches_keras_multi_head_attention(ours, theirs):
    layer = MultiHeadSelfAttention(HEADS, **ours)
    x = _inputs(shape=(BATCH, 7, WIDTH))
    layer(x)
    _randomize(layer)
    key_dim = ours.get("key_dim", WIDTH // HEADS)
    mha = keras.layers.MultiHeadAttention(HEADS, key_dim, **theirs)
    mha(x, x)
    _copy_to_keras_mha(layer, mha)
    # Every row keeps at least one valid key: compare where Keras' fused and
    # einsum paths agree by design.
    mask = np.array([[1] * 5 + [0, 0], [1] * 7], dtype=bool)
    causal = ours.get("causal", False)
    expected = mha(
        x, x, query_mask=mask, value_mask=mask, use_causal_mask=causal
    )
    actual = layer(x, mask=mask)
    harness.assert_close(
        harness.to_numpy(actual)[mask],
        harness.to_numpy(expected)[mask],
        1e-5,
        "vs keras.layers.MultiHeadAttention",
    )


def test_window_boundary():
    layer = MultiHeadSelfAttention(1, window=2)
    x = _inputs(shape=(1, 6, 4))
    _, probs = layer(x, return_attention_scores=True)
    probs = harness.to_numpy(probs)[0, 0]
    for i in range(6):
        for j in range(6):
            inside = abs(i - j) <= 2
            assert (probs[i, j] > 0) == inside, (i, j)


def test_explicit_attention_mask_with_padding_mask():
    layer = MultiHeadSelfAttention(HEADS)
    x = _inputs()
    attention = np.ones((BATCH, LENGTH, LENGTH), dtype=bool)
    attention[:, :, 1] = False  # nobody may look at token 1
    padding = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=bool)
    keras_masked = tf.convert_to_tensor(x)
    keras_masked._keras_mask = tf.constant(padding)
    # With two tensor arguments Keras leaves `mask=None`: the layer must
    # still pick the padding mask up from the input.
    _, probs = layer(
        keras_masked, attention_mask=attention, return_attention_scores=True
    )
    probs = harness.to_numpy(probs)
    assert np.all(probs[:, :, :, 1] == 0.0)
    assert np.all(probs[0, :, :, 4] == 0.0)
    assert np.all(probs[0, :, 4, :] == 0.0)
    np.testing.assert_allclose(probs[1].sum(-1), 1.0, rtol=1e-6)


def test_causal_future_does_not_change_past():
    layer = MultiHeadSelfAttention(HEADS, causal=True)
    x = _inputs()
    changed = x.copy()
    changed[:, 3:] += 5.0
    a, b = harness.to_numpy(layer(x)), harness.to_numpy(layer(changed))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not np.allclose(a[:, 3:], b[:, 3:])


def test_float16_fully_masked_row_is_finite():
    layer = MultiHeadSelfAttention(HEADS, dtype="float16")
    x = _inputs().astype("float16") * 100
    y = layer(x, mask=_mask())
    assert y.dtype == "float16"
    y = harness.to_numpy(y)
    assert np.all(np.isfinite(y))
    assert np.all(y[1] == 0)


def test_dropout_is_reproducible_with_seed():
    x = _inputs()
    a = MultiHeadSelfAttention(HEADS, dropout=0.5, seed=7)
    b = MultiHeadSelfAttention(HEADS, dropout=0.5, seed=7)
    a(x)
    b(x)
    b.set_weights(a.get_weights())
    ya = harness.to_numpy(a(x, training=True))
    yb = harness.to_numpy(b(x, training=True))
    np.testing.assert_allclose(ya, yb)
    assert not np.allclose(ya, harness.to_numpy(a(x, training=False)))


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"num_heads": 2.5}, "num_heads"),
        ({"num_heads": 2, "key_dim": 0}, "key_dim"),
        ({"num_heads": 2, "value_dim": -1}, "value_dim"),
        ({"num_heads": 2, "output_dim": 0}, "output_dim"),
        ({"num_heads": 2, "dropout": 1.0}, "dropout"),
        ({"num_heads": 2, "dropout": -0.1}, "dropout"),
        ({"num_heads": 2, "window": 0}, "window"),
        ({"num_heads": 2, "score": "cosine"}, "score"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        MultiHeadSelfAttention(**kwargs)


def test_invalid_types():
    with pytest.raises(TypeError, match="argument `causal`"):
        MultiHeadSelfAttention(2, causal="yes")


def test_indivisible_width_raises():
    with pytest.raises(ValueError, match="argument `num_heads`.*divisor"):
        MultiHeadSelfAttention(5)(_inputs())
    # With an explicit key_dim any width works.
    assert MultiHeadSelfAttention(5, key_dim=4)(_inputs()).shape[-1] == WIDTH


@pytest.mark.parametrize(
    "shape", [(BATCH, WIDTH), (BATCH, LENGTH, 2, WIDTH)], ids=["rank2", "rank4"]
)
def test_wrong_rank_raises(shape):
    with pytest.raises(ValueError, match="argument `inputs`.*rank-3"):
        MultiHeadSelfAttention(HEADS)(np.zeros(shape, "float32"))


def test_unknown_feature_dim_raises():
    with pytest.raises(ValueError, match="argument `inputs`.*last"):
        MultiHeadSelfAttention(HEADS).build((None, None, None))


def test_bad_mask_shapes_raise():
    layer = MultiHeadSelfAttention(HEADS)
    x = _inputs()
    with pytest.raises(ValueError, match="argument `mask`"):
        layer(x, mask=np.ones((BATCH, LENGTH + 1), bool))
    with pytest.raises(ValueError, match="argument `attention_mask`"):
        layer(x, attention_mask=np.ones((BATCH, LENGTH, LENGTH + 2), bool))
    with pytest.raises(ValueError, match="argument `attention_mask`"):
        layer(x, attention_mask=np.ones((LENGTH, LENGTH), bool))


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 7),
    heads=st.integers(1, 3),
    causal=st.booleans(),
    window=st.one_of(st.none(), st.integers(1, 4)),
    seed=st.integers(0, 2**16),
)
def test_property_masking_causal_window(
    batch, length, heads, causal, window, seed
):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, 2 * heads)).astype("float32")
    mask = rng.random((batch, length)) < 0.6
    layer = MultiHeadSelfAttention(heads, causal=causal, window=window)
    out, probs = layer(x, mask=mask, return_attention_scores=True)
    out, probs = harness.to_numpy(out), harness.to_numpy(probs)
    # 1. Padding values never matter; padded positions are zero.
    noisy = x.copy()
    noisy[~mask] = rng.normal(size=noisy[~mask].shape) * 100
    out2 = harness.to_numpy(layer(noisy, mask=mask))
    np.testing.assert_allclose(out2[mask], out[mask], atol=1e-5)
    assert np.all(out[~mask] == 0)
    # 2. Attention weight only where allowed; rows sum to 1 or 0.
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                ok = mask[b, i] and mask[b, j]
                ok = ok and reference.allowed(i, j, causal, window)
                if not ok:
                    assert np.all(probs[b, :, i, j] == 0.0)
            total = probs[b, :, i, :].sum(-1)
            assert np.allclose(total, 1.0, atol=1e-5) or np.all(total == 0)
    # 3. Causal: a change at position t never changes outputs before t.
    if causal and length > 1:
        t = int(rng.integers(1, length))
        later = x.copy()
        later[:, t:] += 3.0
        out3 = harness.to_numpy(layer(later, mask=mask))
        np.testing.assert_allclose(out3[:, :t], out[:, :t], atol=1e-5)


def test_symbolic_call_returns_scores():
    inputs = keras.Input((None, WIDTH))
    layer = MultiHeadSelfAttention(HEADS)
    outputs, scores = layer(inputs, return_attention_scores=True)
    assert tuple(outputs.shape) == (None, None, WIDTH)
    assert tuple(scores.shape) == (None, HEADS, None, None)
    model = keras.Model(inputs, [outputs, scores])
    y, s = model(_inputs())
    assert tuple(s.shape) == (BATCH, HEADS, LENGTH, LENGTH)
    harness.assert_close(y, layer(_inputs()), 1e-6, "functional vs eager")


def test_seeded_initializer_gives_distinct_kernels():
    layer = MultiHeadSelfAttention(
        HEADS, kernel_initializer=keras.initializers.GlorotUniform(seed=1)
    )
    layer(_inputs())
    q, k = (
        harness.to_numpy(layer.query_kernel),
        harness.to_numpy(layer.key_kernel),
    )
    assert not np.array_equal(q, k)
    again = MultiHeadSelfAttention(
        HEADS, kernel_initializer=keras.initializers.GlorotUniform(seed=1)
    )
    again(_inputs())
    np.testing.assert_array_equal(harness.to_numpy(again.query_kernel), q)


def test_masks_as_python_lists_and_bad_seed():
    layer = MultiHeadSelfAttention(HEADS)
    x = _inputs()
    mask = _mask()
    expected = harness.to_numpy(layer(x, mask=mask))
    harness.assert_close(layer(x, mask=mask.tolist()), expected, 1e-6, "list")
    with pytest.raises(ValueError, match="argument `seed`"):
        MultiHeadSelfAttention(HEADS, seed=-1)
