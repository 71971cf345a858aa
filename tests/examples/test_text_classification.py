"""`examples/text_classification.py` end to end on tiny synthetic data."""

import gzip
import json
import os
import random
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_selfattn  # noqa: F401  (registers the layers for safe_mode)
from keras_selfattn.export import published_versions
from keras_selfattn.export import serve_with_c_api
from tests.examples.events import read_scalars
from tests.examples.support import check_used_folder_is_refused
from tests.examples.support import copy_run
from tests.examples.support import load_example
from tests.examples.support import snapshot

# Tiny sizes, every one different, so each run takes a few seconds.
TINY = [
    "--batch-size",
    "16",
    "--vocabulary-size",
    "60",
    "--sequence-length",
    "12",
    "--embed-dim",
    "16",
    "--num-heads",
    "2",
    "--ff-dim",
    "24",
    "--num-layers",
    "1",
    "--verbose",
    "0",
]


def _write_reviews(
    folder, rows=(192, 48, 40), labels=("0", "1"), jsonl=False, words=(1, 8)
):
    """A learnable toy sentiment set: one polar word among `words` (a
    range) filler words."""
    rng = random.Random(3)
    polar = (
        ["dull", "awful", "boring", "tedious", "weak"],
        ["great", "wonderful", "moving", "funny", "superb"],
    )
    filler = ["the", "movie", "is", "a", "story", "with", "cast", "quite"]
    os.makedirs(folder, exist_ok=True)
    for split, n in zip(("train", "validation", "test"), rows, strict=True):
        lines = []
        for _ in range(n):
            y = rng.randint(0, 1)
            text = rng.choices(filler, k=rng.randint(*words))
            text.insert(rng.randint(0, len(text)), rng.choice(polar[y]))
            lines.append((" ".join(text), labels[y]))
        if jsonl:
            with open(os.path.join(folder, f"{split}.jsonl"), "w") as f:
                for text, y in lines:
                    f.write(json.dumps({"review": text, "sentiment": y}) + "\n")
        else:
            with gzip.open(os.path.join(folder, f"{split}.tsv.gz"), "wt") as f:
                f.write("text\tlabel\n")
                f.writelines(f"{text}\t{y}\n" for text, y in lines)
    return folder


def _run(data, out, *flags, callbacks=()):
    args = ["--data-dir", data, "--output-dir", out, *TINY, *flags]
    return load_example("text_classification").main(args, callbacks=callbacks)


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    """One full run whose outputs several tests inspect, and its seconds."""
    root = tmp_path_factory.mktemp("trained")
    data = _write_reviews(str(root / "data"))
    out = str(root / "out")
    keras.utils.set_random_seed(1337)
    start = time.monotonic()
    # 72 steps: too few for the small-data dropout (0.3) and a decaying
    # rate to learn the toy task well; the real sets take thousands.
    metrics = _run(
        data,
        out,
        "--epochs",
        "6",
        "--dropout",
        "0.1",
        "--lr-schedule",
        "constant",
    )
    return out, metrics, time.monotonic() - start


@pytest.fixture(scope="module")
def trained(timed_run):
    out, metrics, _ = timed_run
    return out, metrics


def test_loss_falls_and_it_learns(trained):
    _, metrics = trained
    assert len(metrics["train_loss"]) == 6
    assert metrics["train_loss"][-1] < 0.5 * metrics["train_loss"][0]
    assert metrics["test_accuracy"] > 0.9, metrics
    assert metrics["epochs"] == list(range(6))
    assert metrics["initial_epoch"] == 0
    assert metrics["steps"] == 6 * metrics["steps_per_epoch"] == 6 * 12


