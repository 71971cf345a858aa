"""Tests for `SentencePieceTokenizer` and `learn_sentencepiece_model`."""

import io
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops for SavedModel loads

from keras_selfattn import SequencePooling
from keras_selfattn.export import export_classifier
from keras_selfattn.export import export_litert
from keras_selfattn.export import export_text_generator
from keras_selfattn.export import serve_with_c_api
from keras_selfattn.models import Seq2SeqTransformer
from keras_selfattn.models import TextClassifier
from keras_selfattn.models import TextGenerator
from keras_selfattn.models import build_text_classifier
from keras_selfattn.text import SentencePieceTokenizer
from keras_selfattn.text import learn_sentencepiece_model

sentencepiece = pytest.importorskip(
    "sentencepiece", reason="the trainer needs sentencepiece (`test` extra)"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A stitch in time saves nine!",
    "Where is the station? I can't find it.",
    "¿Dónde está la estación de tren?",
    "El niño comió una manzana roja.",
    "Ça va très bien, merci.",
    "東京は日本の首都です。",
    "I love this movie 😀 so much",
] * 12

# Leading, trailing and repeated spaces, tabs and newlines, case, CJK,
# emoji, characters the corpus never shows (Greek), the empty string.
TEXTS = [
    "The quick brown fox.",
    "  two leading spaces, two trailing  ",
    "tab\tand\nnew line\r\n",
    "MiXeD CaSe  ¿Dónde?",
    "東京 😀 ξψω",
    "",
]


@pytest.fixture(scope="module")
def proto():
    return learn_sentencepiece_model(CORPUS, vocabulary_size=400)


def test_reserved_ids_and_vocabulary(proto):
    tokenizer = SentencePieceTokenizer(proto)
    vocabulary = tokenizer.vocabulary
    assert vocabulary[:4] == ["[PAD]", "[UNK]", "[START]", "[END]"]
    assert (tokenizer.pad_id, tokenizer.unk_id) == (0, 1)
    assert (tokenizer.start_id, tokenizer.end_id) == (2, 3)
    # Byte fallback: the 256 byte pieces follow, then the learned ones.
    assert vocabulary[4] == "<0x00>" and vocabulary[259] == "<0xFF>"
    assert 300 < tokenizer.vocabulary_size == len(vocabulary) <= 400
    assert len(set(vocabulary)) == len(vocabulary)


