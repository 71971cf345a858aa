"""Malformed requests against every export kind, through the C API loader.

Each export is loaded once in a `CApiServer` (one C API session in its own
process, as TF Serving holds one). Every malformed request must be refused
with an error naming the input, and after each one the same session must
still answer a valid request correctly: a crash would kill the process and
fail the next `predict`.
"""

import base64
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops for Python loads
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_selfattn
from keras_selfattn.export import CApiServer
from keras_selfattn.export import export_classifier
from keras_selfattn.export import export_model
from keras_selfattn.export import export_text_generator
from keras_selfattn.models import Seq2SeqTransformer
from keras_selfattn.models import TextGenerator
from keras_selfattn.models import build_text_classifier
from keras_selfattn.text import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[START]", "[END]"] + (
    "the a movie film was great awful not good bad plot , . ! ##s ##ly".split()
)
VALID_TEXTS = ["the movie was great", "", "awful plot !"]
BATCH_LIMIT = 64  # max_batch_size of these exports

# Reproducible in CI: the same examples on every run, no example database.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _b64(raw):
    return {"b64": base64.b64encode(raw).decode()}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    keras.utils.set_random_seed(0)
    tokenizer = WordPieceTokenizer(VOCAB, sequence_length=8)
    model = build_text_classifier(
        len(VOCAB), 8, 2, embed_dim=8, num_heads=2, ff_dim=16, num_layers=1
    )
    path = export_classifier(
        model,
        tokenizer,
        str(tmp_path_factory.mktemp("classifier")),
        label_names=["negative", "positive"],
        max_batch_size=BATCH_LIMIT,
    )
    expected = np.asarray(model(tokenizer(tf.constant(VALID_TEXTS))))
    ids = np.asarray(tokenizer(tf.constant(VALID_TEXTS)))
    with CApiServer(path) as server:
        yield server, expected, ids


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    keras.utils.set_random_seed(1)
    source = WordPieceTokenizer(VOCAB, sequence_length=8)
    target = WordPieceTokenizer(
        VOCAB, sequence_length=6, add_start_token=True, add_end_token=True
    )
    seq2seq = Seq2SeqTransformer(len(VOCAB), len(VOCAB), 8, 6, 8, 2, 16)
    model = TextGenerator(source, target, seq2seq)
    expected = [t.decode() for t in model(tf.constant(VALID_TEXTS)).numpy()]
    path = export_text_generator(
        model,
        str(tmp_path_factory.mktemp("generator")),
        max_batch_size=BATCH_LIMIT,
    )
    with CApiServer(path) as server:
        yield server, expected


@pytest.fixture(scope="module")
def numeric(tmp_path_factory):
    keras.utils.set_random_seed(2)
    x = keras.Input((None, 6), name="features")
    y = keras_selfattn.MultiHeadSelfAttention(2, name="attention")(x)
    pooled = keras_selfattn.SequencePooling("mean", name="pooled")(y)
    model = keras.Model(x, pooled)
    features = np.random.default_rng(0).normal(size=(2, 3, 6))
    features = features.astype("float32")
    expected = np.asarray(model(features))
    path = export_model(
        model,
        str(tmp_path_factory.mktemp("numeric")),
        max_batch_size=BATCH_LIMIT,
    )
    with CApiServer(path) as server:
        yield server, features, expected


def _refused(response, *fragments):
    assert "error" in response, f"answered instead of refused: {response}"
    assert response["code"] == "INVALID_ARGUMENT", response
    for fragment in fragments:
        assert fragment in response["error"], response["error"]


def _classifier_still_answers(server, expected, ids):
    response = server.predict({"instances": VALID_TEXTS})
    probs = np.array([row["probabilities"] for row in response["predictions"]])
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    response = server.predict(
        {"signature_name": "token_ids", "inputs": {"token_ids": ids.tolist()}}
    )
    np.testing.assert_allclose(
        response["outputs"]["probabilities"], expected, atol=1e-5
    )


def _generator_still_answers(server, expected):
    assert server.predict({"instances": VALID_TEXTS})["predictions"] == (
        expected
    )


def _numeric_still_answers(server, features, expected):
    response = server.predict({"inputs": {"features": features.tolist()}})
    np.testing.assert_allclose(response["outputs"], expected, atol=1e-5)


# Requests for a `text` input, each with what the error must say.
TEXT_CASES = {
    "scalar": ("hello", ["input `text`", "Received: shape=[]"]),
    "rank 2": ([["A dog", "runs"]], ["shape=[1, 2]"]),
    "rank 3": ([[["a"]], [["b"]]], ["shape=[2, 1, 1]"]),
    "empty batch": ([], ["a batch of 1 to 64 rows", "batch_size=0"]),
    "too many rows": (
        ["the movie"] * 10_000,
        ["a batch of 1 to 64 rows", "batch_size=10000"],
    ),
    "1M characters": (
        ["ok", "a" * 1_000_000],
        ["at most 100000 bytes", "1000000 bytes at row 1"],
    ),
    "a number": ([1], ["JSON Value: 1 Type: Number", "expected type: string"]),
    "a scalar number": (7.5, ["Type: Number is not of expected type: string"]),
    "null": ([None], ["Type: Null"]),
    "a bool": ([True], ["Type: Boolean"]),
    "an object": ([{"x": "y"}], ["Type: Object"]),
    "ragged": ([["a", "b"], ["c"]], ["rectangular"]),
    "bad base64": ([{"b64": "@@not base64@@"}], ["base64"]),
}


