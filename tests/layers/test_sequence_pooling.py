"""Tests for `SequencePooling`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_selfattn import SequencePooling
from tests import harness

MODES = ["mean", "max", "first", "last"]


def _inputs():
    return np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")


def _mask():
    return np.array(
        [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 1, 1]], dtype=bool
    )


def _spec(mode):
    return harness.LayerSpec(
        cls=SequencePooling,
        init_kwargs={"mode": mode},
        input_data=_inputs(),
        mask=_mask(),
        expected_num_trainable_weights=0,
    )


@pytest.mark.parametrize(
    "mode",
    # "mean" is the main spec on JAX and PyTorch; the others are variants.
    [pytest.param("mean", marks=pytest.mark.all_backends), *MODES[1:]],
)
@pytest.mark.parametrize("check", harness.check_params(variant=True))
def test_contract(mode, check):
    harness.CHECKS[check](_spec(mode))


def _expected(mode, x, mask):
    rows = []
    for b in range(x.shape[0]):
        valid = x[b][mask[b]]
        if len(valid) == 0:
            rows.append(np.zeros(x.shape[-1]))
        elif mode == "mean":
            rows.append(valid.mean(0))
        elif mode == "max":
            rows.append(valid.max(0))
        elif mode == "first":
            rows.append(valid[0])
        else:
            rows.append(valid[-1])
    return np.stack(rows)


@pytest.mark.parametrize("mode", MODES)
def test_values(mode):
    x, mask = _inputs(), _mask()
    out = SequencePooling(mode)(x, mask=mask)
    harness.assert_close(out, _expected(mode, x, mask), 1e-6, mode)
    # Without a mask, every position is valid.
    full = np.ones_like(mask)
    out = SequencePooling(mode)(x)
    harness.assert_close(out, _expected(mode, x, full), 1e-6, mode)


@pytest.mark.parametrize("mode", MODES)
def test_empty_row_gradients_finite(mode):
    x = tf.constant(_inputs())
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(SequencePooling(mode)(x, mask=_mask()))
    grad = harness.to_numpy(tape.gradient(loss, x))
    assert np.all(np.isfinite(grad))
    assert np.all(grad[1] == 0)


def test_keras_global_average_pooling_gives_nan_where_we_give_zeros():
    # The trap this layer exists for: an empty string through Keras' pooling.
    x, mask = _inputs(), _mask()
    theirs = keras.layers.GlobalAveragePooling1D()(x, mask=mask)
    assert np.isnan(harness.to_numpy(theirs)[1]).all()
    ours = SequencePooling("mean")(x, mask=mask)
    assert np.all(harness.to_numpy(ours)[1] == 0)


def test_mixed_float16_max_is_finite():
    x = _inputs().astype("float16")
    out = SequencePooling("max", dtype="mixed_float16")(x, mask=_mask())
    assert np.all(np.isfinite(harness.to_numpy(out)))


def test_invalid_mode():
    with pytest.raises(ValueError, match="argument `mode`"):
        SequencePooling("median")


def test_wrong_rank():
    with pytest.raises(ValueError, match="argument `inputs`"):
        SequencePooling()(np.zeros((2, 3), "float32"))


@pytest.mark.parametrize(
    "shape, match",
    [((5,), "rank-3"), ((5, 4, 3), "rank-3"), ((5, None), "feature")],
)
def test_bad_shape_raises_in_a_functional_model(shape, match):
    # Built at construction, so no `build` runs: Keras infers the output
    # shape with `compute_output_shape`, which must check the input too.
    layer = SequencePooling()
    assert layer.built
    with pytest.raises(ValueError, match=f"argument `inputs`.*{match}"):
        layer(keras.Input(shape))
