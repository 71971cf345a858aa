"""`model.quantize(mode)` reaches every projection of our layers; quantized
models save, reload and export with identical outputs.

Keras quantizes the leaf layers (`Dense`, `EinsumDense`, `Embedding`). Our
attention projections are `EinsumDense` sub-layers, so every weight matrix of
a model built from our layers is quantized; the layers record their
sub-layers' quantized policies in their configs (relative paths), so a
`.keras` file rebuilds them quantized, in functional and Sequential models.
"""

import contextlib
import warnings

import keras
import numpy as np
import pytest

from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn import SequencePooling
from keras_selfattn import TokenAndPositionEmbedding
from keras_selfattn import TransformerBlock
from keras_selfattn import TransformerDecoderBlock
from tests import harness

VOCAB, WIDTH = 40, 16
# How far each mode may move the outputs of the model below (measured:
# int8 2e-2, int4 0.5, float8 0.14 at these random weights).
TOLERANCE = {"int8": 0.1, "int4": 1.5, "float8": 0.5}
_PROJECTIONS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Embedding,
)


@contextlib.contextmanager
def _quantize_warnings():
    with warnings.catch_warnings():
        # Keras' `Model.quantize` warns for each leaf it cannot quantize
        # (InputLayer, Dropout, norms): expected, not a dropped weight.
        warnings.filterwarnings(
            "ignore", "Layer .* does not have a `quantize` method"
        )
        # Keras' Embedding has no float8 mode: it warns and stays float.
        warnings.filterwarnings(
            "ignore", r"Invalid quantization mode. Expected one of \('int8'"
        )
        # Keras' quantizers hand TensorFlow tensors to NumPy 2.
        warnings.filterwarnings("ignore", "__array__ implementation")
        yield


def _ids():
    ids = np.random.default_rng(0).integers(1, VOCAB, (3, 7)).astype("int32")
    ids[0, 4:] = 0  # padding
    return ids


def _every_layer():
    """Every layer that has projections: embedding, post-norm block, causal
    pre-norm GQA block, decoder block (self- and cross-attention), additive
    self-attention, pooling and a head."""
    keras.utils.set_random_seed(1)
    ids = keras.Input((None,), dtype="int32")
    x = TokenAndPositionEmbedding(VOCAB, 16, WIDTH)(ids)
    x = TransformerBlock(4, 12)(x)
    x = TransformerBlock(
        4, 12, causal=True, norm_first=True, num_key_value_heads=2
    )(x)
    x = TransformerDecoderBlock(2, 12)(x, x)
    x = MultiHeadSelfAttention(2, score="additive")(x)
    outputs = keras.layers.Dense(3)(SequencePooling()(x))
    return keras.Model(ids, outputs)


def _weight_leaves(model):
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, _PROJECTIONS)
    ]


@pytest.mark.parametrize("mode", ["int8", "int4", "float8"])
def test_every_projection_quantizes_and_reloads_identically(mode, tmp_path):
    model = _every_layer()
    ids = _ids()
    expected = harness.to_numpy(model(ids))
    with _quantize_warnings():
        model.quantize(mode)
    leaves = _weight_leaves(model)
    # 5 attention layers x 4 projections, 3 blocks x 2 feed-forward, the
    # token embedding and the head.
    assert len(leaves) == 5 * 4 + 3 * 2 + 2
    assert [leaf.path for leaf in leaves if leaf.quantization_mode != mode] == (
        # Keras' float8 mode does not cover embeddings.
        [leaves[0].path] if mode == "float8" else []
    )
    quantized = harness.to_numpy(model(ids))
    assert 0 < np.max(np.abs(quantized - expected)) < TOLERANCE[mode]
    model.save(tmp_path / "functional.keras")
    reloaded = keras.saving.load_model(tmp_path / "functional.keras")
    np.testing.assert_array_equal(harness.to_numpy(reloaded(ids)), quantized)
    modes = [leaf.quantization_mode for leaf in _weight_leaves(reloaded)]
    assert modes == [leaf.quantization_mode for leaf in leaves]