def _text_request(case, signature=None):
    value, _ = TEXT_CASES[case]
    request = {"inputs": {"text": value}}
    if signature:
        request["signature_name"] = signature
    return request


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_classifier_refuses_malformed_text(classifier, case):
    server, expected, ids = classifier
    _refused(server.predict(_text_request(case)), *TEXT_CASES[case][1])
    _classifier_still_answers(server, expected, ids)


@pytest.mark.parametrize(
    "case", ["scalar", "rank 2", "empty batch", "too many rows", "a number"]
)
def test_generator_refuses_malformed_text(generator, case):
    server, expected = generator
    _refused(server.predict(_text_request(case)), *TEXT_CASES[case][1])
    _generator_still_answers(server, expected)


def test_the_translator_answers_a_nested_batch_with_an_error(generator):
    # It used to answer [["A dog", "runs"]] with a single sentence.
    server, expected = generator
    _refused(
        server.predict({"instances": [["A dog", "runs"]]}),
        "input `text`",
        "shape=[1, 2]",
    )
    _generator_still_answers(server, expected)


@pytest.mark.parametrize(
    "ids, fragments",
    [
        (3, ["input `token_ids`", "shape=[]"]),
        ([4, 5], ["shape=[2]"]),
        ([[[4]]], ["shape=[1, 1, 1]"]),
        ([], ["shape=[0]"]),
        ([[]], ["1 to 8 tokens per row", "length=0"]),
        ([[4] * 9], ["1 to 8 tokens per row", "length=9"]),
        ([[4, -1]], ["token ids in [0, 20)", "min=-1"]),
        ([[4, 20]], ["token ids in [0, 20)", "max=20"]),
        ([[4, 2**31]], ["is not of expected type: int32"]),
        ([[4.5]], ["JSON Value: 4.5", "int32"]),
        ([["4"]], ["Type: String is not of expected type: int32"]),
        ([[True]], ["Type: Boolean"]),
        ([[4]] * 65, ["a batch of 1 to 64 rows"]),
    ],
)
def test_classifier_refuses_malformed_token_ids(classifier, ids, fragments):
    server, expected, good_ids = classifier
    response = server.predict(
        {"signature_name": "token_ids", "inputs": {"token_ids": ids}}
    )
    _refused(response, *fragments)
    _classifier_still_answers(server, expected, good_ids)


@pytest.mark.parametrize(
    "features, fragments",
    [
        (1.0, ["input `features`", "shape=[]"]),
        ([[1.0] * 6], ["shape=[1, 6]"]),
        ([[[1.0] * 5]], ["(batch_size, None, 6)", "shape=[1, 1, 5]"]),
        ([[[float("nan")] * 6]], ["finite values", "6 NaN or infinite"]),
        ([[[1.0] * 5 + [float("inf")]]], ["1 NaN or infinite"]),
        ([[[-float("inf")] * 6]] * 2, ["12 NaN or infinite"]),
        ([[["1"] * 6]], ["Type: String is not of expected type: float32"]),
        ([[[1.0] * 6]] * 65, ["a batch of 1 to 64 rows"]),
        ([], ["shape=[0]"]),
    ],
)
def test_numeric_export_refuses_malformed_features(
    numeric, features, fragments
):
    server, good, expected = numeric
    _refused(server.predict({"inputs": {"features": features}}), *fragments)
    _numeric_still_answers(server, good, expected)


def test_missing_extra_and_unknown_inputs(classifier, numeric):
    server, expected, ids = classifier
    for request, fragment in [
        ({"inputs": {}}, "does not have named input: text"),
        ({"instances": [{"sentence": "x"}]}, "named input: text"),
        ({"inputs": {"text": ["x"], "extra": ["y"]}}, "'extra' is not in"),
        ({"instances": [{"text": "x", "extra": 1}]}, "'extra' is not in"),
        ({"instances": []}, "non-empty list"),
        ({"rows": ["x"]}, "Missing 'inputs' or 'instances'"),
        ({"inputs": ["x"], "instances": ["x"]}, "Not both"),
    ]:
        _refused(server.predict(request), fragment)
    response = server.predict({"signature_name": "nope", "inputs": ["x"]})
    assert response["code"] == "FAILED_PRECONDITION"
    _classifier_still_answers(server, expected, ids)


