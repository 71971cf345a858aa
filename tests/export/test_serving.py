"""Exports load and answer through the TF C API, as in TF Serving."""

import base64
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops for Python loads

import keras_selfattn
from keras_selfattn.export import export_classifier
from keras_selfattn.export import export_model
from keras_selfattn.export import serve_with_c_api
from keras_selfattn.models import build_text_classifier
from keras_selfattn.text import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[START]", "[END]"] + (
    "the a movie film was great awful not good bad plot , . ! ##s ##ly".split()
)


def _numeric_model():
    x = keras.Input((None, 6), name="features")
    y = keras_selfattn.MultiHeadSelfAttention(2, name="attention")(x)
    pooled = keras_selfattn.SequencePooling("mean", name="pooled")(y)
    return keras.Model(x, {"sequence": y, "pooled": pooled})


def test_numeric_model_row_and_columnar(tmp_path):
    model = _numeric_model()
    x = np.random.default_rng(0).normal(size=(2, 3, 6)).astype("float32")
    expected = {k: np.asarray(v) for k, v in model(x).items()}
    path = export_model(model, str(tmp_path / "numeric"))
    rows = serve_with_c_api(path, {"instances": x.tolist()})
    assert rows["python_modules"] == []
    for i, row in enumerate(rows["predictions"]):
        np.testing.assert_allclose(row["pooled"], expected["pooled"][i], 1e-5)
        np.testing.assert_allclose(
            row["sequence"], expected["sequence"][i], 1e-5
        )
    columns = serve_with_c_api(path, {"inputs": {"features": x.tolist()}})
    np.testing.assert_allclose(
        columns["outputs"]["pooled"], expected["pooled"], 1e-5
    )


@pytest.fixture(scope="module")
def classifier_export(tmp_path_factory):
    keras.utils.set_random_seed(0)
    tokenizer = WordPieceTokenizer(VOCAB, sequence_length=8)
    classifier = build_text_classifier(
        len(VOCAB), 8, 2, embed_dim=8, num_heads=2, ff_dim=16, num_layers=1
    )
    base = str(tmp_path_factory.mktemp("classifier"))
    path = export_classifier(
        classifier, tokenizer, base, label_names=["negative", "positive"]
    )
    return path, tokenizer, classifier


TEXTS = [
    "The movie was great!",
    "",
    "awful plot , not good " * 20,  # longer than sequence_length
    "films",
]


def test_classifier_from_raw_strings(classifier_export):
    path, tokenizer, classifier = classifier_export
    expected = np.asarray(classifier(tokenizer(TEXTS)))
    response = serve_with_c_api(
        path, {"instances": [{"text": t} for t in TEXTS]}
    )
    assert response["python_modules"] == []
    rows = response["predictions"]
    probs = np.array([r["probabilities"] for r in rows])
    assert np.all(np.isfinite(probs))  # the empty string too
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    for row, p in zip(rows, expected, strict=True):
        assert row["label_id"] == int(np.argmax(p))
        assert row["label"] == ["negative", "positive"][int(np.argmax(p))]


def test_classifier_invalid_utf8_and_token_ids(classifier_export):
    path, tokenizer, classifier = classifier_export
    raw = b"the movie \xff\xfe was bad"
    response = serve_with_c_api(
        path, {"instances": [{"b64": base64.b64encode(raw).decode()}]}
    )
    probs = np.array(response["predictions"][0]["probabilities"])
    assert np.all(np.isfinite(probs)) and probs.sum() == pytest.approx(1, 1e-5)
    ids = np.asarray(tokenizer(["the movie was great"]))
    response = serve_with_c_api(
        path,
        {"signature_name": "token_ids", "inputs": {"token_ids": ids.tolist()}},
    )
    expected = np.asarray(classifier(ids))
    np.testing.assert_allclose(
        response["outputs"]["probabilities"], expected, atol=1e-5
    )


def test_bad_requests_get_clear_errors(classifier_export):
    path, _, _ = classifier_export
    missing = serve_with_c_api(path, {"instances": [{"sentence": "x"}]})
    assert "does not have named input: text" in missing["error"]
    unknown = serve_with_c_api(
        path, {"signature_name": "nope", "instances": ["x"]}
    )
    assert "not found in signature def" in unknown["error"]
    empty = serve_with_c_api(path, {"rows": []})
    assert "Missing 'inputs' or 'instances'" in empty["error"]


def test_without_tf_text_ops_the_load_fails(classifier_export):
    path, _, _ = classifier_export
    response = serve_with_c_api(path, {"instances": ["x"]}, load_tf_text=False)
    assert "not registered" in response["error"]


def test_a_python_op_cannot_be_served(tmp_path):
    x = keras.Input((3,), name="x")
    y = keras.layers.Lambda(
        lambda t: tf.py_function(lambda v: v * 2, [t], tf.float32),
        output_shape=(3,),
    )(x)
    path = export_model(keras.Model(x, y), str(tmp_path))
    response = serve_with_c_api(path, {"instances": [[1.0, 2.0, 3.0]]})
    assert "error" in response, response


