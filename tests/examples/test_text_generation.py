"""`examples/text_generation.py` end to end on a tiny synthetic text."""

import gzip
import json
import os
import random

import keras
import numpy as np
import pytest

import keras_selfattn  # noqa: F401  (registers the layers for load_model)
from keras_selfattn.recipes import LanguageModelOptions
from keras_selfattn.recipes import evaluate_perplexity
from keras_selfattn.recipes import read_language_model_data
from keras_selfattn.recipes import sample_continuations
from tests.examples.events import read_scalars
from tests.examples.support import InterruptAfter
from tests.examples.support import Interrupted
from tests.examples.support import copy_run
from tests.examples.support import load_example
from tests.examples.support import snapshot

# A tiny grammar: "<Name> <verb> the <noun> ." sentences, 2-4 a document.
# Cased names, so the samples show that the case is kept.
NAMES = ["Tom", "Anna", "Mia"]
VERBS = ["sees", "likes", "feeds"]
NOUNS = ["cat", "dog", "bird", "fish"]

TINY = [
    "--vocabulary-size",
    "60",
    "--sequence-length",
    "16",
    "--hidden-dim",
    "32",
    "--num-heads",
    "2",
    "--ff-dim",
    "64",
    "--num-layers",
    "1",
    "--dropout",
    "0.0",
    "--batch-size",
    "16",
    "--learning-rate",
    "0.01",
    "--verbose",
    "0",
    "--max-new-tokens",
    "10",
    "--num-samples",
    "2",
    "--prompt-words",
    "2",
    # No time budget: the steps decide.
    "--time-budget-minutes",
    "60",
]


def _write_text(folder, rows=(160, 24, 24)):
    rng = random.Random(3)
    os.makedirs(folder, exist_ok=True)
    for split, n in zip(("train", "validation", "test"), rows, strict=True):
        with gzip.open(os.path.join(folder, f"{split}.tsv.gz"), "wt") as f:
            f.write("text\tlabel\n")
            for _ in range(n):
                sentences = [
                    f"{rng.choice(NAMES)} {rng.choice(VERBS)} the "
                    f"{rng.choice(NOUNS)} ."
                    for _ in range(rng.randint(2, 4))
                ]
                # The IMDB reviews' line breaks, which the example removes.
                f.write("<br /><br />".join(sentences) + "\t0\n")
    return folder


def _run(data, out, *flags, callbacks=()):
    args = ["--data-dir", data, "--output-dir", out, *TINY, *flags]
    return load_example("text_generation").main(args, callbacks=callbacks)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_generation")
    data = _write_text(str(root / "data"))
    out = str(root / "out")
    keras.utils.set_random_seed(7)
    metrics = _run(data, out, "--steps-per-epoch", "15", "--epochs", "4")
    return out, data, metrics


def _read(data, out):
    """The texts, cleaned as the example does, and the run's own tokenizer
    (its saved vocabulary, as a resumed run reads it)."""
    options = LanguageModelOptions(vocabulary_size=60, sequence_length=16)
    return read_language_model_data(
        data,
        out,
        options,
        preprocess=load_example("text_generation").clean_text,
        reuse_vocabulary=True,
    )


def test_perplexity_falls_well_below_uniform(trained):
    _, _, metrics = trained
    losses = metrics["train_loss"]
    assert metrics["steps"] == 60 and len(losses) == 4
    assert losses[-1] < 0.5 * losses[0], losses
    # A uniform guess over the vocabulary has perplexity V; the grammar
    # leaves about 3 choices a word. Measured: ~3.
    vocabulary_size = metrics["vocabulary_size"]
    assert metrics["test_perplexity"] < 0.2 * vocabulary_size, metrics
    assert metrics["test_loss"] == pytest.approx(
        np.log(metrics["test_perplexity"])
    )
    assert metrics["eval_rows"] == 24


def test_the_model_learned_word_order(trained):
    # A control: the same test tokens, shuffled within each window, are
    # much less likely under the trained model than the real text.
    out, data, metrics = trained
    model = keras.saving.load_model(os.path.join(out, "language_model.keras"))
    lm_data = _read(data, out)
    windows = lm_data.windows("test", 16)
    real = evaluate_perplexity(model, windows, batch_size=5)
    assert real["perplexity"] == pytest.approx(metrics["test_perplexity"])
    assert real["tokens"] == metrics["test_tokens"]
    rng = np.random.default_rng(0)
    shuffled = windows.copy()
    for row in shuffled:
        length = int(np.count_nonzero(row))
        row[1:length] = rng.permutation(row[1:length])
    control = evaluate_perplexity(model, shuffled, batch_size=5)
    assert control["tokens"] == real["tokens"]
    assert control["perplexity"] > 3 * real["perplexity"], (control, real)


def test_metrics_json_and_files(trained):
    out, _, metrics = trained
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    for key in (
        "test_perplexity",
        "test_loss",
        "test_tokens",
        "train_loss",
        "val_loss",
        "steps",
        "steps_per_epoch",
        "train_windows",
        "samples",
        "model_path",
        "config",
    ):
        assert key in saved, key
    assert saved["test_perplexity"] == pytest.approx(metrics["test_perplexity"])
    assert saved["key_metrics"] == ["test_perplexity"]
    assert saved["train_rows"] == 160 and saved["steps_per_epoch"] == 15
    assert len(saved["val_loss"]) == 4
    assert os.path.exists(os.path.join(out, "vocabulary.txt"))
    # Training finished, so the interruption backup was cleaned up.
    assert not os.path.exists(os.path.join(out, "backup"))


