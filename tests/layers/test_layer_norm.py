"""Tests for the blocks' layer normalization (`layers/_layer_norm`): the
same outputs and gradients as `keras.layers.LayerNormalization`."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_selfattn import TransformerBlock
from keras_selfattn import TransformerDecoderBlock
from keras_selfattn.layers import _layer_norm
from tests import harness


def _pair(shape, seed, **kwargs):
    """Ours and Keras', same random weights."""
    ours = _layer_norm.LayerNormalization(**kwargs)
    stock = keras.layers.LayerNormalization(**kwargs)
    ours.build(shape)
    stock.build(shape)
    rng = np.random.default_rng(seed)
    for w in stock.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    ours.set_weights(stock.get_weights())
    return ours, stock


def _outputs_and_grads(layer, x, upstream):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        # float32 for the mixed-precision outputs, float64 for float64.
        dtype = "float64" if y.dtype == tf.float64 else "float32"
        loss = tf.reduce_sum(tf.cast(y, dtype) * tf.cast(upstream, dtype))
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return [harness.to_numpy(t) for t in (y, *grads)]


def _reference(x, gamma, beta, epsilon, upstream):
    """float64 outputs and gradients (x, gamma, beta), in numpy."""
    x = x.astype("float64")
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + epsilon)
    normalized = (x - mean) * rstd
    g = upstream * gamma
    d_x = rstd * (
        g
        - g.mean(-1, keepdims=True)
        - normalized * (g * normalized).mean(-1, keepdims=True)
    )
    axes = tuple(range(x.ndim - 1))
    return [
        normalized * gamma + beta,
        d_x,
        (upstream * normalized).sum(axes),
        upstream.sum(axes),
    ]


@settings(max_examples=20, deadline=None)
@given(
    shape=st.sampled_from([(3, 5, 8), (2, 1, 1), (4, 16), (1, 2, 3, 7)]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    epsilon=st.sampled_from([1e-6, 1e-3]),
    seed=st.integers(0, 2**16),
)
def test_property_as_accurate_as_keras(shape, scale, epsilon, seed):
    # Against a float64 reference: ours is within Keras' own float32 error
    # (tiny scales on an offset lose digits to cancellation in both).
    ours, stock = _pair(shape, seed, epsilon=epsilon)
    rng = np.random.default_rng(seed + 1)
    x = (rng.normal(size=shape) * scale + rng.normal()).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    gamma, beta = (np.asarray(w, "float64") for w in stock.get_weights())
    exact = _reference(x, gamma, beta, epsilon, upstream.astype("float64"))
    actual = _outputs_and_grads(ours, x, upstream)
    keras_ = _outputs_and_grads(stock, x, upstream)
    names = ["outputs", "inputs", "gamma", "beta"]
    for name, a, k, e in zip(names, actual, keras_, exact, strict=True):
        size = max(1.0, float(np.max(np.abs(e))))
        ours_error = float(np.max(np.abs(a - e))) / size
        keras_error = float(np.max(np.abs(k - e))) / size
        assert ours_error <= max(4 * keras_error, 1e-5), (
            name,
            ours_error,
            keras_error,
        )


def test_constant_rows_give_finite_gradients():
    # A zeroed (padded) position: zero variance.
    ours, stock = _pair((2, 3, 4), 0, epsilon=1e-6)
    x = np.zeros((2, 3, 4), "float32")
    upstream = np.ones((2, 3, 4), "float32")
    for a, e in zip(
        _outputs_and_grads(ours, x, upstream),
        _outputs_and_grads(stock, x, upstream),
        strict=True,
    ):
        assert np.all(np.isfinite(a))
        size = max(1.0, float(np.max(np.abs(e))))
        harness.assert_close(a / size, e / size, 1e-6, "zero rows")


def test_other_settings_fall_back_to_keras():
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    for kwargs in [{"axis": 1}, {"center": False}, {"scale": False}]:
        ours, stock = _pair(x.shape, 1, **kwargs)
        harness.assert_close(ours(x), stock(x), 1e-6, str(kwargs))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    ours, _ = _pair((2, 3, 8), 2, dtype=policy)
    stock = keras.layers.LayerNormalization(dtype=policy)
    stock.build((2, 3, 8))
    stock.set_weights(ours.get_weights())
    x = np.random.default_rng(3).normal(size=(2, 3, 8)).astype("float32")
    upstream = np.ones((2, 3, 8), "float32")
    actual = _outputs_and_grads(ours, x, upstream)
    expected = _outputs_and_grads(stock, x, upstream)
    assert str(ours(x).dtype) == str(stock(x).dtype)
    tol = 1e-2 if policy == "mixed_float16" else 5e-2
    for a, e in zip(actual, expected, strict=True):
        harness.assert_close(
            np.asarray(a, "float32"), np.asarray(e, "float32"), tol, policy
        )


@pytest.mark.parametrize("norm_first", [False, True])
def test_blocks_match_keras_layer_norm(monkeypatch, norm_first):
    # The same block with the stock normalization: same outputs and
    # gradients, and the same weight paths (checkpoints interchangeable).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    source = rng.normal(size=(2, 5, 8)).astype("float32")
    for cls, args in [
        (TransformerBlock, (x,)),
        (TransformerDecoderBlock, (x, source)),
    ]:
        ours = cls(2, 16, dropout=0.0, norm_first=norm_first, seed=1)
        ours(*args)
        with monkeypatch.context() as patch:
            patch.setattr(
                _layer_norm,
                "LayerNormalization",
                keras.layers.LayerNormalization,
            )
            stock = cls(2, 16, dropout=0.0, norm_first=norm_first, seed=1)
            stock(*args)
        assert type(stock._feedforward_norm) is keras.layers.LayerNormalization
        assert [w.path for w in ours.weights] == [
            w.path.replace(stock.name, ours.name) for w in stock.weights
        ]
        stock.set_weights(ours.get_weights())

        def run(layer, args=args):
            inputs = [tf.constant(a) for a in args]
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = layer(*inputs, training=True)
                loss = tf.reduce_sum(tf.sin(y))
            grads = tape.gradient(loss, [*inputs, *layer.trainable_weights])
            return [y, *grads]

        for a, e in zip(run(ours), run(stock), strict=True):
            harness.assert_close(a, e, 1e-4, cls.__name__)


def test_float64_computes_in_float64():
    # As Keras: a float64 policy normalizes in float64.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 16, 64))
    ours, stock = _pair(x.shape, 6, dtype="float64")
    gamma, beta = (np.asarray(w, "float64") for w in stock.get_weights())
    upstream = rng.normal(size=x.shape)
    exact = _reference(x, gamma, beta, 1e-3, upstream)
    actual = _outputs_and_grads(ours, x, upstream)
    assert ours(x).dtype == tf.float64
    for a, e in zip(actual, exact, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)
