"""Tests for `WordPieceTokenizer` and `learn_wordpiece_vocabulary`."""

import csv
import gzip
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops for SavedModel loads

from keras_selfattn import SequencePooling
from keras_selfattn.text import WordPieceTokenizer
from keras_selfattn.text import learn_wordpiece_vocabulary
from keras_selfattn.text import normalize_text

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


@pytest.fixture(scope="module")
def vocab():
    data = tf.data.Dataset.from_tensor_slices(CORPUS)
    return learn_wordpiece_vocabulary(data, vocabulary_size=300)


CJK = "\u3400-\u4dbf\u4e00-\u9fff"


def _words(text):
    """What detokenize gives back: normalized words, punctuation marks and
    CJK ideographs (each its own word, as in BERT), one space apart."""
    return " ".join(re.findall(rf"[{CJK}]|[^\W{CJK}]+|[^\w\s]", text))


def test_vocabulary_starts_with_reserved_tokens(vocab):
    assert vocab[:4] == ["[PAD]", "[UNK]", "[START]", "[END]"]
    assert len(vocab) <= 300
    assert len(set(vocab)) == len(vocab)


def test_round_trip_on_sentences(vocab):
    tokenizer = WordPieceTokenizer(vocab)
    sentences = sorted(set(CORPUS))
    ids = tokenizer(sentences)
    assert ids.dtype == tf.int32
    assert not np.any(ids.numpy() == 1), "corpus words must be known"
    back = [s.decode() for s in tokenizer.detokenize(ids).numpy()]
    expected = [_words(s.lower()) for s in sentences]
    assert back == expected


def test_unknown_words_become_unk(vocab):
    tokenizer = WordPieceTokenizer(vocab)
    # Greek letters never occur in the corpus: no sub-word can spell them.
    ids = tokenizer(["the ξψ fox"]).numpy()[0]
    assert 1 in ids.tolist()
    assert tokenizer.detokenize([ids]).numpy()[0] == b"the [UNK] fox"


def test_empty_strings_and_start_end(vocab):
    tokenizer = WordPieceTokenizer(
        vocab, sequence_length=6, add_start_token=True, add_end_token=True
    )
    ids = tokenizer(["", "the fox"]).numpy()
    assert ids[0].tolist() == [2, 3, 0, 0, 0, 0]
    assert ids[1][0] == 2 and 3 in ids[1].tolist()
    assert tokenizer.detokenize(ids).numpy().tolist() == [b"", b"the fox"]


def test_long_inputs_truncate_keeping_end_token(vocab):
    tokenizer = WordPieceTokenizer(
        vocab, sequence_length=5, add_start_token=True, add_end_token=True
    )
    ids = tokenizer(["the quick brown fox jumps over the lazy dog"]).numpy()
    assert ids.shape == (1, 5)
    assert ids[0, 0] == 2 and ids[0, -1] == 3
    text = tokenizer.detokenize(ids).numpy()[0].decode()
    assert text == "the quick brown"


def test_no_sequence_length_pads_to_longest(vocab):
    tokenizer = WordPieceTokenizer(vocab)
    ids = tokenizer(["the fox", "the quick brown fox"]).numpy()
    assert ids.shape == (2, 4)
    assert ids[0, 2:].tolist() == [0, 0]


def test_non_ascii_and_invalid_utf8(vocab):
    tokenizer = WordPieceTokenizer(vocab, sequence_length=12)
    ids = tokenizer(
        tf.constant(["¿Dónde está?", b"bad \xff\xfe bytes", "😀"])
    ).numpy()
    assert ids.shape == (3, 12)
    text = tokenizer.detokenize(ids).numpy()
    assert text[0].decode() == "¿ dónde está ?"
    assert text[2].decode() == "😀"
    # Invalid bytes become U+FFFD, then [UNK]; nothing raises.
    assert "[UNK]" in text[1].decode()


def test_strip_accents_and_case():
    strings = normalize_text(
        tf.constant(["Ça Está"]), lower_case=True, strip_accents=True
    )
    assert strings.numpy()[0].decode() == "ca esta"
    kept = normalize_text(tf.constant(["Ça Está"]), lower_case=False)
    assert kept.numpy()[0].decode() == "Ça Está"


