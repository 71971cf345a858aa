"""Raw strings in on device: `export_litert` on models with a
`WordPieceTokenizer`, run in the `ai-edge-litert` interpreter with
TF-Text's LiteRT kernels registered, against Keras."""

import importlib.util

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_selfattn as ksa
from keras_selfattn.export import export_litert
from keras_selfattn.models import TextClassifier
from keras_selfattn.models import build_text_classifier
from keras_selfattn.text import WordPieceTokenizer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ai_edge_litert") is None
    or importlib.util.find_spec("tensorflow_text") is None,
    reason="needs ai-edge-litert and tensorflow-text (the `test` extra)",
)

VOCAB = [
    "[PAD]", "[UNK]", "[START]", "[END]", "the", "The", "cat", "sat", "on",
    "mat", "##s", ".", ",", "caf", "##é", "日", "本", "a", "##b",
]  # fmt: skip

# Empty, cased, accented, CJK, punctuation, longer than any
# `sequence_length` below, unknown words, and invalid UTF-8 bytes.
TEXTS = np.array(
    [
        b"The cats sat on the mat.",
        b"",
        "café, 日本 the cat".encode(),
        b"the cat sat " * 30,
        "Straße ÉTÉ zzz ab".encode(),
        b"bad \xff\xfe bytes, the cat",
    ],
    dtype=object,
)

TOKENIZERS = {
    "unpadded": {},
    "start_end_truncated": {
        "sequence_length": 9,
        "add_start_token": True,
        "add_end_token": True,
    },
    "end_only": {"add_end_token": True},
    "start_only_truncated": {"sequence_length": 7, "add_start_token": True},
}


def _interpreter(path):
    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    from tensorflow_text.core.pybinds import tflite_registrar

    return InterpreterWithCustomOps(
        model_path=str(path),
        custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS,
    )


def _run(path, texts):
    interpreter = _interpreter(path)
    (output,) = interpreter.get_signature_runner()(text=texts).values()
    return output


def _custom_ops(path):
    details = _interpreter(path)._get_ops_details()
    # Builtins are named in capitals (`FULLY_CONNECTED`), custom and Flex
    # ops in camel case.
    names = {op["op_name"] for op in details}
    return sorted(name for name in names if not name.isupper())


@pytest.mark.parametrize("option", sorted(TOKENIZERS))
def test_ids_on_device_equal_keras(option, tmp_path):
    tokenizer = WordPieceTokenizer(
        VOCAB, lower_case=False, **TOKENIZERS[option]
    )
    inputs = keras.Input((), dtype="string", name="text")
    model = keras.Model(inputs, tokenizer(inputs))
    path = export_litert(model, tmp_path / "tokenizer.tflite")
    got = _run(path, TEXTS)
    expected = keras.ops.convert_to_numpy(tokenizer(TEXTS))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    # Only empty strings: a (2, specials) tensor, as in Keras (with no
    # start/end token, (2, 0), which the Python interpreter cannot read:
    # `ValueError: Invalid tensor size`).
    if tokenizer.add_start_token or tokenizer.add_end_token:
        empty = np.array([b"", b""], dtype=object)
        np.testing.assert_array_equal(
            _run(path, empty), keras.ops.convert_to_numpy(tokenizer(empty))
        )


def test_text_classifier_on_device_equals_keras(tmp_path):
    tokenizer = WordPieceTokenizer(
        VOCAB,
        sequence_length=12,
        lower_case=False,
        add_start_token=True,
        add_end_token=True,
    )
    classifier = build_text_classifier(
        len(VOCAB), 12, 3, embed_dim=8, num_heads=2, ff_dim=8, num_layers=2
    )
    model = TextClassifier(tokenizer, classifier)
    path = export_litert(model, tmp_path / "classifier.tflite")
    # Only TF-Text's two kernels besides the builtins: no Flex ops.
    assert _custom_ops(path) == [
        "FastWordpieceTokenizeWithOffsets",
        "RaggedTensorToTensor",
    ]
    got = _run(path, TEXTS)
    expected = keras.ops.convert_to_numpy(model(TEXTS))
    assert got.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_functional_model_on_string_input(tmp_path):
    inputs = keras.Input((), dtype="string", name="text")
    ids = WordPieceTokenizer(VOCAB, lower_case=False)(inputs)
    x = ksa.TokenAndPositionEmbedding(len(VOCAB), 128, 8)(ids)
    x = ksa.TransformerBlock(2, 8, seed=1)(x)
    x = ksa.SequencePooling("mean")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    path = export_litert(model, tmp_path / "model.tflite")
    # Each batch pads to its longest text: padding is masked on device.
    for texts in (TEXTS, TEXTS[:1], TEXTS[2:4]):
        got = _run(path, texts)
        expected = keras.ops.convert_to_numpy(model(texts))
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # The limitation docs/deployment.md states: only empty texts, no
    # start/end token and no `sequence_length` make a zero-length
    # sequence, which LiteRT's builtins refuse (Keras gives an output).
    with pytest.raises(RuntimeError, match="UNPACK"):
        _run(path, TEXTS[1:2])


@pytest.mark.parametrize(
    "options, op",
    [
        ({}, "lower_case=True.*CaseFoldUTF8"),
        (
            {"lower_case": False, "strip_accents": True},
            "strip_accents=True.*NormalizeUTF8",
        ),
    ],
)
def test_normalization_without_kernels_is_refused(options, op, tmp_path):
    inputs = keras.Input((), dtype="string")
    model = keras.Model(inputs, WordPieceTokenizer(VOCAB, **options)(inputs))
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=f"argument `model`.*{op}"):
        export_litert(model, path)
    assert not path.exists()


@keras.saving.register_keras_serializable(package="tests")
class _Strip(keras.layers.Layer):
    """A string op with no LiteRT kernel, before the tokenizer."""

    def call(self, inputs):
        return tf.strings.strip(inputs)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="string")


def test_other_tensorflow_ops_are_refused(tmp_path):
    # With custom ops allowed for the tokenizer, the converter would also
    # keep any TensorFlow op as a custom op the interpreter cannot run.
    inputs = keras.Input((), dtype="string")
    tokenizer = WordPieceTokenizer(VOCAB, lower_case=False)
    model = keras.Model(inputs, tokenizer(_Strip()(inputs)))
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match="argument `model`.*StringStrip"):
        export_litert(model, path)
    assert not path.exists()
