"""The language-model recipe's steps: windows, exact perplexity, options.

The whole pipeline runs in `train_language_model`'s docstring example and,
on a learnable toy grammar, in `tests/examples/test_text_generation.py`.
"""

import argparse
import json
import os
import shutil

import keras
import numpy as np
import pytest
from keras import ops

from keras_selfattn.models import CausalLM
from keras_selfattn.models import next_token_batch
from keras_selfattn.recipes import LanguageModelData
from keras_selfattn.recipes import LanguageModelOptions
from keras_selfattn.recipes import LanguageModelRun
from keras_selfattn.recipes import add_language_model_arguments
from keras_selfattn.recipes import build_language_model
from keras_selfattn.recipes import evaluate_perplexity
from keras_selfattn.recipes import load_language_model_run
from keras_selfattn.recipes import read_language_model_data
from keras_selfattn.recipes import train_language_model
from keras_selfattn.text import WordPieceTokenizer

VOCABULARY = ["[PAD]", "[UNK]", "[START]", "[END]", "a", "b", "c", "d"]


def _data(texts):
    tokenizer = WordPieceTokenizer(
        VOCABULARY, add_start_token=True, add_end_token=True
    )
    return LanguageModelData(
        splits={"train": texts, "validation": [], "test": texts},
        tokenizer=tokenizer,
    )


def test_windows_overlap_by_one_so_every_token_is_a_target_once():
    data = _data(["a b c d a b c", "d", ""])
    windows = data.windows("train", sequence_length=3)
    # [START] a b c d a b c [END]: 9 ids, 8 targets -> 3 windows of 4 ids.
    assert windows.tolist() == [
        [2, 4, 5, 6],
        [6, 7, 4, 5],
        [5, 6, 3, 0],
        [2, 7, 3, 0],  # "d"
        [2, 3, 0, 0],  # "": the end token follows the start token
    ]
    targets = windows[:, 1:]
    assert int(np.count_nonzero(targets)) == 8 + 2 + 1
    assert data.windows("train", 3, limit=1).shape == (3, 4)


def _exact_perplexity(model, windows):
    """exp(mean NLL over the real targets), token by token, in NumPy."""
    total, count = 0.0, 0
    for row in windows:
        logits = ops.convert_to_numpy(model(row[None, :-1]))[0]  # (T, V)
        logits = logits.astype("float64")
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        for t, target in enumerate(row[1:]):
            if target != 0:
                total -= log_probs[t, target]
                count += 1
    return np.exp(total / count), count


def test_perplexity_is_exact_over_real_tokens_whatever_the_batches():
    options = LanguageModelOptions(
        num_layers=1, hidden_dim=8, num_heads=2, ff_dim=16
    )
    model = build_language_model(8, options, total_steps=1)
    # Two full windows, then three short ones: the batches of 2 hold 8, 4
    # and 1 real targets.
    windows = np.array(
        [
            [2, 4, 5, 6, 7],
            [7, 6, 5, 4, 3],
            [2, 5, 3, 0, 0],
            [2, 6, 3, 0, 0],
            [2, 3, 0, 0, 0],
        ]
    )
    expected, count = _exact_perplexity(model, windows)
    for batch_size in (1, 2, 5):
        scores = evaluate_perplexity(model, windows, batch_size)
        assert scores["tokens"] == count == 13
        assert scores["perplexity"] == pytest.approx(expected, rel=1e-5)
        assert scores["loss"] == pytest.approx(np.log(expected), rel=1e-5)
    # The training loss ignores padding too: on one batch it is the mean
    # over the real target tokens.
    inputs, targets, weights = next_token_batch(windows)
    loss = model.evaluate(
        inputs, targets, sample_weight=weights, batch_size=5, verbose=0
    )
    assert loss == pytest.approx(np.log(expected), rel=1e-5)
    # A mean of per-batch means would differ: the check above can fail.
    batch_means = []
    for start in range(0, 5, 2):
        part = windows[start : start + 2]
        batch_means.append(np.log(_exact_perplexity(model, part)[0]))
    assert abs(np.exp(np.mean(batch_means)) - expected) > 1e-3 * expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": ""}, "`name`, expected a non-empty string"),
        ({"text_column": ""}, "`text_column`, expected a non-empty"),
        ({"sequence_length": 0}, "`sequence_length`, expected a positive"),
        ({"vocabulary_rows": 0}, "`vocabulary_rows`, expected a positive"),
        ({"steps_per_epoch": 0}, "`steps_per_epoch`, expected a positive"),
        ({"sampler": "beam"}, "`sampler`, expected one of"),
        ({"top_p": 0.0}, "`top_p`, expected a float in"),
        ({"temperature": 0.0}, "`temperature`, expected a positive"),
        ({"prompts": "The film"}, "`prompts`, expected a sequence"),
        ({"num_samples": -1}, "`num_samples`, expected a non-negative"),
        ({"dropout": 1.0}, "`dropout`"),
        ({"tokenizer": "bpe"}, "`tokenizer`, expected one of"),
        # SentencePiece's 4 special tokens and 256 byte pieces.
        ({"vocabulary_size": 260}, "`vocabulary_size`, expected an integer "),
        ({"max_prompt_length": 0}, "`max_prompt_length`, expected a posit"),
        ({"seed": 2**31}, r"`seed`, expected an integer in \[0, 2147483647\]"),
    ],
)
def test_bad_options_fail_before_any_data_is_read(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_language_model(
            str(tmp_path / "no_data"), str(tmp_path / "out"), **kwargs
        )
    assert not (tmp_path / "out").exists()


def test_unknown_option_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="no_such_option"):
        train_language_model(
            str(tmp_path), str(tmp_path / "out"), no_such_option=1
        )