def test_learning_is_deterministic_for_every_source(proto, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    sources = [
        tf.data.Dataset.from_tensor_slices(CORPUS),
        tf.data.Dataset.from_tensor_slices(CORPUS).batch(5),
        iter([s.encode() for s in CORPUS]),
        str(path),
    ]
    for data in sources:
        assert learn_sentencepiece_model(data, vocabulary_size=400) == proto


def test_exact_round_trip(proto):
    tokenizer = SentencePieceTokenizer(proto)
    ids = tokenizer(TEXTS)
    assert ids.dtype == tf.int32
    assert not np.any(ids.numpy() == tokenizer.unk_id), "byte fallback"
    back = [s.decode() for s in tokenizer.detokenize(ids).numpy()]
    assert back == TEXTS


def test_prompt_and_continuation_ids_detokenize_to_both(proto):
    # A generator appends ids to a prompt's: the text must read as the
    # prompt followed by the continuation, with nothing added in between.
    tokenizer = SentencePieceTokenizer(proto)
    prompt, continuation = "Where is the", " station? I can't"
    ids = tf.concat(
        [tokenizer([prompt]), tokenizer([continuation])], axis=1
    )  # (1, L1 + L2), no padding in either row
    assert tokenizer.detokenize(ids).numpy()[0].decode() == (
        prompt + continuation
    )


def test_start_end_tokens_and_empty_strings(proto):
    tokenizer = SentencePieceTokenizer(
        proto, sequence_length=8, add_start_token=True, add_end_token=True
    )
    ids = tokenizer(["", "the fox"]).numpy()
    assert ids[0].tolist() == [2, 3, 0, 0, 0, 0, 0, 0]
    assert ids[1][0] == 2 and ids[1].tolist().count(3) == 1
    assert tokenizer.detokenize(ids).numpy().tolist() == [b"", b"the fox"]
    # Ids after the first end token are dropped.
    tail = np.concatenate([ids[1:], ids[1:]], axis=1)
    assert tokenizer.detokenize(tail).numpy().tolist() == [b"the fox"]


def test_long_inputs_truncate_keeping_end_token(proto):
    tokenizer = SentencePieceTokenizer(
        proto, sequence_length=6, add_start_token=True, add_end_token=True
    )
    text = "The quick brown fox jumps over the lazy dog."
    ids = tokenizer([text]).numpy()
    assert ids.shape == (1, 6)
    assert ids[0, 0] == 2 and ids[0, -1] == 3 and 0 not in ids
    back = tokenizer.detokenize(ids).numpy()[0].decode()
    assert back and text.startswith(back) and back != text
    unlimited = SentencePieceTokenizer(proto)([text]).numpy()[0]
    np.testing.assert_array_equal(ids[0, 1:-1], unlimited[:4])


def test_no_sequence_length_pads_to_longest(proto):
    tokenizer = SentencePieceTokenizer(proto)
    texts = ["fox", "The quick brown fox"]
    ids = tokenizer(texts).numpy()
    short, longest = tokenizer.tokenize_ragged(texts).row_lengths().numpy()
    assert ids.shape == (2, longest) and short < longest
    assert ids[0, short:].tolist() == [0] * (longest - short)
    assert 0 not in ids[0, :short] and 0 not in ids[1]


def test_invalid_utf8_becomes_replacement_character(proto):
    tokenizer = SentencePieceTokenizer(proto, sequence_length=16)
    ids = tokenizer(tf.constant([b"bad \xff\xfe bytes"]))
    back = tokenizer.detokenize(ids).numpy()[0].decode()
    assert back.startswith("bad \ufffd") and back.endswith(" bytes")


def test_inputs_of_shape_batch_by_one(proto):
    tokenizer = SentencePieceTokenizer(proto, sequence_length=4)
    a = tokenizer(tf.constant([["the fox"], ["a dog"]]))
    b = tokenizer(tf.constant(["the fox", "a dog"]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="argument `inputs`"):
        tokenizer(tf.constant("the fox"))


def test_inside_tf_function(proto):
    tokenizer = SentencePieceTokenizer(proto, add_end_token=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(strings):
        ids = tokenizer(strings)
        return ids, tokenizer.detokenize(ids)

    ids, back = round_trip(tf.constant(TEXTS))
    np.testing.assert_array_equal(ids.numpy(), tokenizer(TEXTS).numpy())
    assert [s.decode() for s in back.numpy()] == TEXTS


def test_id_to_token(proto):
    tokenizer = SentencePieceTokenizer(proto)
    ids = tokenizer(["The fox"])[0]
    pieces = [p.decode() for p in tokenizer.id_to_token(ids).numpy()]
    assert "".join(pieces).replace("▁", " ") == "The fox"


def test_normalization_lives_in_the_model():
    proto = learn_sentencepiece_model(
        [s.lower() for s in CORPUS], 400, normalization="nmt_nfkc_cf"
    )
    tokenizer = SentencePieceTokenizer(proto)
    back = tokenizer.detokenize(tokenizer(["ＴＨＥ Quick"])).numpy()[0]
    assert back.decode() == "the quick"


def test_a_model_with_other_special_ids():
    # A T5-like model: padding 0, end 1, unknown 2, no start token.
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=100,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    tokenizer = SentencePieceTokenizer(model.getvalue(), add_end_token=True)
    assert (tokenizer.end_id, tokenizer.unk_id, tokenizer.start_id) == (
        1,
        2,
        -1,
    )
    ids = tokenizer(["the fox"]).numpy()[0]
    assert ids[-1] == 1
    with pytest.raises(ValueError, match="argument `add_start_token`"):
        SentencePieceTokenizer(model.getvalue(), add_start_token=True)


def test_padding_must_be_id_zero():
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=100,
        hard_vocab_limit=False,
        minloglevel=2,
    )  # sentencepiece's defaults: unknown 0, no padding
    with pytest.raises(ValueError, match="argument `proto`.*pad_id=0"):
        SentencePieceTokenizer(model.getvalue())


def _model(proto):
    text = keras.Input((), dtype="string", name="text")
    tokenizer = SentencePieceTokenizer(proto, sequence_length=10)
    ids = tokenizer(text)
    x = keras.layers.Embedding(tokenizer.vocabulary_size, 8, mask_zero=True)(
        ids
    )
    x = SequencePooling("mean")(x)
    return keras.Model(text, keras.layers.Dense(2)(x))


def test_config_round_trip(proto):
    layer = SentencePieceTokenizer(
        proto, sequence_length=7, add_end_token=True, name="pieces"
    )
    config = json.loads(json.dumps(layer.get_config()))
    assert isinstance(config["proto"], str)
    again = SentencePieceTokenizer.from_config(config)
    assert again.get_config() == layer.get_config()
    assert again.proto == proto
    np.testing.assert_array_equal(
        again(["the fox"]).numpy(), layer(["the fox"]).numpy()
    )


def test_keras_save_load_with_model(proto, tmp_path):
    model = _model(proto)
    texts = tf.constant(["the fox", "", "¿dónde está?"])
    expected = model(texts).numpy()
    assert np.all(np.isfinite(expected))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(texts).numpy(), expected, atol=1e-6)


def test_saved_model_takes_raw_strings(proto, tmp_path):
    model = _model(proto)
    texts = tf.constant(["the fox", "", "a stitch in time"])
    expected = model(texts).numpy()
    path = str(tmp_path / "export")
    model.export(path, verbose=False)
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(reloaded.serve(texts).numpy(), expected, 1e-5)


def test_exported_classifier_serves_raw_strings_through_c_api(proto, tmp_path):
    keras.utils.set_random_seed(0)
    tokenizer = SentencePieceTokenizer(proto, sequence_length=12)
    classifier = build_text_classifier(
        tokenizer.vocabulary_size,
        12,
        2,
        embed_dim=8,
        num_heads=2,
        ff_dim=16,
        num_layers=1,
    )
    path = export_classifier(
        classifier, tokenizer, str(tmp_path), label_names=["no", "yes"]
    )
    texts = TEXTS + ["The quick brown fox " * 10]  # longer than 12 pieces
    expected = np.asarray(classifier(tokenizer(texts)))
    response = serve_with_c_api(path, {"instances": texts})
    assert response["python_modules"] == []
    probs = np.array([r["probabilities"] for r in response["predictions"]])
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_text_classifier_takes_it_and_reloads(proto, tmp_path):
    tokenizer = SentencePieceTokenizer(proto, sequence_length=12)
    classifier = build_text_classifier(
        tokenizer.vocabulary_size, 12, 2, embed_dim=8, num_heads=2, ff_dim=8
    )
    model = TextClassifier(tokenizer, classifier, ["no", "yes"])
    expected = np.asarray(model(TEXTS))
    np.testing.assert_allclose(
        expected, np.asarray(classifier(tokenizer(TEXTS))), atol=1e-6
    )
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.tokenizer, SentencePieceTokenizer)
    np.testing.assert_allclose(np.asarray(loaded(TEXTS)), expected, atol=1e-6)


