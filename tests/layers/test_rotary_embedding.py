"""`RotaryEmbedding`: the rotation against a NumPy reference, its axes and
positions, and the shared layer contract."""

import numpy as np
import pytest

from keras_selfattn import RotaryEmbedding
from tests import harness
from tests.layers.test_positions import rotary_reference


def test_rotary_embedding_layer_axes_start_index_and_positions():
    x = np.random.default_rng(2).normal(size=(2, 5, 3, 6)).astype("float32")
    layer = RotaryEmbedding(max_wavelength=100.0)
    # (B, T, N, H): positions on axis 1.
    expected = rotary_reference(
        np.transpose(x, (0, 2, 1, 3)), np.arange(5)[None] + 4, 100.0
    )
    np.testing.assert_allclose(
        np.transpose(harness.to_numpy(layer(x, start_index=4)), (0, 2, 1, 3)),
        expected,
        atol=1e-5,
    )
    explicit = layer(x, positions=np.arange(4, 9))
    np.testing.assert_allclose(
        harness.to_numpy(explicit), harness.to_numpy(layer(x, start_index=4))
    )
    per_row = layer(x, positions=np.array([np.arange(5), np.arange(5) + 4]))
    np.testing.assert_allclose(
        harness.to_numpy(per_row)[1],
        harness.to_numpy(layer(x, start_index=4))[1],
        atol=1e-6,
    )
    again = RotaryEmbedding.from_config(layer.get_config())
    assert again.max_wavelength == 100.0
    with pytest.raises(ValueError, match="argument `max_wavelength`"):
        RotaryEmbedding(max_wavelength=0)
    with pytest.raises(ValueError, match="even size"):
        layer(np.zeros((1, 4, 5), "float32"))


@pytest.mark.parametrize("check", harness.check_params())
def test_contract(check):
    x = np.random.default_rng(5).normal(size=(2, 5, 8)).astype("float32")
    spec = harness.LayerSpec(
        cls=RotaryEmbedding,
        init_kwargs={"max_wavelength": 1000.0},
        input_data=x,
        mask=np.array([[1, 1, 1, 0, 0], [0] * 5], dtype=bool),
        expected_num_trainable_weights=0,
        # A rotation per position: padded positions keep their values.
        zeros_at_padding=False,
    )
    harness.CHECKS[check](spec)