def test_mixed_precision_outputs_float32(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _numeric_model()
    finally:
        keras.config.set_dtype_policy("float32")
    path = export_model(model, str(tmp_path))
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](features=tf.zeros((1, 2, 6)))
    assert out["pooled"].dtype == tf.float32
    response = serve_with_c_api(
        path, {"instances": np.ones((1, 2, 6)).tolist()}
    )
    assert np.all(np.isfinite(response["predictions"][0]["pooled"]))


def test_versions_increment_and_never_overwrite(tmp_path):
    model = _numeric_model()
    base = str(tmp_path / "m")
    assert export_model(model, base).endswith(os.sep + "1")
    assert export_model(model, base).endswith(os.sep + "2")
    with pytest.raises(FileExistsError, match="Version 2 already exists"):
        export_model(model, base, version=2)
    assert export_model(model, base, version=2, overwrite=True)
    assert export_model(model, base, version=7).endswith(os.sep + "7")
    assert sorted(os.listdir(base)) == ["1", "2", "7"]  # no staging left
    with pytest.raises(ValueError, match="argument `version`"):
        export_model(model, base, version=0)
    with pytest.raises(TypeError, match="argument `model`"):
        export_model("model", base)


def _generator(method, source_length, seed):
    from keras_selfattn.models import Seq2SeqTransformer
    from keras_selfattn.models import TextGenerator

    keras.utils.set_random_seed(seed)
    source = WordPieceTokenizer(VOCAB, sequence_length=source_length)
    target = WordPieceTokenizer(
        VOCAB, sequence_length=7, add_start_token=True, add_end_token=True
    )
    seq2seq = Seq2SeqTransformer(
        len(VOCAB), len(VOCAB), source_length, 6, 16, 2, 32
    )
    return TextGenerator(source, target, seq2seq, method=method, beam_width=3)


@pytest.mark.parametrize(
    "task, method, source_length",
    [("translation", "greedy", 8), ("summarization", "beam", 24)],
)
def test_text_generator_strings_in_strings_out(
    tmp_path, task, method, source_length
):
    from keras_selfattn.export import export_text_generator

    generator = _generator(method, source_length, seed=len(task))
    texts = ["the movie was great", "", "bad plot ! " * 30]
    expected = [t.decode() for t in generator(tf.constant(texts)).numpy()]
    path = export_text_generator(generator, str(tmp_path / task))
    loaded = tf.saved_model.load(path)
    python = loaded.signatures["serving_default"](text=tf.constant(texts))
    assert [t.decode() for t in python["text"].numpy()] == expected
    response = serve_with_c_api(path, {"instances": texts})
    assert response["python_modules"] == []
    assert response["predictions"] == expected
    columnar = serve_with_c_api(path, {"inputs": {"text": texts[:1]}})
    assert columnar["outputs"] == expected[:1]


def test_each_version_records_its_metadata(tmp_path):
    from keras_selfattn.export import published_versions

    model = _numeric_model()
    base = str(tmp_path / "m")
    assert published_versions(base) == []
    export_model(model, base, metadata={"test_accuracy": 0.8})
    export_model(model, base, metadata={"test_accuracy": 0.55, "note": "x"})
    os.makedirs(os.path.join(base, "3", "variables"))  # not ours: no record
    versions = published_versions(base)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v.get("test_accuracy") for v in versions] == [0.8, 0.55, None]
    assert versions[1]["note"] == "x"
    assert versions[0]["path"] == os.path.join(base, "1")
    assert versions[0]["keras_selfattn_version"] == keras_selfattn.__version__
    inputs = versions[0]["signatures"]["serving_default"]["inputs"]
    assert inputs == {"features": "float32 (batch_size, None, 6)"}
    assert versions[0]["signatures"]["serving_default"]["max_batch_size"] == (
        1024
    )
    with pytest.raises(TypeError, match="argument `metadata`"):
        export_model(model, base, metadata={"loss": float("nan")})
    with pytest.raises(TypeError, match="argument `metadata`"):
        export_model(model, base, metadata=["not", "a", "dict"])
    with pytest.raises(ValueError, match="argument `max_batch_size`"):
        export_model(model, base, max_batch_size=0)
    assert len(published_versions(base)) == 3  # refused before writing


def test_classifier_record_names_labels_and_limits(classifier_export):
    from keras_selfattn.export import published_versions

    path, tokenizer, _ = classifier_export
    (record,) = published_versions(os.path.dirname(path))
    assert record["label_names"] == ["negative", "positive"]
    ids = record["signatures"]["token_ids"]
    assert ids["max_length"] == 8
    assert ids["vocabulary_size"] == tokenizer.vocabulary_size
    assert record["signatures"]["serving_default"]["max_text_bytes"] == 100000


def test_capi_server_reports_a_dead_runner(tmp_path):
    from keras_selfattn.export import CApiServer

    path = export_model(_numeric_model(), str(tmp_path))
    server = CApiServer(path)
    try:
        good = server.predict({"instances": np.ones((1, 2, 6)).tolist()})
        assert np.isfinite(good["predictions"][0]["pooled"]).all()
        server._process.kill()  # what a segfault would do to a server
        server._process.wait()
        with pytest.raises(RuntimeError, match="signal 9 \\(SIGKILL\\)"):
            server.predict({"instances": np.ones((1, 2, 6)).tolist()})
    finally:
        server.close()
