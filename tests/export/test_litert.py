"""LiteRT export (`keras_selfattn.export.export_litert`), checked in the
`ai-edge-litert` interpreter against the Keras model: builtin ops only, a
variable sequence length, padding masked, every attention option."""

import importlib.util
import os

import keras
import numpy as np
import pytest

import keras_selfattn as ksa
from keras_selfattn.export import export_litert
from keras_selfattn.layers import _kernels

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ai_edge_litert") is None,
    reason="needs the ai-edge-litert interpreter (the `test` extra)",
)

VOCAB, WIDTH = 50, 16


def _classifier(**block_options):
    inputs = keras.Input((None,), dtype="int32")
    x = ksa.TokenAndPositionEmbedding(VOCAB, 64, WIDTH)(inputs)
    x = ksa.TransformerBlock(4, 24, seed=1, **block_options)(x)
    x = ksa.TransformerBlock(4, 24, seed=2, **block_options)(x)
    x = ksa.SequencePooling("mean")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _ids(batch, length, seed=0):
    ids = np.random.default_rng(seed).integers(1, VOCAB, (batch, length))
    ids[0, length // 2 :] = 0  # padding: masked by the embedding
    return ids.astype("int32")


def _run(path, *inputs):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(path)
    signature = interpreter.get_signature_list()["serving_default"]
    runner = interpreter.get_signature_runner()
    feeds = dict(zip(signature["inputs"], inputs, strict=True))
    outputs = runner(**feeds)
    return [outputs[name] for name in signature["outputs"]]


def _size(path):
    return os.path.getsize(path)


OPTIONS = {
    "plain": {},
    "causal_gqa_rotary": {
        "causal": True,
        "num_key_value_heads": 2,
        "position_embedding": "rotary",
    },
    "alibi_window": {"position_embedding": "alibi", "window": 3},
    "relative_modern": {
        "position_embedding": "relative",
        "logit_soft_cap": 30.0,
        "qk_norm": True,
        "normalization": "rms",
        "gated_feedforward": True,
        "norm_first": True,
    },
    # The chunked kernel (a block loop) is traced dense for LiteRT.
    "chunked": {"attention_impl": "chunked", "attention_dropout": 0.0},
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_interpreter_equals_keras_at_any_length(option, tmp_path):
    model = _classifier(**OPTIONS[option])
    model(_ids(2, 5))
    path = export_litert(model, tmp_path / "model.tflite")
    assert _kernels._DENSE_ONLY[0] is False  # the override is scoped
    for batch, length in ((2, 5), (1, 23), (3, 40)):
        ids = _ids(batch, length, seed=length)
        (got,) = _run(path, ids)
        expected = keras.ops.convert_to_numpy(model(ids))
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)


def test_padding_is_masked_on_device(tmp_path):
    # Values behind the padding must not reach the valid outputs: the same
    # prompt padded with different lengths gives the same logits.
    model = _classifier(causal=True)
    model(_ids(1, 4))
    path = export_litert(model, tmp_path / "model.tflite")
    ids = np.array([[7, 8, 9, 0, 0, 0, 0, 0, 0, 0]], dtype="int32")
    (short,) = _run(path, ids[:, :3])
    (padded,) = _run(path, ids)
    np.testing.assert_allclose(padded, short, atol=1e-5)


def test_sequential_and_multi_input_models(tmp_path):
    sequential = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            ksa.TokenAndPositionEmbedding(VOCAB, 64, WIDTH),
            ksa.TransformerBlock(2, 24),
            ksa.SequencePooling("max"),
        ]
    )
    ids = _ids(2, 9)
    path = export_litert(sequential, tmp_path / "sequential.tflite")
    (got,) = _run(path, ids)
    np.testing.assert_allclose(
        got, keras.ops.convert_to_numpy(sequential(ids)), atol=2e-5
    )
    # A decoder block: target ids and encoder states in, two inputs.
    target = keras.Input((None,), dtype="int32", name="target")
    source = keras.Input((None, WIDTH), name="source")
    y = ksa.TokenAndPositionEmbedding(VOCAB, 64, WIDTH)(target)
    y = ksa.TransformerDecoderBlock(2, 24)(y, source)
    decoder = keras.Model([target, source], y)
    states = np.random.default_rng(3).normal(size=(2, 6, WIDTH))
    states = states.astype("float32")
    path = export_litert(decoder, tmp_path / "decoder.tflite")
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(path).get_signature_list()["serving_default"]
    feeds = {
        name: ids if "target" in name else states
        for name in signature["inputs"]
    }
    (got,) = _run(path, *(feeds[name] for name in signature["inputs"]))
    expected = keras.ops.convert_to_numpy(decoder([ids, states]))
    valid = (ids != 0)[..., None]
    np.testing.assert_allclose(
        np.where(valid, got, 0), np.where(valid, expected, 0), atol=2e-5
    )


