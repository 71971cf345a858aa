"""`examples/text_generation.py` end to end on a tiny synthetic text."""

import gzip
import json
import os
import random

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops for Python loads

import keras_selfattn  # noqa: F401  (registers the layers for load_model)
from keras_selfattn.export import published_versions
from keras_selfattn.export import serve_with_c_api
from keras_selfattn.models import tidy_spacing
from keras_selfattn.recipes import LanguageModelOptions
from keras_selfattn.recipes import evaluate_perplexity
from keras_selfattn.recipes import language_model as lm_recipe
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
    # WordPiece: a 60-token vocabulary (SentencePiece needs over 260).
    "--tokenizer",
    "wordpiece",
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
    options = LanguageModelOptions(
        tokenizer="wordpiece", vocabulary_size=60, sequence_length=16
    )
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
    out, data, metrics = trained
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
    assert saved["key_metrics"] == [
        "test_perplexity",
        "test_bits_per_character",
    ]
    assert saved["train_rows"] == 160 and saved["steps_per_epoch"] == 15
    assert len(saved["val_loss"]) == 4
    assert os.path.exists(os.path.join(out, "vocabulary.txt"))
    # Bits per character: the summed loss over the scored texts' own
    # characters (the 24 test rows, cleaned as the example does).
    clean = load_example("text_generation").clean_text
    texts = _read(data, out).splits["test"]
    assert [clean(t) for t in texts] == texts and len(texts) == 24
    assert saved["test_characters"] == sum(len(t) for t in texts)
    assert saved["test_bits_per_character"] == pytest.approx(
        saved["test_loss"]
        * saved["test_tokens"]
        / np.log(2)
        / saved["test_characters"]
    )
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


def test_serving_export_greedy_text_is_the_recipes_greedy_sample(trained):
    out, _, metrics = trained
    path = os.path.join(out, "serving", "1")
    assert metrics["export_dir"] == path
    (version,) = published_versions(os.path.join(out, "serving"))
    assert version["test_perplexity"] == pytest.approx(
        metrics["test_perplexity"]
    )
    assert version["steps"] == 60 and version["tokenizer"] == "wordpiece"
    # The run's options are the export's defaults.
    defaults = version["signatures"]["generate"]["defaults"]
    assert defaults == {
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 0.9,
        "seed": 42,
        "max_new_tokens": 10,
    }
    assert version["prompt"]["max_prompt_length"] == 64
    assert version["stop_token_ids"] == [3]
    # One greedy request (top_k 1), through the C API as TF Serving loads
    # the export: each prompt's new text is what the recipe's greedy
    # sampler wrote after it (the prompts are whole words).
    samples = metrics["samples"]
    prompts = [sample["prompt"] for sample in samples]
    request = {
        "signature_name": "generate",
        "inputs": {
            "text": prompts,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
            "seed": 0,
            "max_new_tokens": 10,
        },
    }
    response = serve_with_c_api(path, request)
    assert response["python_modules"] == []
    served = response["outputs"]
    assert all(served), served  # not empty: the comparison has content
    assert [
        f"{prompt} {text}" for prompt, text in zip(prompts, served, strict=True)
    ] == [sample["greedy"] for sample in samples]
    assert served == [tidy_spacing(text) for text in served]


def test_rerun_on_a_finished_run_trains_and_publishes_nothing(
    trained, tmp_path, capsys
):
    out, data, metrics = trained
    run = copy_run(out, tmp_path / "run")
    before = snapshot(run)
    again = _run(data, run, "--epochs", "1")
    assert snapshot(run) == before
    assert len(published_versions(os.path.join(run, "serving"))) == 1
    assert again["test_perplexity"] == pytest.approx(metrics["test_perplexity"])
    printed = capsys.readouterr().out
    assert f"The run in {run} is finished: test_perplexity" in printed
    assert f"exported to {metrics['export_dir']}" in printed