def test_flags_are_the_options():
    parser = argparse.ArgumentParser()
    add_language_model_arguments(parser, hidden_dim=64)
    args = parser.parse_args(["--prompt", "Hi", "--no-lower-case"])
    options = LanguageModelOptions(**vars(args))
    assert options.hidden_dim == 64 and options.prompts == ("Hi",)
    assert options.lower_case is False
    assert options.tokenizer == "sentencepiece"
    args = parser.parse_args(
        ["--tokenizer", "wordpiece", "--max-prompt-length", "8"]
    )
    assert (args.tokenizer, args.max_prompt_length) == ("wordpiece", 8)
    with pytest.raises(TypeError, match="no_such_field"):
        add_language_model_arguments(argparse.ArgumentParser(), no_such_field=1)


def test_a_resumed_run_keeps_the_tokenizer_it_was_trained_with(tmp_path):
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.tsv").write_text("text\na b c\n")
    out = tmp_path / "out"
    out.mkdir()
    # An interrupted WordPiece run, resumed with the default tokenizer.
    (out / "vocabulary.txt").write_text("\n".join(VOCABULARY) + "\n")
    with pytest.raises(ValueError, match='`tokenizer`, expected "wordpiece"'):
        read_language_model_data(
            str(tmp_path),
            str(out),
            LanguageModelOptions(),
            reuse_vocabulary=True,
        )
    assert not (out / "tokenizer.model").exists()
    data = read_language_model_data(
        str(tmp_path),
        str(out),
        LanguageModelOptions(tokenizer="wordpiece"),
        reuse_vocabulary=True,
    )
    assert data.tokenizer.vocabulary_size == len(VOCABULARY)


