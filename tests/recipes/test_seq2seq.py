"""The seq2seq recipe: argument checks that fail before any training, its
steps' documentation, and the names that moved out of `models`.

The whole pipeline runs in `train_seq2seq`'s docstring example and, on
learnable toy data, in `tests/examples/test_translation.py` and
`test_summarization.py`.
"""

import os

import pytest

import keras_selfattn
from keras_selfattn.recipes import Seq2SeqOptions
from keras_selfattn.recipes import seq2seq
from keras_selfattn.recipes import train_seq2seq


def _evaluate(sources, hypotheses, references):
    return {}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"evaluate": None}, TypeError, "`evaluate`, expected a callable"),
        ({"name": ""}, ValueError, "`name`, expected a non-empty string"),
        ({"decoding": "sample"}, ValueError, "`decoding`, expected one of"),
        ({"beam_width": 0}, ValueError, "`beam_width`, expected a positive"),
        ({"length_penalty": -1}, ValueError, "`length_penalty`, expected"),
        (
            {"no_repeat_ngram_size": -2},
            ValueError,
            "`no_repeat_ngram_size`, expected a non-negative",
        ),
        ({"max_eval_rows": 0}, ValueError, "`max_eval_rows`, expected"),
        (
            {"attention_source_tokens": 0},
            ValueError,
            "`attention_source_tokens`, expected",
        ),
        ({"batch_size": 0}, ValueError, "`batch_size`, expected a positive"),
        ({"epochs": 0}, ValueError, "`epochs`, expected a positive"),
        ({"max_steps": 0}, ValueError, "`max_steps`, expected a positive"),
        (
            {"time_budget_minutes": -1},
            ValueError,
            "`time_budget_minutes`, expected a float >= 0",
        ),
        ({"learning_rate": 0}, ValueError, "`learning_rate`, expected"),
        ({"lr_schedule": "linear"}, ValueError, "`lr_schedule`, expected"),
        ({"warmup_steps": -1}, ValueError, "`warmup_steps`, expected"),
        ({"strategy": "tpu"}, ValueError, "`strategy`, expected one of"),
        (
            {"copy_attention": True},
            ValueError,
            "`copy_attention`, expected False unless shared_vocabulary",
        ),
    ],
)
def test_bad_arguments_fail_before_reading_data(kwargs, error, match, tmp_path):
    missing = str(tmp_path / "no-data")
    out = str(tmp_path / "out")
    kwargs = {"evaluate": _evaluate, **kwargs}
    with pytest.raises(error, match=match):
        train_seq2seq(missing, out, **kwargs)
    assert not os.path.exists(out)


def test_missing_split_files_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No train file"):
        train_seq2seq(str(tmp_path), str(tmp_path / "out"), _evaluate)


def test_options_and_overrides_combine_before_reading_data(tmp_path):
    out = str(tmp_path / "out")
    options = Seq2SeqOptions(shared_vocabulary=True, copy_attention=True)
    # The override makes the options invalid: caught before any reading.
    with pytest.raises(ValueError, match="`copy_attention`, expected False"):
        train_seq2seq(
            "no-data", out, _evaluate, options, shared_vocabulary=False
        )
    with pytest.raises(TypeError, match="embed_size"):
        train_seq2seq("no-data", out, _evaluate, options, embed_size=8)
    assert not os.path.exists(out)


def test_steps_are_documented():
    for name in seq2seq.__all__:
        doc = getattr(seq2seq, name).__doc__
        assert "Args:" in doc, name
        if not isinstance(getattr(seq2seq, name), type):
            assert "Returns:" in doc, name


def test_seq2seq_names_are_reachable_from_the_package():
    for name in seq2seq.__all__:
        assert getattr(keras_selfattn.recipes, name) is getattr(seq2seq, name)


@pytest.mark.parametrize("name", ["train_seq2seq", "add_seq2seq_arguments"])
def test_moved_model_names_say_where_they_went(name):
    with pytest.raises(AttributeError, match=f"keras_selfattn.recipes.{name}"):
        getattr(keras_selfattn.models, name)