def test_a_quantized_sequential_model_reloads_identically(tmp_path):
    # A Sequential model's layers reload under another name scope: the
    # configs' relative paths still find the quantized sub-layers.
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            TokenAndPositionEmbedding(VOCAB, 16, WIDTH),
            TransformerBlock(4, 12, causal=True),
            MultiHeadSelfAttention(2),
        ]
    )
    with _quantize_warnings():
        model.quantize("int8")
    ids = _ids()
    model.save(tmp_path / "sequential.keras")
    reloaded = keras.saving.load_model(tmp_path / "sequential.keras")
    np.testing.assert_array_equal(
        harness.to_numpy(reloaded(ids)), harness.to_numpy(model(ids))
    )


def test_layer_quantize_reaches_its_projections_once():
    x = np.random.default_rng(3).normal(size=(2, 5, WIDTH)).astype("float32")
    block = TransformerBlock(4, 12, causal=True)
    attention = MultiHeadSelfAttention(2)
    for layer in (block, attention):
        with pytest.raises(ValueError, match="is not built"):
            layer.quantize("int8")
        layer(x)
        with _quantize_warnings():
            layer.quantize("int8")
        projections = [
            sub
            for sub in layer._flatten_layers()
            if isinstance(sub, _PROJECTIONS)
        ]
        assert projections
        assert {sub.quantization_mode for sub in projections} == {"int8"}
        with pytest.raises(ValueError, match="already quantized"):
            layer.quantize("int8")
    assert len(_quantized(block)) == 6  # 4 attention + 2 feed-forward


def _quantized(layer):
    return [sub for sub in layer._flatten_layers() if sub.quantization_mode]


@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_quantized_cache_and_paths_agree_with_the_full_call(impl):
    # The cached decode and the chunked kernel run the quantized
    # projections too.
    x = np.random.default_rng(4).normal(size=(2, 6, WIDTH)).astype("float32")
    block = TransformerBlock(
        4,
        12,
        dropout=0.0,
        causal=True,
        num_key_value_heads=2,
        attention_impl=impl,
    )
    block(x)
    with _quantize_warnings():
        block.quantize("int8")
    full = harness.to_numpy(block(x))
    cache = block.init_cache(2, 6)
    steps = []
    for i in range(6):
        step, cache = block(x[:, i : i + 1], cache=cache, cache_update_index=i)
        steps.append(harness.to_numpy(step))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


def test_lora_trains_over_int8_projections_and_reloads(tmp_path):
    # QLoRA: frozen int8 projections, float adapters.
    keras.utils.set_random_seed(5)
    inputs = keras.Input((None, WIDTH))
    block = TransformerBlock(4, 12)
    model = keras.Model(inputs, SequencePooling()(block(inputs)))
    with _quantize_warnings():
        model.quantize("int8")
    block.enable_lora(2)
    assert {id(w) for w in model.trainable_weights} == {
        id(w) for w in block._self_attention.lora_weights
    }
    rng = np.random.default_rng(6)
    x = rng.normal(size=(8, 5, WIDTH)).astype("float32")
    y = rng.normal(size=(8, WIDTH)).astype("float32")
    before = harness.to_numpy(model(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = model.fit(x, y, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = harness.to_numpy(model(x))
    assert np.max(np.abs(after - before)) > 1e-3
    model.save(tmp_path / "qlora.keras")
    reloaded = keras.saving.load_model(tmp_path / "qlora.keras")
    np.testing.assert_allclose(harness.to_numpy(reloaded(x)), after, atol=1e-6)


def test_a_quantized_model_answers_through_the_c_api(tmp_path):
    from keras_selfattn.export import export_model
    from keras_selfattn.export import serve_with_c_api

    keras.utils.set_random_seed(7)
    inputs = keras.Input((None, 6), name="features")
    x = TransformerBlock(2, 8)(inputs)
    outputs = SequencePooling(name="pooled")(x)
    model = keras.Model(inputs, outputs)
    with _quantize_warnings():
        model.quantize("int8")
    x = np.random.default_rng(8).normal(size=(2, 3, 6)).astype("float32")
    expected = harness.to_numpy(model(x))
    path = export_model(model, str(tmp_path / "int8"))
    response = serve_with_c_api(path, {"instances": x.tolist()})
    np.testing.assert_allclose(
        np.asarray(response["predictions"]), expected, atol=1e-5
    )