def test_load_language_model_run_gives_back_what_the_run_trained(tmp_path):
    texts = ["the cat sat .", "the dog ran .", "a cat ran ."] * 6
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split in ("train", "validation", "test"):
        (data_dir / f"{split}.tsv").write_text("text\n" + "\n".join(texts))
    trained_dir = tmp_path / "trained"
    metrics = train_language_model(
        str(data_dir),
        str(trained_dir),
        name="tiny",
        tokenizer="wordpiece",
        lower_case=True,
        vocabulary_size=30,
        sequence_length=8,
        hidden_dim=8,
        num_heads=2,
        ff_dim=8,
        num_layers=1,
        epochs=1,
        batch_size=4,
        max_new_tokens=2,
        num_samples=1,
        verbose=0,
    )
    # The folder may move after training: the files beside metrics.json.
    run_dir = str(tmp_path / "moved")
    shutil.move(str(trained_dir), run_dir)
    run = load_language_model_run(run_dir, sequence_length=12)
    assert isinstance(run, LanguageModelRun) and run.run_dir == run_dir
    assert run.metrics["steps"] == metrics["steps"]
    trained = keras.saving.load_model(
        os.path.join(run_dir, os.path.basename(metrics["model_path"]))
    )
    for got, want in zip(run.model.weights, trained.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    # The ids the LM was trained on (start and end tokens, lower-cased),
    # padded to the asked length.
    data = read_language_model_data(
        str(data_dir),
        run_dir,
        LanguageModelOptions(tokenizer="wordpiece", lower_case=True),
        reuse_vocabulary=True,
    )
    want = data.token_ids(["The Cat sat ."])[0]
    got = run.tokenizer(["The Cat sat ."]).numpy()[0]
    assert got.shape == (12,) and len(want) < 12
    np.testing.assert_array_equal(got[: len(want)], want)
    assert (got[len(want) :] == 0).all()


def _fake_run(folder, tokenizer=None, vocabulary=VOCABULARY, **model_args):
    """A run folder by hand: a tiny untrained `CausalLM` `.keras`, a
    WordPiece vocabulary, and a `metrics.json` naming them."""
    model = CausalLM(
        vocab_size=len(VOCABULARY),
        num_layers=1,
        hidden_dim=8,
        num_heads=2,
        ff_dim=8,
        **model_args,
    )
    model(np.ones((1, 4), "int32"))
    model.save(os.path.join(folder, "lm.keras"))
    (folder / "vocabulary.txt").write_text("\n".join(vocabulary) + "\n")
    config = {"sequence_length": 16}
    if tokenizer is not None:
        config["tokenizer"] = tokenizer
    metrics = {"model_path": "elsewhere/lm.keras", "config": config}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_load_language_model_run_refuses_what_is_not_a_finished_run(
    tmp_path,
):
    with pytest.raises(FileNotFoundError, match="`run_dir`.*no such folder"):
        load_language_model_run(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="`--from-lm`.*did not finish"):
        load_language_model_run(str(tmp_path), argument="--from-lm")
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="names no model_path"):
        load_language_model_run(str(tmp_path))
    (tmp_path / "metrics.json").write_text('{"model_path": "x/lm.keras"}')
    with pytest.raises(FileNotFoundError, match="lm.keras is missing"):
        load_language_model_run(str(tmp_path))
    with pytest.raises(TypeError, match="`run_dir`, expected a path"):
        load_language_model_run(None)
    with pytest.raises(ValueError, match="`sequence_length`"):
        load_language_model_run(str(tmp_path), sequence_length=0)
    # A .keras file that holds another kind of model.
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    other.save(str(tmp_path / "lm.keras"))
    with pytest.raises(ValueError, match="holds a Sequential, not a CausalLM"):
        load_language_model_run(str(tmp_path))


def test_load_language_model_run_checks_tokenizer_and_lengths(tmp_path):
    run_dir = _fake_run(tmp_path, position_embedding="learned", max_length=12)
    run = load_language_model_run(run_dir, sequence_length=12)
    assert run.tokenizer.sequence_length == 12
    with pytest.raises(ValueError, match="`sequence_length`, expected at most"):
        load_language_model_run(run_dir, sequence_length=13)
    os.remove(os.path.join(run_dir, "vocabulary.txt"))
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        load_language_model_run(run_dir)
    (tmp_path / "vocabulary.txt").write_text("\n".join(VOCABULARY[:6]) + "\n")
    with pytest.raises(ValueError, match="tokenizer has 6 tokens but"):
        load_language_model_run(run_dir)


def test_load_language_model_run_takes_the_tokenizer_it_recorded(tmp_path):
    # Trained with SentencePiece, then again with WordPiece (--overwrite):
    # both files are there; the run's config says which is its own.
    run_dir = _fake_run(tmp_path, tokenizer="wordpiece")
    (tmp_path / "tokenizer.model").write_bytes(b"a stale model")
    run = load_language_model_run(run_dir)
    assert isinstance(run.tokenizer, WordPieceTokenizer)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["config"]["tokenizer"] = "sentencepiece"
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    os.remove(tmp_path / "tokenizer.model")
    with pytest.raises(FileNotFoundError, match="no tokenizer.model"):
        load_language_model_run(run_dir)
