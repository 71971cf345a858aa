"""`train_seq2seq`: argument checks that fail before any training.

The whole pipeline runs in its docstring example and, on learnable toy
data, in `tests/examples/test_translation.py` and `test_summarization.py`.
"""

import os

import pytest

from keras_selfattn.models import train_seq2seq


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
