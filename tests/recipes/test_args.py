"""`keras_selfattn.recipes.args`: the options, their one place of
defaults, the flags made from them, and the optional-module check."""

import argparse
import dataclasses
import importlib.util
import sys

import pytest

from keras_selfattn import recipes
from keras_selfattn.recipes import Seq2SeqOptions
from keras_selfattn.recipes import TrainingOptions

# Seq2SeqOptions fields that an example sets in code, not by a flag.
NOT_FLAGS = {
    "name",
    "source_lower_case",
    "target_lower_case",
    "attention_source_tokens",
}


def _field_defaults(options_class):
    return {f.name: f.default for f in dataclasses.fields(options_class)}


def _seq2seq_parser(**defaults):
    parser = argparse.ArgumentParser()
    recipes.add_seq2seq_arguments(parser, **defaults)
    recipes.add_training_arguments(parser)
    return parser


# The options and their defaults


def test_training_flags_take_their_defaults_from_the_options():
    parser = argparse.ArgumentParser()
    recipes.add_training_arguments(parser)
    assert vars(parser.parse_args([])) == _field_defaults(TrainingOptions)


def test_seq2seq_flags_take_their_defaults_from_the_options():
    args = vars(_seq2seq_parser().parse_args([]))
    defaults = _field_defaults(Seq2SeqOptions)
    # Every field is a flag but those set in code, with the field's default.
    assert set(args) == set(defaults) - NOT_FLAGS
    assert args == {k: v for k, v in defaults.items() if k not in NOT_FLAGS}
    # So parsed flags are options as they are.
    assert Seq2SeqOptions(**args) == Seq2SeqOptions()


def test_an_example_overrides_a_default_once():
    args = _seq2seq_parser(source_length=192, source_column="dialogue")
    args = args.parse_args(["--embed-dim", "32", "--no-shared-vocabulary"])
    assert (args.source_length, args.source_column) == (192, "dialogue")
    assert (args.embed_dim, args.target_length) == (32, 32)
    assert args.shared_vocabulary is False
    assert (
        _seq2seq_parser().parse_args(["--shared-vocabulary"]).shared_vocabulary
    )


def test_unknown_default_is_a_type_error():
    with pytest.raises(TypeError, match="unknown defaults \\['epoch'\\]"):
        recipes.add_training_arguments(argparse.ArgumentParser(), epoch=3)
    with pytest.raises(TypeError, match="fields of Seq2SeqOptions"):
        recipes.add_seq2seq_arguments(argparse.ArgumentParser(), heads=3)


def test_invalid_default_fails_when_the_parser_is_built():
    with pytest.raises(ValueError, match="`batch_size`, expected a positive"):
        recipes.add_training_arguments(argparse.ArgumentParser(), batch_size=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"verbose": 3}, ValueError, "`verbose`, expected one of"),
        ({"seed": -1}, ValueError, "`seed`, expected a non-negative"),
        ({"overwrite": 1}, TypeError, "`overwrite`"),
        ({"max_train_rows": 0}, ValueError, "`max_train_rows`, expected"),
        ({"vocabulary_size": 0}, ValueError, "`vocabulary_size`, expected"),
        ({"source_length": 0}, ValueError, "`source_length`, expected"),
        ({"shared_vocabulary": "yes"}, TypeError, "`shared_vocabulary`"),
    ],
)
def test_options_check_their_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        Seq2SeqOptions(**kwargs)


def test_options_are_frozen_and_keyword_only():
    options = TrainingOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.epochs = 3
    with pytest.raises(TypeError):
        TrainingOptions(3)
    assert dataclasses.replace(options, epochs=3).epochs == 3


# require_modules


def test_require_modules_finds_installed_ones():
    assert recipes.require_modules(["json", "numpy"]) == ["json", "numpy"]
    assert recipes.require_modules("json") == ["json"]


def test_require_modules_names_a_missing_module(monkeypatch):
    # `None` in sys.modules: the module counts as not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as error:
        recipes.require_modules(["json", "matplotlib"])
    message = str(error.value)
    assert message == (
        "Missing optional module matplotlib; install it with:\n"
        'pip install "keras-selfattn[examples]"'
    )


def test_require_modules_names_every_missing_module(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "broken":
            raise ValueError("broken.__spec__ is None")
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(SystemExit, match="modules no_such_mod, broken;"):
        recipes.require_modules(
            ["no_such_mod", "json", "broken"], install="pip install x"
        )
    with pytest.raises(SystemExit, match="install them with:\npip install x"):
        recipes.require_modules(["no_such_mod", "broken"], "pip install x")


# add_training_arguments


def _parser():
    parser = argparse.ArgumentParser()
    group = recipes.add_training_arguments(
        parser, epochs=7, batch_size=16, learning_rate=2e-4
    )
    return parser, group


def test_training_arguments_defaults():
    parser, _ = _parser()
    args = vars(parser.parse_args([]))
    assert args == {
        "epochs": 7,
        "max_steps": None,
        "time_budget_minutes": None,
        "batch_size": 16,
        "learning_rate": 2e-4,
        "lr_schedule": "constant",
        "warmup_steps": 0,
        "seed": 42,
        "strategy": "default",
        "verbose": 1,
        "overwrite": False,
    }


def test_training_arguments_parse_and_extend():
    parser, group = _parser()
    group.add_argument("--patience", type=int, default=None)
    args = parser.parse_args(
        [
            "--lr-schedule",
            "cosine",
            "--warmup-steps",
            "5",
            "--max-steps",
            "9",
            "--time-budget-minutes",
            "0.5",
            "--strategy",
            "mirrored",
            "--verbose",
            "2",
            "--patience",
            "3",
            "--overwrite",
        ]
    )
    assert (args.lr_schedule, args.warmup_steps) == ("cosine", 5)
    assert (args.max_steps, args.time_budget_minutes) == (9, 0.5)
    assert (args.strategy, args.verbose, args.patience) == ("mirrored", 2, 3)
    assert args.overwrite is True


@pytest.mark.parametrize(
    "flags",
    [["--lr-schedule", "linear"], ["--strategy", "tpu"], ["--verbose", "3"]],
)
def test_training_arguments_enforce_choices(flags, capsys):
    parser, _ = _parser()
    with pytest.raises(SystemExit):
        parser.parse_args(flags)
    assert "invalid choice" in capsys.readouterr().err