def test_inputs_of_shape_batch_by_one(vocab):
    tokenizer = WordPieceTokenizer(vocab, sequence_length=4)
    a = tokenizer(tf.constant([["the fox"], ["a dog"]]))
    b = tokenizer(tf.constant(["the fox", "a dog"]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="argument `inputs`"):
        tokenizer(tf.constant("the fox"))


def _model(vocab):
    text = keras.Input((), dtype="string", name="text")
    ids = WordPieceTokenizer(vocab, sequence_length=10)(text)
    x = keras.layers.Embedding(len(vocab), 8, mask_zero=True)(ids)
    x = SequencePooling("mean")(x)
    return keras.Model(text, keras.layers.Dense(2)(x))


def test_config_round_trip(vocab):
    layer = WordPieceTokenizer(vocab, sequence_length=7, add_end_token=True)
    config = json.loads(json.dumps(layer.get_config()))
    again = WordPieceTokenizer.from_config(config)
    assert again.get_config() == layer.get_config()
    assert again.vocabulary == vocab


def test_keras_save_load_with_vocabulary(vocab, tmp_path):
    model = _model(vocab)
    texts = tf.constant(["the fox", "", "¿dónde está?"])
    expected = model(texts).numpy()
    assert np.all(np.isfinite(expected))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(texts).numpy(), expected, atol=1e-6)


def test_saved_model_takes_raw_strings(vocab, tmp_path):
    model = _model(vocab)
    texts = tf.constant(["the fox", "", "a stitch in time"])
    expected = model(texts).numpy()
    path = str(tmp_path / "export")
    model.export(path, verbose=False)
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(reloaded.serve(texts).numpy(), expected, 1e-5)


def test_vocabulary_from_file(vocab, tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    assert WordPieceTokenizer(str(path)).vocabulary == vocab


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"vocabulary": ["a", "b"]}, "vocabulary"),
        (
            {"vocabulary": ["[PAD]", "[UNK]", "[START]", "[END]", "a", "a"]},
            "vocabulary",
        ),
        ({"sequence_length": 0}, "sequence_length"),
        (
            {
                "sequence_length": 2,
                "add_start_token": True,
                "add_end_token": True,
            },
            "sequence_length",
        ),
        ({"max_bytes_per_word": -1}, "max_bytes_per_word"),
    ],
)
def test_invalid_arguments(vocab, kwargs, argument):
    kwargs = {"vocabulary": vocab, **kwargs}
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        WordPieceTokenizer(**kwargs)


def test_invalid_types(vocab):
    with pytest.raises(TypeError, match="argument `vocabulary`"):
        WordPieceTokenizer(42)
    with pytest.raises(TypeError, match="argument `lower_case`"):
        WordPieceTokenizer(vocab, lower_case="yes")


def test_learn_invalid_arguments():
    data = tf.data.Dataset.from_tensor_slices(["a b"])
    with pytest.raises(ValueError, match="argument `vocabulary_size`"):
        learn_wordpiece_vocabulary(data, vocabulary_size=3)
    with pytest.raises(ValueError, match="argument `reserved_tokens`"):
        learn_wordpiece_vocabulary(data, 50, reserved_tokens=["[PAD]"])


@pytest.mark.shared_data
def test_learn_on_real_translation_pairs(shared_data):
    path = os.path.join(shared_data, "translation", "spa_eng", "test.tsv.gz")
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    spanish = [r[1] for r in rows[1:2001]]
    data = tf.data.Dataset.from_tensor_slices(spanish)
    vocab = learn_wordpiece_vocabulary(data, vocabulary_size=2000)
    tokenizer = WordPieceTokenizer(vocab)
    ids = tokenizer(spanish[:200]).numpy()
    unknown = np.mean(ids[ids > 0] == 1)
    assert unknown < 0.01, unknown
    back = [s.decode() for s in tokenizer.detokenize(ids).numpy()]
    expected = [_words(s.lower()) for s in spanish[:200]]
    assert np.mean([a == b for a, b in zip(back, expected, strict=True)]) > 0.95