def test_overwrite_trains_afresh_and_publishes_the_next_version(
    trained, tmp_path, capsys
):
    out, data, metrics = trained
    run = copy_run(out, tmp_path / "run")
    serving = os.path.join(run, "serving")
    first = snapshot(os.path.join(serving, "1"))
    new = _run(
        data,
        run,
        "--overwrite",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--max-eval-rows",
        "8",
        "--max-train-rows",
        "16",
        "--max-validation-rows",
        "8",
        "--num-samples",
        "0",
    )
    assert new["steps"] == 2 and new["eval_rows"] == 8
    versions = published_versions(serving)
    assert [v["version"] for v in versions] == [1, 2]
    assert snapshot(os.path.join(serving, "1")) == first
    latest = versions[-1]
    assert new["export_dir"] == latest["path"] == os.path.join(serving, "2")
    assert latest["test_bits_per_character"] == pytest.approx(
        new["test_bits_per_character"]
    )
    assert latest["steps"] == 2 and latest["eval_rows"] == 8
    printed = capsys.readouterr().out
    assert (
        f"serving/1: test_perplexity {metrics['test_perplexity']:.4g}, "
        f"test_bits_per_character {metrics['test_bits_per_character']:.4g}; "
        f"this run: test_perplexity {new['test_perplexity']:.4g}"
    ) in printed


def test_sentencepiece_resumes_with_its_model_and_samples_exactly(
    tmp_path, monkeypatch
):
    # SentencePiece (the default tokenizer): its model is learned once,
    # saved, and reused by the resumed run; the samples are the prompt
    # followed by its continuation, exactly (no tidying).
    data = _write_text(str(tmp_path / "data"), rows=(40, 8, 8))
    out = str(tmp_path / "out")
    flags = [
        "--tokenizer",
        "sentencepiece",
        "--vocabulary-size",
        "300",
        "--epochs",
        "3",
        "--steps-per-epoch",
        "4",
        "--max-new-tokens",
        "6",
        # Spacing that WordPiece (and tidy_spacing) would not keep.
        "--prompt",
        "Tom sees the cat .",
        "--prompt",
        "Anna  likes",
    ]
    # Interrupted in the middle of the third epoch.
    with pytest.raises(Interrupted):
        _run(data, out, *flags, callbacks=[InterruptAfter(10)])
    assert os.path.isdir(os.path.join(out, "backup"))
    assert not os.path.exists(os.path.join(out, "vocabulary.txt"))
    with open(os.path.join(out, "tokenizer.model"), "rb") as f:
        proto = f.read()

    def learn_again(*args, **kwargs):
        raise AssertionError("the resumed run learned a new tokenizer")

    monkeypatch.setattr(lm_recipe, "learn_sentencepiece_model", learn_again)
    metrics = _run(data, out, *flags)
    assert metrics["initial_epoch"] == 2
    assert metrics["epochs"] == [2]
    # The optimizer's step counter came back with the weights: 2 epochs + 1.
    assert metrics["steps"] == 3 * 4
    with open(os.path.join(out, "tokenizer.model"), "rb") as f:
        assert f.read() == proto
    # The grammar's few characters: fewer pieces than asked for.
    assert 260 < metrics["vocabulary_size"] < 300
    samples = metrics["samples"]
    assert [s["prompt"] for s in samples] == [
        "Tom sees the cat .",
        "Anna  likes",
    ]
    for sample in samples:
        # Exact: the prompt, as written, is a prefix of each sample.
        assert sample["greedy"].startswith(sample["prompt"]), sample
        assert sample["top_p"].startswith(sample["prompt"]), sample
    # The export's text is exact too (no tidying): after its prompt, it is
    # the recipe's greedy continuation.
    assert metrics["export_dir"] == os.path.join(out, "serving", "1")
    exported = tf.saved_model.load(metrics["export_dir"])
    prompts = [s["prompt"] for s in samples]
    served = exported.signatures["generate"](
        text=tf.constant(prompts),
        temperature=tf.constant(1.0),
        top_k=tf.constant(1),
        top_p=tf.constant(1.0),
        seed=tf.constant(0),
        max_new_tokens=tf.constant(6),
    )["text"].numpy()
    assert [
        prompt + text.decode()
        for prompt, text in zip(prompts, served, strict=True)
    ] == [s["greedy"] for s in samples]


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