def test_dynamic_range_quantization_shrinks_and_stays_close(tmp_path):
    inputs = keras.Input((None,), dtype="int32")
    x = ksa.TokenAndPositionEmbedding(1000, 64, 64)(inputs)
    x = ksa.TransformerBlock(4, 128, seed=1)(x)
    x = ksa.SequencePooling("mean")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    ids = np.random.default_rng(0).integers(1, 1000, (4, 12))
    ids = ids.astype("int32")
    expected = keras.ops.convert_to_numpy(model(ids))
    float_path = export_litert(model, tmp_path / "float.tflite")
    int8_path = export_litert(
        model, tmp_path / "int8.tflite", quantization="dynamic_range"
    )
    # int8 weight matrices: well under half the float file.
    assert _size(int8_path) < 0.4 * _size(float_path)
    (got,) = _run(int8_path, ids)
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(got - expected)) < 0.05 * scale
    # ... and it is really quantized (not the float model again).
    assert np.max(np.abs(got - expected)) > 1e-6


def test_errors_name_the_argument(tmp_path):
    unbuilt = keras.Sequential([ksa.TransformerBlock(2, 24)])
    with pytest.raises(ValueError, match="argument `model`.*built"):
        export_litert(unbuilt, tmp_path / "m.tflite")
    model = _classifier()
    with pytest.raises(ValueError, match="argument `filepath`.*tflite"):
        export_litert(model, tmp_path / "m.keras")
    with pytest.raises(ValueError, match="argument `quantization`"):
        export_litert(model, tmp_path / "m.tflite", quantization="int8")


class _DecodeStep(keras.layers.Layer):
    """Token ids and a causal block's cache in; next-token logits and
    the new cache out: one on-device decoding step."""

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(VOCAB, WIDTH)
        self.block = block
        self.head = keras.layers.Dense(VOCAB)

    def call(self, ids, key, value, key_mask, index):
        cache = {"key": key, "value": value, "key_mask": key_mask}
        y, cache = self.block(
            self.embedding(ids), cache=cache, cache_update_index=index[0]
        )
        return self.head(y), cache["key"], cache["value"], cache["key_mask"]

    def full(self, ids):
        return self.head(self.block(self.embedding(ids)))


def test_cached_decoding_runs_on_device(tmp_path):
    # A prompt at once, then one token per call, each call feeding back the
    # cache the previous one returned: equal to Keras' full causal call.
    block = ksa.TransformerBlock(
        4,
        24,
        causal=True,
        position_embedding="rotary",
        num_key_value_heads=2,
    )
    step = _DecodeStep(block)
    tokens = np.array([[5, 9, 11, 4, 8, 2], [7, 3, 1, 9, 9, 6]], "int32")
    expected = keras.ops.convert_to_numpy(step.full(tokens))
    batch, max_length = tokens.shape[0], 10
    empty = {k: np.asarray(v) for k, v in block.init_cache(2, 10).items()}
    inputs = [
        keras.Input((None,), batch_size=batch, dtype="int32", name="ids"),
        keras.Input(empty["key"].shape[1:], batch_size=batch, name="key"),
        keras.Input(empty["value"].shape[1:], batch_size=batch, name="value"),
        keras.Input(
            (max_length,), batch_size=batch, dtype="bool", name="key_mask"
        ),
        keras.Input((), batch_size=1, dtype="int32", name="index"),
    ]
    model = keras.Model(inputs, list(step(*inputs)))
    path = export_litert(model, tmp_path / "step.tflite")
    cache = (empty["key"], empty["value"], empty["key_mask"])
    logits = []
    for start, stop in ((0, 3), (3, 4), (4, 5), (5, 6)):
        out = _run_named(
            path,
            ids=tokens[:, start:stop],
            key=cache[0],
            value=cache[1],
            key_mask=cache[2],
            index=np.array([start], "int32"),
        )
        logits.append(out[0])
        cache = tuple(out[1:])
    np.testing.assert_allclose(
        np.concatenate(logits, axis=1), expected, atol=2e-5
    )


def _run_named(path, **feeds):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(path)
    signature = interpreter.get_signature_list()["serving_default"]
    outputs = interpreter.get_signature_runner()(**feeds)
    return [outputs[name] for name in signature["outputs"]]