# 17-30 s on 2 busy cores: tracing the decoding loop, then a C API process.
@pytest.mark.slow
def test_exported_text_generator_serves_exact_text_through_c_api(
    proto, tmp_path
):
    keras.utils.set_random_seed(1)
    source = SentencePieceTokenizer(proto, sequence_length=10)
    target = SentencePieceTokenizer(
        proto, sequence_length=9, add_start_token=True, add_end_token=True
    )
    size = source.vocabulary_size
    seq2seq = Seq2SeqTransformer(size, size, 10, 8, 16, 2, 32)
    generator = TextGenerator(source, target, seq2seq, tidy=False)
    texts = ["The quick brown fox", "", "東京 😀 ξψω " * 5]
    ids = generator.generate_ids(tf.constant(texts))  # (3, <= 8)
    # The strings are the target tokenizer's exact detokenization.
    expected = [t.decode() for t in target.detokenize(ids).numpy()]
    assert any(expected), "an untrained model still emits pieces"
    assert [t.decode() for t in generator(texts).numpy()] == expected
    path = export_text_generator(generator, str(tmp_path))
    response = serve_with_c_api(path, {"instances": texts})
    assert response["python_modules"] == []
    assert response["predictions"] == expected


def test_litert_export_is_refused_by_name(proto, tmp_path):
    text = keras.Input((), dtype="string")
    model = keras.Model(text, SentencePieceTokenizer(proto)(text))
    path = tmp_path / "model.tflite"
    with pytest.raises(
        ValueError, match="argument `model`.*SentencepieceTokenizeOp"
    ):
        export_litert(model, path)
    assert not path.exists()


def test_proto_from_file(proto, tmp_path):
    path = tmp_path / "pieces.model"
    path.write_bytes(proto)
    assert SentencePieceTokenizer(str(path)).proto == proto
    assert SentencePieceTokenizer(path).vocabulary_size > 300


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"proto": b"not a model"}, "proto"),
        ({"proto": b""}, "proto"),
        ({"sequence_length": 0}, "sequence_length"),
        (
            {
                "sequence_length": 2,
                "add_start_token": True,
                "add_end_token": True,
            },
            "sequence_length",
        ),
    ],
)
def test_invalid_arguments(proto, kwargs, argument):
    kwargs = {"proto": proto, **kwargs}
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        SentencePieceTokenizer(**kwargs)


def test_invalid_types(proto):
    with pytest.raises(TypeError, match="argument `proto`"):
        SentencePieceTokenizer(42)
    with pytest.raises(TypeError, match="argument `add_end_token`"):
        SentencePieceTokenizer(proto, add_end_token="yes")


@pytest.mark.parametrize(
    "kwargs, argument, error",
    [
        ({"vocabulary_size": 260}, "vocabulary_size", ValueError),
        (
            {"vocabulary_size": 12, "byte_fallback": False},
            "vocabulary_size",
            ValueError,
        ),
        ({"model_type": "word"}, "model_type", ValueError),
        ({"normalization": "nfd"}, "normalization", ValueError),
        ({"character_coverage": 0}, "character_coverage", ValueError),
        ({"max_sentences": 0}, "max_sentences", ValueError),
        ({"data": [""]}, "data", ValueError),
        ({"data": 42}, "data", TypeError),
        ({"data": [1, 2]}, "data", TypeError),
        (
            {"data": tf.data.Dataset.from_tensor_slices([1, 2])},
            "data",
            TypeError,
        ),
    ],
)
def test_learn_invalid_arguments(kwargs, argument, error):
    kwargs = {"data": CORPUS[:8], "vocabulary_size": 300, **kwargs}
    with pytest.raises(error, match=f"argument `{argument}`"):
        learn_sentencepiece_model(**kwargs)
