"""`export_causal_lm`: prompts in, text out, options per request, through
the TF C API loader as TF Serving loads it.

One export and one `CApiServer` (one C API session, as TF Serving holds
one) serve every test of this module.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops for Python loads

from keras_selfattn.export import CApiServer
from keras_selfattn.export import export_causal_lm
from keras_selfattn.export import published_versions
from keras_selfattn.models import CausalLM
from keras_selfattn.models import TopPSampler
from keras_selfattn.models import tidy_spacing
from keras_selfattn.text import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[START]", "[END]"] + (
    "the a movie film was great awful not good bad plot , . ! ##s ##ly".split()
)
END = 3
# "[END]" and ",": detokenize drops the first itself, the export the second
# (the untrained model below emits "," in greedy and default decoding).
STOP = (END, VOCAB.index(","))
PROMPT_LENGTH = 6
NEW_TOKENS = 5
TEXTS = [
    "the movie was",
    "",
    "bad plot ! " * 4,  # longer than PROMPT_LENGTH: its last tokens count
]
# How the export tokenizes prompts: no sequence_length, no end token.
PROMPT_TOKENIZER = WordPieceTokenizer(VOCAB, add_start_token=True)
# The options of a greedy request (top_k = 1), columnar.
GREEDY = {"temperature": 1.0, "top_k": 1, "top_p": 1.0, "seed": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    keras.utils.set_random_seed(4)
    # A fixed sequence_length and an end token, as for training: the
    # export tokenizes prompts without them.
    tokenizer = WordPieceTokenizer(
        VOCAB, sequence_length=8, add_start_token=True, add_end_token=True
    )
    lm = CausalLM(len(VOCAB), 1, 8, 2, 16, dropout=0.0)
    base = str(tmp_path_factory.mktemp("causal_lm"))
    path = export_causal_lm(
        lm,
        tokenizer,
        base,
        max_prompt_length=PROMPT_LENGTH,
        max_new_tokens=NEW_TOKENS,
        stop_token_ids=STOP,
        metadata={"note": "tiny"},
    )
    with CApiServer(path) as server:
        yield server, lm, tokenizer, path


def expected_texts(lm, tokenizer, texts, sampler, seed=None, max_new=None):
    """What the export answers, computed eagerly: the last PROMPT_LENGTH
    tokens of each prompt (in NumPy), `generate`, then the text."""
    rows = []
    for text in texts:
        ids = np.asarray(PROMPT_TOKENIZER(tf.constant([text]))[0])
        ids = ids[ids != 0][-PROMPT_LENGTH:]
        rows.append(np.pad(ids, (PROMPT_LENGTH - len(ids), 0)))
    tokens = np.asarray(
        lm.generate(
            np.stack(rows).astype("int32"),
            NEW_TOKENS,
            sampler=sampler,
            stop_token_ids=STOP,
            seed=seed,
        )
    ).copy()
    if max_new is not None:
        for row, limit in enumerate(max_new):
            tokens[row, limit:] = 0
    tokens[np.isin(tokens, STOP)] = 0
    strings = tidy_spacing(tokenizer.detokenize(tokens)).numpy()
    return [s.decode() for s in strings]


def generate_request(texts, **options):
    return {
        "signature_name": "generate",
        "inputs": {"text": texts, **options},
    }


def test_greedy_text_equals_generate_then_detokenize(served):
    server, lm, tokenizer, _ = served
    response = server.predict(
        generate_request(TEXTS, **GREEDY, max_new_tokens=NEW_TOKENS)
    )
    assert response["python_modules"] == []
    expected = expected_texts(lm, tokenizer, TEXTS, "greedy")
    assert response["outputs"] == expected
    assert any(expected)  # not all empty: the comparison has content
    # A per-row max_new_tokens cuts each row's text to its tokens.
    limits = [1, NEW_TOKENS, 2]
    response = server.predict(
        generate_request(TEXTS, **GREEDY, max_new_tokens=limits)
    )
    cut = expected_texts(lm, tokenizer, TEXTS, "greedy", max_new=limits)
    assert response["outputs"] == cut


def test_seeded_top_p_is_the_same_in_python_and_through_the_c_api(served):
    server, lm, tokenizer, path = served
    options = {"temperature": 1.3, "top_k": 0, "top_p": 0.8, "seed": 11}
    response = server.predict(
        generate_request(TEXTS, **options, max_new_tokens=NEW_TOKENS)
    )
    sampler = TopPSampler(p=0.8, temperature=1.3)
    expected = expected_texts(lm, tokenizer, TEXTS, sampler, seed=11)
    assert response["outputs"] == expected
    other = expected_texts(lm, tokenizer, TEXTS, sampler, seed=12)
    assert other != expected  # the seed matters
    # Row format: one value of each option per row.
    rows = [{"text": t, **options, "max_new_tokens": NEW_TOKENS} for t in TEXTS]
    response = server.predict({"signature_name": "generate", "instances": rows})
    assert response["predictions"] == expected
    # The SavedModel loaded in Python (a tf.function graph) agrees.
    signature = tf.saved_model.load(path).signatures["generate"]
    python = signature(
        text=tf.constant(TEXTS),
        temperature=tf.constant(1.3),
        top_k=tf.constant(0),
        top_p=tf.constant(0.8),
        seed=tf.constant(11),
        max_new_tokens=tf.constant(NEW_TOKENS),
    )
    assert [t.decode() for t in python["text"].numpy()] == expected


def test_text_alone_gets_the_export_defaults(served):
    server, lm, tokenizer, _ = served
    default = server.predict({"instances": TEXTS})
    # The defaults: top_p=0.9, temperature 1, no top-k, seed 0.
    expected = expected_texts(lm, tokenizer, TEXTS, TopPSampler(p=0.9), 0)
    assert default["predictions"] == expected
    empty = {name: [] for name in GREEDY}
    response = server.predict(
        generate_request(TEXTS, **empty, max_new_tokens=[])
    )
    assert response["outputs"] == expected
    # Only top_k set: greedy, the other options at their defaults.
    response = server.predict(
        generate_request(
            TEXTS, **{**empty, "top_k": 1}, max_new_tokens=NEW_TOKENS
        )
    )
    assert response["outputs"] == expected_texts(lm, tokenizer, TEXTS, "greedy")


BAD_OPTIONS = [
    ("top_p", 0.0, "expected a float in (0, 1]. Received: top_p=0"),
    ("top_p", 1.5, "expected a float in (0, 1]. Received: top_p=1.5"),
    ("temperature", 0.0, "expected a finite float > 0"),
    ("temperature", -1.0, "expected a finite float > 0"),
    ("max_new_tokens", 0, "expected an integer in [1, 5]"),
    ("max_new_tokens", -3, "Received: max_new_tokens=-3"),
    ("max_new_tokens", 6, "Received: max_new_tokens=6"),
    ("top_k", -1, "expected an integer >= 0. Received: top_k=-1"),
    ("seed", -1, "Received: seed=-1"),
    ("top_p", [[0.9]], "Received: shape=[1, 1]"),
    ("top_k", [1, 2], "Received: shape=[2] with batch_size=1"),
]


def test_invalid_options_are_refused_and_the_server_keeps_serving(served):
    server, lm, tokenizer, _ = served
    valid = {**GREEDY, "max_new_tokens": NEW_TOKENS}
    good = server.predict(generate_request(TEXTS[:1], **valid))["outputs"]
    assert good == expected_texts(lm, tokenizer, TEXTS[:1], "greedy")
    for name, value, detail in BAD_OPTIONS:
        request = generate_request(TEXTS[:1], **{**valid, name: value})
        response = server.predict(request)
        assert response.get("code") == "INVALID_ARGUMENT", (name, response)
        assert f"input `{name}`" in response["error"], response["error"]
        assert detail in response["error"], response["error"]
        # The same session answers a valid request, correctly.
        again = server.predict(generate_request(TEXTS[:1], **valid))
        assert again["outputs"] == good, (name, value)
    # A wrong dtype is refused by the request parser, as TF Serving does.
    response = server.predict(
        generate_request(TEXTS[:1], **{**valid, "top_k": 1.5})
    )
    assert response["code"] == "INVALID_ARGUMENT"
    # A malformed text batch names `text`.
    response = server.predict(generate_request("one string", **valid))
    assert "input `text`" in response["error"]
    assert server.predict({"instances": TEXTS[:1]})["predictions"]


def test_record_describes_the_signatures(served):
    _, _, _, path = served
    (record,) = published_versions(os.path.dirname(path))
    assert record["note"] == "tiny"
    assert record["max_new_tokens"] == NEW_TOKENS
    assert record["stop_token_ids"] == list(STOP)
    assert record["prompt"]["max_prompt_length"] == PROMPT_LENGTH
    assert "last" in record["prompt"]["longer_prompts"]
    generate = record["signatures"]["generate"]
    assert generate["defaults"] == {
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 0.9,
        "seed": 0,
        "max_new_tokens": NEW_TOKENS,
    }
    assert sorted(generate["inputs"]) == sorted(
        ["text", "max_new_tokens", *GREEDY]
    )
    assert record["signatures"]["serving_default"]["inputs"] == {
        "text": "string (batch_size,)"
    }
    json.dumps(record)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"temperature": 0.0}, "temperature"),
        ({"seed": 2**31}, "seed"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_prompt_length": 0}, "max_prompt_length"),
        ({"stop_token_ids": 99}, "stop_token_ids"),
    ],
)
def test_invalid_export_arguments_name_the_argument(tmp_path, kwargs, name):
    lm = CausalLM(len(VOCAB), 1, 8, 2, 16)
    tokenizer = WordPieceTokenizer(VOCAB)
    arguments = {"max_prompt_length": 4, "max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        export_causal_lm(lm, tokenizer, str(tmp_path), **arguments)
    assert not os.listdir(tmp_path)  # refused before writing


def test_the_tokenizer_must_fit_the_model(tmp_path):
    tokenizer = WordPieceTokenizer(VOCAB)
    small = CausalLM(len(VOCAB) - 1, 1, 8, 2, 16)
    with pytest.raises(ValueError, match="argument `tokenizer`"):
        export_causal_lm(small, tokenizer, str(tmp_path), 4, 2)
    with pytest.raises(TypeError, match="argument `causal_lm`"):
        export_causal_lm("lm", tokenizer, str(tmp_path), 4, 2)