def test_tensorboard_logs(trained):
    out, _, metrics = trained
    train = read_scalars(os.path.join(out, "logs", "train"))
    validation = read_scalars(os.path.join(out, "logs", "validation"))
    # One point per epoch of --steps-per-epoch steps.
    assert train["epoch_loss"] == pytest.approx(metrics["train_loss"])
    assert validation["epoch_loss"] == pytest.approx(metrics["val_loss"])
    assert validation["epoch_loss"][-1] < validation["epoch_loss"][0]


def test_saved_model_reloads_with_equal_logits(trained):
    out, data, _ = trained
    model = keras.saving.load_model(
        os.path.join(out, "language_model.keras"), safe_mode=True
    )
    assert isinstance(model, keras_selfattn.models.CausalLM)
    lm_data = _read(data, out)
    windows = lm_data.windows("test", 16)[:4, :-1]
    again = keras.saving.load_model(os.path.join(out, "language_model.keras"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(windows)),
        keras.ops.convert_to_numpy(again(windows)),
        atol=1e-6,
    )
    # The weights are the trained ones: the logits are not those of a
    # fresh model of the same config.
    fresh = keras_selfattn.models.CausalLM.from_config(model.get_config())
    assert not np.allclose(
        keras.ops.convert_to_numpy(fresh(windows)),
        keras.ops.convert_to_numpy(model(windows)),
        atol=1e-3,
    )


def test_samples_keep_case_follow_the_grammar_and_are_seeded(trained):
    out, data, metrics = trained
    samples = metrics["samples"]
    assert [s["prompt"] for s in samples] == [
        " ".join(s["prompt"].split()[:2]) for s in samples
    ]
    for sample in samples:
        greedy = sample["greedy"]
        assert greedy.startswith(sample["prompt"]), sample
        # Cased, punctuation re-attached, no markup or special tokens.
        assert any(name in greedy for name in NAMES), sample
        assert "tom" not in greedy and "anna" not in greedy
        assert " ." not in greedy and "[" not in greedy and "<" not in greedy
        # The grammar: "the" comes before a noun.
        assert "the " + greedy.split("the ")[-1].split()[0].rstrip(".") in {
            f"the {noun}" for noun in NOUNS
        }, sample
        assert isinstance(sample["top_p"], str)
    # The seeded sampler draws the same text again from the saved model.
    model = keras.saving.load_model(os.path.join(out, "language_model.keras"))
    lm_data = _read(data, out)
    options = LanguageModelOptions(max_new_tokens=10, seed=42)
    again = sample_continuations(
        model, lm_data.tokenizer, [s["prompt"] for s in samples], options
    )
    assert again == samples


def test_rerun_on_a_finished_run_trains_nothing(trained, tmp_path, capsys):
    out, data, metrics = trained
    run = copy_run(out, tmp_path / "run")
    before = snapshot(run)
    again = _run(data, run, "--epochs", "1")
    assert snapshot(run) == before
    assert again["test_perplexity"] == pytest.approx(metrics["test_perplexity"])
    printed = capsys.readouterr().out
    assert f"The run in {run} is finished: test_perplexity" in printed


def test_resumes_after_an_interruption(tmp_path):
    data = _write_text(str(tmp_path / "data"), rows=(40, 8, 8))
    out = str(tmp_path / "out")
    flags = ["--epochs", "3", "--steps-per-epoch", "4", "--num-samples", "0"]
    # Interrupted in the middle of the third epoch.
    with pytest.raises(Interrupted):
        _run(data, out, *flags, callbacks=[InterruptAfter(10)])
    assert os.path.isdir(os.path.join(out, "backup"))
    metrics = _run(data, out, *flags)
    assert metrics["initial_epoch"] == 2
    assert metrics["epochs"] == [2]
    # The optimizer's step counter came back with the weights: 2 epochs + 1.
    assert metrics["steps"] == 3 * 4
    assert metrics["samples"] == []


def test_no_data_dir_names_the_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_SELFATTN_DATA", raising=False)
    with pytest.raises(ValueError, match="Received no --data-dir"):
        load_example("text_generation").main(
            ["--output-dir", str(tmp_path / "out")]
        )


@pytest.mark.shared_data
def test_on_a_slice_of_imdb(shared_data, tmp_path, monkeypatch):
    # The default data: the shared IMDB reviews, found through the
    # environment variable.
    monkeypatch.setenv("KERAS_SELFATTN_DATA", shared_data)
    metrics = load_example("text_generation").main(
        [
            "--output-dir",
            str(tmp_path),
            "--max-train-rows",
            "300",
            "--max-validation-rows",
            "20",
            "--max-eval-rows",
            "20",
            "--vocabulary-size",
            "400",
            "--vocabulary-rows",
            "100",
            "--sequence-length",
            "32",
            "--hidden-dim",
            "32",
            "--num-heads",
            "2",
            "--ff-dim",
            "64",
            "--num-layers",
            "1",
            "--learning-rate",
            "0.01",
            "--max-steps",
            "20",
            "--steps-per-epoch",
            "20",
            "--num-samples",
            "1",
            "--max-new-tokens",
            "5",
            "--verbose",
            "0",
        ]
    )
    assert metrics["steps"] == 20 and metrics["eval_rows"] == 20
    assert metrics["train_rows"] == 300
    # Twenty steps teach the frequent words: the perplexity falls well
    # below the uniform guess (V), where an untrained model stays.
    vocabulary_size = metrics["vocabulary_size"]
    assert metrics["test_perplexity"] < 0.5 * vocabulary_size, metrics
    assert "<br" not in metrics["samples"][0]["greedy"]