def test_invalid_utf8_is_answered_not_refused(classifier, generator):
    # Bytes that are not UTF-8 are replaced (U+FFFD) by the tokenizer: a
    # client sending binary junk gets an answer, as documented.
    server, expected, ids = classifier
    raw = b"the movie \xff\xfe\xc0 was bad"
    response = server.predict({"instances": [_b64(raw), _b64(b"\x80")]})
    probs = np.array([r["probabilities"] for r in response["predictions"]])
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    server, expected = generator
    response = server.predict({"instances": [_b64(raw)]})
    assert isinstance(response["predictions"][0], str)


# Hypothesis: random malformed values for a `text` input.
_leaf_not_string = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.dictionaries(
        st.sampled_from(["x", "y"]), st.text(max_size=3), max_size=2
    ),
)
_short_text = st.text(max_size=12)


def _nested(leaves, depth):
    """Rectangular lists of `depth` >= 2 levels."""
    return st.integers(1, 3).flatmap(
        lambda n: st.lists(
            leaves if depth == 1 else _nested(leaves, depth - 1),
            min_size=n,
            max_size=n,
        )
    )


_malformed_text = st.one_of(
    _short_text,  # a scalar string
    _leaf_not_string,  # a scalar of another type
    _nested(_short_text, 2),  # rank 2
    _nested(_short_text, 3),  # rank 3
    st.lists(_leaf_not_string, min_size=1, max_size=4),  # wrong types
    st.lists(  # one wrong leaf among strings
        st.one_of(_short_text, _leaf_not_string), min_size=2, max_size=5
    ).filter(lambda xs: not all(isinstance(x, str) for x in xs)),
    st.lists(st.lists(_short_text, max_size=3), min_size=2, max_size=4),
)


@FUZZ
@given(value=_malformed_text)
def test_fuzz_text_requests(classifier, value):
    server, expected, ids = classifier
    response = server.predict({"inputs": {"text": value}})
    assert "error" in response, (json.dumps(value)[:200], response)
    assert response["code"] == "INVALID_ARGUMENT", response
    _classifier_still_answers(server, expected, ids)


_number = st.floats(allow_nan=True, allow_infinity=True, width=32)


@FUZZ
@given(
    value=st.one_of(
        _number,
        st.lists(_number, max_size=8),
        _nested(_number, 2),
        _nested(_number, 3).filter(
            lambda v: (
                any(len(row) != 6 for b in v for row in b)
                or not np.all(np.isfinite(np.array(v, dtype="float64")))
            )
        ),
        _nested(_number, 4),
        _nested(st.one_of(_short_text, st.booleans(), st.none()), 3),
    )
)
def test_fuzz_numeric_requests(numeric, value):
    server, features, expected = numeric
    response = server.predict({"inputs": {"features": value}})
    assert "error" in response, (json.dumps(value)[:200], response)
    assert response["code"] == "INVALID_ARGUMENT", response
    _numeric_still_answers(server, features, expected)


_WRONG_DTYPE = """
import sys
import numpy as np
sys.path.insert(0, {folder!r})
import capi_runner as runner
api = runner.CApi()
runner.load_op_libraries(api, runner.tf_text_op_libraries())
model = runner.Model(api, {path!r})
feed = model._to_tensor
# A float32 tensor where the signature takes strings, and int64 token ids:
# what a gRPC client can send (REST parses by the signature's dtype).
for signature, name, array, code in [
    ("serving_default", "text", np.array([1.5], np.float32), 1),
    ("token_ids", "token_ids", np.array([[4]], np.int64), 9),
]:
    model._to_tensor = lambda _, __, a=array, c=code: feed(a, c)
    try:
        model.run(signature, {{name: np.array([["x"]], dtype=object)}})
        print("answered", signature)
    except runner.ServingError as error:
        print(error.code, error)
model._to_tensor = feed
print(model.run("serving_default", {{"text": np.array(["a", ""], object)}}))
"""


def test_a_tensor_of_the_wrong_dtype_is_refused(classifier, tmp_path):
    # The REST parser converts by the signature's dtype; a gRPC client sends
    # typed tensors, which the runtime checks against the graph.
    import os
    import subprocess
    import sys

    from keras_selfattn.export import serving_check

    server, _, _ = classifier
    script = tmp_path / "wrong_dtype.py"
    script.write_text(
        _WRONG_DTYPE.format(
            folder=os.path.dirname(serving_check.RUNNER),
            path=server.export_dir,
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("INVALID_ARGUMENT"), lines
    assert "to be string but float is provided" in lines[0]
    assert lines[1].startswith("INVALID_ARGUMENT"), lines
    assert "to be int32 but int64 is provided" in lines[1]
    assert "label" in lines[2]


@settings(FUZZ, max_examples=20)
@given(value=_malformed_text)
def test_fuzz_generator_requests(generator, value):
    server, expected = generator
    response = server.predict({"inputs": {"text": value}})
    assert "error" in response, (json.dumps(value)[:200], response)
    assert response["code"] == "INVALID_ARGUMENT", response
    _generator_still_answers(server, expected)
