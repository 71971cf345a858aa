"""`TextClassifier`: raw strings in every Python form, saving, export."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_selfattn  # noqa: F401  (registers the layers for safe_mode)
from keras_selfattn.export import export_classifier
from keras_selfattn.models import TextClassifier
from keras_selfattn.models import build_text_classifier
from keras_selfattn.text import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[START]", "[END]"] + (
    "the a movie film was great awful not good bad plot , . ! ##s ##ly".split()
)
TEXTS = ["a great movie", "bad plot!", "", "the films was not good"]


def _parts(num_classes=2, dropout=0.1):
    tokenizer = WordPieceTokenizer(VOCAB, sequence_length=8)
    classifier = build_text_classifier(
        len(VOCAB),
        8,
        num_classes,
        embed_dim=8,
        num_heads=2,
        ff_dim=16,
        num_layers=1,
        dropout=dropout,
    )
    return tokenizer, classifier


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return TextClassifier(*_parts(), label_names=["neg", "pos"])


def _expected(model, texts=TEXTS):
    ids = model.tokenizer(tf.constant(texts))
    return keras.ops.convert_to_numpy(model.classifier(ids))


FORMS = {
    "list_of_str": lambda t: list(t),
    "tuple_of_str": lambda t: tuple(t),
    "list_of_bytes": lambda t: [s.encode() for s in t],
    "numpy_str": lambda t: np.array(t),
    "numpy_bytes": lambda t: np.array([s.encode() for s in t]),
    "numpy_object": lambda t: np.array(t, dtype=object),
    "tf_string": lambda t: tf.constant(t),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_input_form_gives_the_parts_probabilities(model, form):
    texts = FORMS[form](TEXTS)
    expected = _expected(model)
    assert expected.shape == (4, 2)
    called = keras.ops.convert_to_numpy(model(texts))
    np.testing.assert_allclose(called, expected, atol=1e-6)
    predicted = model.predict(texts, batch_size=3, verbose=0)
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
    on_batch = model.predict_on_batch(texts)
    np.testing.assert_allclose(on_batch, expected, atol=1e-6)


def test_non_ascii_text_matches_the_string_tensor(model):
    texts = ["¡qué film!", "naïve plot"]
    np.testing.assert_allclose(
        model.predict(np.array(texts), verbose=0),
        _expected(model, texts),
        atol=1e-6,
    )


def test_predict_labels_names_the_argmax(model):
    labels = model.predict_labels(np.array(TEXTS))
    names = np.array(["neg", "pos"])
    assert labels == names[_expected(model).argmax(-1)].tolist()
    assert all(type(label) is str for label in labels)
    assert model.predict_labels([]) == []


BAD_SHAPES = {
    "str": "a movie",
    "bytes": b"a movie",
    "numpy_scalar": np.array("a movie"),
    "rank_2": np.array([["a movie"], ["bad"]]),
    "tf_rank_2": tf.constant([["a movie"]]),
}


@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
def test_anything_but_a_batch_of_strings_is_refused(model, case):
    bad = BAD_SHAPES[case]
    with pytest.raises(ValueError, match=r"`inputs`.*\(batch_size,\)"):
        model(bad)
    with pytest.raises(ValueError, match=r"`x`.*\(batch_size,\)"):
        model.predict(bad, verbose=0)
    with pytest.raises(ValueError, match=r"`x`.*\(batch_size,\)"):
        model.predict_on_batch(bad)
    with pytest.raises(ValueError, match=r"`texts`.*\(batch_size,\)"):
        model.predict_labels(bad)


@pytest.mark.parametrize("bad", [[1, 2], np.array([1.0, 2.0]), ["a", None]])
def test_items_that_are_not_strings_are_refused(model, bad):
    with pytest.raises(TypeError, match="`inputs`.*strings"):
        model(bad)
    with pytest.raises(TypeError, match="`x`.*strings"):
        model.predict(bad, verbose=0)


def test_fit_and_evaluate_take_numpy_strings():
    keras.utils.set_random_seed(0)
    model = TextClassifier(*_parts(dropout=0.0), ["awful", "great"])
    model.compile(
        keras.optimizers.Adam(0.02),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x = np.array(["a great film", "the great plot", "awful", "an awful film"])
    y = np.array([1, 1, 0, 0])
    history = model.fit(
        x, y, epochs=15, batch_size=2, verbose=0, validation_data=(x, y)
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    _, accuracy = model.evaluate(list(x), y, verbose=0)
    assert accuracy == 1.0
    assert model.predict_labels(["great", "awful"]) == ["great", "awful"]
    loss, _ = model.test_on_batch(x, y)
    assert np.isfinite(loss)
    with pytest.raises(ValueError, match="`x`"):
        model.fit("a great film", np.array([1]), verbose=0)
    with pytest.raises(ValueError, match="`x`"):
        model.evaluate(x[:, None], y, verbose=0)
    with pytest.raises(ValueError, match="`validation_data`"):
        model.fit(x, y, verbose=0, validation_data=(x[:, None], y))


def test_keras_file_round_trip(model, tmp_path):
    path = os.path.join(tmp_path, "classifier.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(reloaded, TextClassifier)
    assert reloaded.label_names == ["neg", "pos"]
    assert reloaded.tokenizer.vocabulary == VOCAB
    np.testing.assert_allclose(
        reloaded.predict(TEXTS, verbose=0), _expected(model), atol=1e-6
    )
    assert reloaded.predict_labels(TEXTS) == model.predict_labels(TEXTS)
    # Equal as JSON: Keras reloads the build shapes as lists, not tuples.
    assert json.dumps(reloaded.get_config(), sort_keys=True) == json.dumps(
        model.get_config(), sort_keys=True
    )


def test_config_round_trip_and_default_label_names():
    tokenizer, classifier = _parts(num_classes=3)
    model = TextClassifier(tokenizer, classifier)
    assert model.label_names == ["0", "1", "2"]
    assert model.num_classes == 3
    config = keras.saving.serialize_keras_object(model)
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, TextClassifier)
    assert clone.get_config() == model.get_config()
    assert clone.get_config()["label_names"] == ["0", "1", "2"]
    assert clone.tokenizer.sequence_length == 8


def test_symbolic_call_in_a_functional_model(model):
    text = keras.Input((), dtype="string", name="text")
    probabilities = model(text)
    assert probabilities.shape == (None, 2)
    assert probabilities.dtype == "float32"
    with pytest.raises(ValueError, match=r"`inputs`.*\(batch_size,\)"):
        model(keras.Input((1,), dtype="string"))


def test_export_and_export_classifier(model, tmp_path):
    path = os.path.join(tmp_path, "export")
    model.export(path, verbose=False)
    served = tf.saved_model.load(path)
    for texts in (TEXTS[:1], TEXTS):
        np.testing.assert_allclose(
            served.serve(tf.constant(texts)),
            _expected(model, texts),
            atol=1e-5,
        )
    version = export_classifier(
        model.classifier,
        model.tokenizer,
        os.path.join(tmp_path, "served"),
        label_names=model.label_names,
    )
    signature = tf.saved_model.load(version).signatures["serving_default"]
    labels = signature(text=tf.constant(TEXTS))["label"].numpy()
    assert [b.decode() for b in labels] == model.predict_labels(TEXTS)


def test_invalid_arguments():
    tokenizer, classifier = _parts()
    with pytest.raises(ValueError, match="`label_names`"):
        TextClassifier(tokenizer, classifier, label_names=["only one"])
    with pytest.raises(TypeError, match="`label_names`"):
        TextClassifier(tokenizer, classifier, label_names="neg,pos")
    with pytest.raises(TypeError, match="`label_names`"):
        TextClassifier(tokenizer, classifier, label_names=[0, 1])
    with pytest.raises(TypeError, match="`tokenizer`"):
        TextClassifier("not a tokenizer", classifier)
    with pytest.raises(TypeError, match="`classifier`"):
        TextClassifier(tokenizer, keras.layers.Dense(2))
    ids = keras.Input((None,), dtype="int32")
    per_token = keras.Model(ids, keras.layers.Embedding(len(VOCAB), 2)(ids))
    with pytest.raises(ValueError, match="`classifier`"):
        TextClassifier(tokenizer, per_token)