def test_metrics_json_and_outputs(timed_run):
    out, metrics, run_seconds = timed_run
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert saved["train_rows"] == 192 and saved["test_rows"] == 40
    assert saved["label_names"] == ["0", "1"]
    assert saved["config"]["embed_dim"] == 16
    # `fit`'s own time: part of the run (which also reads, learns the
    # vocabulary, evaluates and exports), and 72 steps take more than the
    # 0.1 s it is rounded to.
    assert 0.1 <= saved["train_seconds"] < run_seconds
    assert saved["vocabulary_size"] <= 60
    probs = np.array(saved["sample_probabilities"])
    # Four test sentences and the empty string.
    assert probs.shape == (5, 2) and saved["samples"][-1] == ""
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    for name in ("text_classifier.keras", "checkpoint.keras", "attention.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "attention.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Training finished, so the interruption backup was cleaned up.
    assert not os.path.exists(os.path.join(out, "backup"))


def test_tensorboard_logs(trained):
    out, metrics = trained
    train = read_scalars(os.path.join(out, "logs", "train"))
    validation = read_scalars(os.path.join(out, "logs", "validation"))
    np.testing.assert_allclose(
        train["epoch_loss"], metrics["train_loss"], rtol=1e-5
    )
    np.testing.assert_allclose(
        validation["epoch_loss"], metrics["val_loss"], rtol=1e-5
    )


def test_saved_model_reloads_with_same_predictions(trained):
    out, metrics = trained
    model = keras.saving.load_model(
        os.path.join(out, "text_classifier.keras"), safe_mode=True
    )
    probs = keras.ops.convert_to_numpy(model(tf.constant(metrics["samples"])))
    np.testing.assert_allclose(
        probs, metrics["sample_probabilities"], atol=1e-6
    )
    # It learned the toy task: the polar word decides.
    probs = keras.ops.convert_to_numpy(
        model(tf.constant(["the movie is superb", "the movie is awful"]))
    )
    assert probs[0, 1] > 0.5 > probs[1, 1], probs


def test_exported_model_takes_raw_strings(trained):
    out, metrics = trained
    path = os.path.join(out, "serving", "1")
    assert metrics["export_dir"] == path
    exported = tf.saved_model.load(path)
    serve = exported.signatures["serving_default"]
    texts = ["", "great", "a dull movie with a weak cast " * 20]
    probs = serve(text=tf.constant(texts))["probabilities"].numpy()
    assert probs.shape == (3, 2) and probs.dtype == np.float32
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    served = serve(text=tf.constant(metrics["samples"]))["probabilities"]
    np.testing.assert_allclose(
        served.numpy(), metrics["sample_probabilities"], atol=1e-5
    )
    # The way TF Serving loads it: the C API, no Python TensorFlow.
    response = serve_with_c_api(path, {"instances": texts})
    assert response["python_modules"] == []
    rows = response["predictions"]
    np.testing.assert_allclose(
        [r["probabilities"] for r in rows], probs, atol=1e-5
    )
    assert all(r["label"] in metrics["label_names"] for r in rows)


class Interrupt(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Raises after `batch` batches of epoch `epoch`, like a killed job."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Interrupt(f"interrupted in epoch {self.epoch}")


def test_baseline_in_metrics_and_sane(trained):
    out, metrics = trained
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    baseline = saved["baseline_tfidf_logreg"]
    accuracy = saved["baseline_tfidf_logreg_accuracy"]
    assert accuracy == baseline["test_accuracy"]
    # The toy task is linearly separable by its polar words: a TF-IDF
    # logistic regression gets it (chance is 0.5; the 40 test rows leave
    # room for one mistake).
    assert accuracy >= 0.95, baseline
    assert baseline["C"] in (1.0, 4.0, 16.0)
    # Unigrams and bigrams of the 18 words, seen at least twice.
    assert 18 < baseline["features"] < 18 + 18 * 18, baseline


def test_no_baseline_needs_no_scikit_learn(tmp_path, monkeypatch, capsys):
    # `None` in sys.modules: as if scikit-learn were not installed.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    data = _write_reviews(str(tmp_path / "data"))
    metrics = _run(
        data, str(tmp_path / "out"), "--no-baseline", "--max-steps", "1"
    )
    assert metrics["baseline_tfidf_logreg_accuracy"] is None
    assert "TF-IDF" not in capsys.readouterr().out


class InvertAtEnd(keras.callbacks.Callback):
    """Negates the output layer after the last batch of the last epoch:
    the final weights predict the wrong class, the earlier ones did not."""

    def __init__(self, epochs):
        super().__init__()
        self.last = epochs - 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.last and batch == self.params["steps"] - 1:
            layer = self.model.get_layer("probabilities")
            layer.set_weights([-w for w in layer.get_weights()])


@pytest.mark.parametrize("early_stopping", [True, False])
def test_early_stopping_keeps_the_best_epoch(tmp_path, early_stopping):
    data = _write_reviews(str(tmp_path / "data"))
    flags = ["--epochs", "6", "--no-baseline", "--dropout", "0"]
    # Patience longer than the run: the last epoch runs, then the restore.
    flags += ["--lr-schedule", "constant", "--early-stopping-patience", "9"]
    if not early_stopping:
        flags.append("--no-early-stopping")
    metrics = _run(
        data, str(tmp_path / "out"), *flags, callbacks=[InvertAtEnd(6)]
    )
    # The last epoch's validation saw the inverted model.
    assert metrics["val_accuracy"][-1] < 0.2, metrics["val_accuracy"]
    if early_stopping:
        # Restored: the best validation epoch's weights, which learned.
        assert metrics["best_epoch"] == int(np.argmax(metrics["val_accuracy"]))
        assert metrics["best_epoch"] < 5
        # (0.9 to 1.0 measured; the inverted model scores 1 - that.)
        assert metrics["test_accuracy"] > 0.8, metrics
    else:
        # The same run without the restore keeps the inverted weights.
        assert metrics["best_epoch"] is None
        assert metrics["test_accuracy"] < 0.2, metrics


def test_default_dropout_is_sized_to_the_data(tmp_path):
    example = load_example("text_classification")
    assert example.default_dropout(192) == 0.3
    assert example.default_dropout(99_999) == 0.3
    assert example.default_dropout(100_000) == 0.1
    # Without --dropout, the run's 192 training rows get the small-data
    # rate, in every Dropout layer of the saved model, and it is recorded.
    data = _write_reviews(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    metrics = _run(data, out, "--no-baseline", "--max-steps", "1")
    assert metrics["config"]["dropout"] == 0.3
    model = keras.saving.load_model(os.path.join(out, "text_classifier.keras"))
    rates = {
        layer.name: layer.rate
        for layer in model.classifier.layers
        if isinstance(layer, keras.layers.Dropout)
    }
    assert rates == {"embedding_dropout": 0.3, "head_dropout": 0.3}, rates


def test_default_sequence_length_is_sized_to_the_data(tmp_path):
    example = load_example("text_classification")

    def words(n):
        return " ".join(["word"] * n)

    # Short texts (SST-2's phrases: 90 % at most 21 words) keep 64.
    assert example.default_sequence_length([words(21)] * 10) == (64, 21.0)
    assert example.default_sequence_length([]) == (64, 0.0)
    # 90 % of the texts whole: 60 words, 92 tokens, rounded up to 96.
    texts = [words(60)] * 19 + [words(1000)]
    assert example.default_sequence_length(texts)[0] == 96
    # Long reviews are bounded, and by a language model's longest length.
    assert example.default_sequence_length([words(458)] * 10)[0] == 256
    assert example.default_sequence_length([words(458)], longest=128)[0] == 128
    # Without --sequence-length, the run's own texts size it: 59-60 filler
    # words and a polar one, 93 tokens at most, so 96; recorded.
    data = _write_reviews(str(tmp_path / "data"), words=(59, 60))
    out = str(tmp_path / "out")
    tiny = TINY[:4] + TINY[6:]  # no --sequence-length
    metrics = load_example("text_classification").main(
        ["--data-dir", data, "--output-dir", out, *tiny, "--no-baseline"]
        + ["--max-steps", "1"]
    )
    assert metrics["config"]["sequence_length"] == 96
    model = keras.saving.load_model(os.path.join(out, "text_classifier.keras"))
    assert model.tokenizer.sequence_length == 96


def test_resumes_after_interruption(tmp_path):
    data = _write_reviews(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    with pytest.raises(Interrupt, match="epoch 2"):
        _run(data, out, "--epochs", "4", callbacks=[InterruptAt(2, 3)])
    # Two finished epochs were backed up, and the last model checkpointed.
    assert os.listdir(os.path.join(out, "backup"))
    checkpoint = keras.saving.load_model(os.path.join(out, "checkpoint.keras"))
    assert int(checkpoint.optimizer.iterations.numpy()) == 2 * 12
    metrics = _run(data, out, "--epochs", "4")
    # The re-run went on with epoch 2, from the restored weights and
    # optimizer state: no finished step is lost or repeated.
    assert metrics["initial_epoch"] == 2
    assert metrics["epochs"] == [2, 3]
    assert metrics["steps"] == 4 * 12
    # A fresh model starts near ln 2 = 0.69; the restored one is past that.
    assert metrics["train_loss"][0] < 0.6, metrics["train_loss"]
    # The run's seconds count the two backed-up epochs before the re-run.
    assert metrics["train_seconds"] > metrics["call_seconds"] > 0
    assert not os.path.exists(os.path.join(out, "backup"))


def test_string_labels_from_jsonl(tmp_path):
    data = _write_reviews(
        str(tmp_path / "data"), labels=("negative", "positive"), jsonl=True
    )
    metrics = _run(
        data,
        str(tmp_path / "out"),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--epochs",
        "3",
        "--max-steps",
        "5",
    )
    assert metrics["label_names"] == ["negative", "positive"]
    assert metrics["steps"] == 5 and metrics["epochs"] == [0]
    assert np.array(metrics["sample_probabilities"]).shape == (5, 2)


def test_time_budget_stops_training(tmp_path):
    data = _write_reviews(str(tmp_path / "data"))
    metrics = _run(
        data,
        str(tmp_path / "out"),
        "--epochs",
        "5",
        "--time-budget-minutes",
        "0",
    )
    assert metrics["stopped_by_time_budget"] is True
    assert metrics["steps"] == 1


def test_bad_column_names_the_columns(tmp_path):
    data = _write_reviews(str(tmp_path / "data"))
    with pytest.raises(ValueError, match=r"\['sentence'\] not found"):
        _run(data, str(tmp_path / "out"), "--text-column", "sentence")


def test_single_label_is_an_error(tmp_path):
    data = _write_reviews(str(tmp_path / "data"), labels=("pos", "pos"))
    with pytest.raises(ValueError, match="single label"):
        _run(data, str(tmp_path / "out"))


@pytest.mark.shared_data
def test_on_sst2_slice(shared_data, tmp_path):
    metrics = load_example("text_classification").main(
        [
            "--data-dir",
            os.path.join(shared_data, "classification", "sst2"),
            "--output-dir",
            str(tmp_path),
            "--max-train-rows",
            "6000",
            "--epochs",
            "2",
            "--max-steps",
            "300",
            "--batch-size",
            "32",
            "--vocabulary-size",
            "2000",
            "--sequence-length",
            "24",
            "--embed-dim",
            "16",
            "--num-heads",
            "2",
            "--ff-dim",
            "24",
            "--num-layers",
            "1",
            "--verbose",
            "0",
        ]
    )
    assert metrics["train_rows"] == 6000 and metrics["test_rows"] == 872
    # Stopped by --max-steps in the second epoch (188 steps each).
    assert metrics["steps"] == 300 and metrics["epochs"] == [0, 1]
    assert metrics["label_names"] == ["0", "1"]
    # Measured: 0.68 (chance is 0.51); with the training labels shuffled
    # the same run scores 0.51.
    assert metrics["test_accuracy"] > 0.59, metrics
    assert metrics["train_loss"][-1] < metrics["train_loss"][0]


# Re-runs: a finished run is reported, never trained nor published again.


def _data_dir(metrics):
    return metrics["config"]["data_dir"]


def test_export_records_the_test_metrics(trained):
    out, metrics = trained
    (version,) = published_versions(os.path.join(out, "serving"))
    assert version["version"] == 1 and version["path"] == metrics["export_dir"]
    assert version["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert version["test_loss"] == pytest.approx(metrics["test_loss"])
    assert version["steps"] == metrics["steps"] == 72
    assert version["label_names"] == ["0", "1"]
    assert version["data_dir"] == os.path.abspath(_data_dir(metrics))
    assert metrics["key_metrics"] == ["test_accuracy", "test_loss"]


def test_rerun_on_a_finished_run_trains_and_publishes_nothing(
    trained, tmp_path, capsys
):
    out, metrics = trained
    run = copy_run(out, tmp_path / "run")
    before = snapshot(run)
    # Even with other flags: the folder's run is finished.
    again = _run(_data_dir(metrics), run, "--epochs", "1", "--max-steps", "1")
    assert snapshot(run) == before
    assert len(published_versions(os.path.join(run, "serving"))) == 1
    with open(os.path.join(run, "metrics.json")) as f:
        assert again == json.load(f)
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    printed = capsys.readouterr().out
    assert f"The run in {run} is finished: test_accuracy" in printed
    assert f"steps 72; exported to {metrics['export_dir']}" in printed
    assert "--overwrite" in printed


def test_used_folder_without_overwrite_is_refused(trained, tmp_path):
    out, metrics = trained
    check_used_folder_is_refused(
        lambda run: _run(_data_dir(metrics), run), out, tmp_path / "run"
    )


def test_overwrite_trains_afresh_and_publishes_the_next_version(
    trained, tmp_path, capsys
):
    out, metrics = trained
    run = copy_run(out, tmp_path / "run")
    serving = os.path.join(run, "serving")
    first = snapshot(os.path.join(serving, "1"))
    new = _run(
        _data_dir(metrics),
        run,
        "--overwrite",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--label-names",
        "negative,positive",
    )
    assert new["steps"] == 3 and new["epochs"] == [0]
    # Version 1 is untouched; version 2 holds this run and its record.
    versions = published_versions(serving)
    assert [v["version"] for v in versions] == [1, 2]
    assert snapshot(os.path.join(serving, "1")) == first
    latest = versions[-1]
    assert new["export_dir"] == latest["path"] == os.path.join(serving, "2")
    assert latest["test_accuracy"] == pytest.approx(new["test_accuracy"])
    assert latest["steps"] == 3
    assert latest["label_names"] == ["negative", "positive"]
    # metrics.json and the .keras model are this run's.
    with open(os.path.join(run, "metrics.json")) as f:
        assert json.load(f)["steps"] == 3
    model = keras.saving.load_model(os.path.join(run, "text_classifier.keras"))
    probs = keras.ops.convert_to_numpy(model(tf.constant(new["samples"])))
    np.testing.assert_allclose(probs, new["sample_probabilities"], atol=1e-6)
    # Before publishing, the comparison with the version served until now.
    printed = capsys.readouterr().out
    old, now = metrics["test_accuracy"], new["test_accuracy"]
    assert (
        f"serving/1: test_accuracy {old:.4g}, test_loss "
        f"{metrics['test_loss']:.4g}; this run: test_accuracy {now:.4g}"
    ) in printed
    served = tf.saved_model.load(latest["path"]).signatures["serving_default"]
    labels = served(text=tf.constant(["great", "awful"]))["label"].numpy()
    assert {label.decode() for label in labels} <= {"negative", "positive"}


# Label names: --label-names, else label_names.txt in --data-dir.


def test_label_names_file_reaches_the_export(tmp_path, capsys):
    data = _write_reviews(str(tmp_path / "data"))
    with open(os.path.join(data, "label_names.txt"), "w") as f:
        f.write("negative\npositive\n\n")
    out = str(tmp_path / "out")
    metrics = _run(data, out, "--epochs", "1", "--max-steps", "2")
    assert metrics["label_names"] == ["negative", "positive"]
    latest = published_versions(os.path.join(out, "serving"))[-1]
    assert latest["label_names"] == ["negative", "positive"]
    served = tf.saved_model.load(latest["path"]).signatures["serving_default"]
    answer = served(text=tf.constant(metrics["samples"]))
    names = [label.decode() for label in answer["label"].numpy()]
    assert names == [
        ["negative", "positive"][i] for i in answer["label_id"].numpy()
    ]
    # The printed sample predictions use the names.
    printed = capsys.readouterr().out
    assert "labels: ['negative', 'positive']" in printed
    assert "'negative' (" in printed or "'positive' (" in printed
    # The baseline is printed before training and beside the test score.
    baseline = metrics["baseline_tfidf_logreg_accuracy"]
    assert (
        f"test accuracy: {metrics['test_accuracy']:.4f} (2 steps); TF-IDF + "
        f"logistic regression baseline: {baseline:.4f}"
    ) in printed
    assert "TF-IDF + logistic regression baseline: test accuracy" in printed


@pytest.mark.parametrize(
    "flags, file, match",
    [
        (
            ["--label-names", "neg,neu,pos"],
            None,
            r"`--label-names`, expected 2 distinct, non-empty class names.*"
            r"Received: --label-names='neg,neu,pos'",
        ),
        (["--label-names", "pos,pos"], None, "expected 2 distinct"),
        # The flag wins over the file.
        (["--label-names", "a,b,c"], "negative\npositive\n", "`--label-names`"),
        ([], "good\n", r"label_names.txt holds 1 names \['good'\]; expected 2"),
    ],
)
def test_wrong_label_names_fail_before_training(tmp_path, flags, file, match):
    data = _write_reviews(str(tmp_path / "data"))
    if file is not None:
        with open(os.path.join(data, "label_names.txt"), "w") as f:
            f.write(file)
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=match):
        _run(data, out, *flags)
    assert not os.path.exists(out)


@pytest.mark.parametrize("module", ["tensorflow_text", "matplotlib", "sklearn"])
def test_missing_optional_dependency_exits_before_reading_data(
    tmp_path, monkeypatch, module
):
    # `None` in sys.modules: as if the package were not installed.
    monkeypatch.setitem(sys.modules, module, None)
    out = str(tmp_path / "out")
    # The data folder does not exist: reading it would fail differently.
    with pytest.raises(SystemExit) as error:
        _run(str(tmp_path / "no_data"), out)
    message = str(error.value)
    assert f"Missing optional module {module}" in message
    assert 'pip install "keras-selfattn[examples]"' in message
    assert not os.path.exists(out)
