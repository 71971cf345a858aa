"""`keras_selfattn.distribution.layout_map` against our layers' real paths.

Runs on any backend (a one-device mesh): every attention and feed-forward
kernel of every block gets its Megatron layout, and nothing else matches.
Training under `ModelParallel` is in `test_jax_distribution.py`.
"""

import keras
import pytest

import keras_selfattn
from keras_selfattn import distribution

# The expected layout of each sharded weight, by the end of its path.
EXPECTED = {
    "query/kernel": (None, "model", None),
    "key/kernel": (None, "model", None),
    "value/kernel": (None, "model", None),
    "query/bias": ("model", None),
    "key/bias": ("model", None),
    "value/bias": ("model", None),
    "output/kernel": ("model", None, None),
    "feedforward_intermediate_dense/kernel": (None, "model"),
    "feedforward_intermediate_dense/bias": ("model",),
    "feedforward_gate_dense/kernel": (None, "model"),
    "feedforward_gate_dense/bias": ("model",),
    "feedforward_output_dense/kernel": ("model", None),
    "token_embedding/embeddings": ("model", None),
}


def _mesh():
    return keras.distribution.DeviceMesh(
        (1, 1), ["batch", "model"], keras.distribution.list_devices()[:1]
    )


def _every_layer_model():
    ids = keras.Input((5,), dtype="int32")
    source = keras.Input((7, 12))
    x = keras_selfattn.TokenAndPositionEmbedding(
        20, max_length=5, embed_dim=12
    )(ids)
    x = keras_selfattn.MultiHeadSelfAttention(num_heads=3)(x)
    x = keras_selfattn.TransformerBlock(
        num_heads=3, ff_dim=11, gated_feedforward=True
    )(x)
    x = keras_selfattn.TransformerDecoderBlock(
        num_heads=3, ff_dim=11, num_key_value_heads=1
    )(x, source)
    return keras.Model([ids, source], x)


def test_every_attention_and_feedforward_weight_is_mapped():
    layouts = distribution.layout_map(_mesh())
    model = _every_layer_model()
    found = {}
    for variable in model.variables:
        layout = layouts[variable.path]  # raises if two keys match
        ends = [e for e in EXPECTED if variable.path.endswith("/" + e)]
        if ends:
            assert layout is not None, variable.path
            assert layout.axes == EXPECTED[ends[0]], variable.path
            assert len(layout.axes) == len(variable.shape), variable.path
            found.setdefault(ends[0], []).append(variable.path)
        else:
            assert layout is None, variable.path
    assert set(found) == set(EXPECTED)
    # Standalone, self- and cross-attention: 4 q/k/v/output sets.
    assert len(found["query/kernel"]) == 4
    assert any("cross_attention/key/kernel" in p for p in found["key/kernel"])


def test_model_dim_names_the_mesh_axis():
    mesh = keras.distribution.DeviceMesh(
        (1, 1), ["data", "tensor"], keras.distribution.list_devices()[:1]
    )
    layouts = distribution.layout_map(mesh, model_dim="tensor")
    layout = layouts["block/feedforward_output_dense/kernel"]
    assert layout.axes == ("tensor", None)
    assert layout.device_mesh is mesh


def test_invalid_device_mesh():
    with pytest.raises(TypeError, match="`device_mesh`"):
        distribution.layout_map(["cpu:0"])


def test_invalid_model_dim():
    with pytest.raises(ValueError, match="`model_dim`.*Received: model_dim"):
        distribution.layout_map(_mesh(), model_dim="tensor")
