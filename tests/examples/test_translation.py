"""`examples/translation.py` end to end on a tiny synthetic translation."""

import gzip
import json
import math
import os
import random
import sys

import keras
import pytest
import tensorflow as tf

import keras_selfattn  # noqa: F401  (registers the layers for safe_mode)
from keras_selfattn.export import published_versions
from keras_selfattn.export import serve_with_c_api
from tests.examples.support import InterruptAfter
from tests.examples.support import Interrupted
from tests.examples.support import check_used_folder_is_refused
from tests.examples.support import copy_run
from tests.examples.support import load_example
from tests.examples.support import snapshot

# Word-for-word "English" -> "Spanish": a task a tiny model learns quickly.
DICTIONARY = {
    "cat": "Gato",
    "dog": "Perro",
    "red": "rojo",
    "big": "grande",
    "eats": "come",
    "runs": "corre",
    "the": "el",
    "small": "chico",
}

TINY = [
    "--batch-size",
    "16",
    "--vocabulary-size",
    "80",
    "--source-length",
    "9",
    "--target-length",
    "8",
    "--embed-dim",
    "32",
    "--num-heads",
    "2",
    "--ff-dim",
    "48",
    "--num-encoder-layers",
    "1",
    "--num-decoder-layers",
    "1",
    "--dropout",
    "0.0",
    "--learning-rate",
    "0.005",
    "--verbose",
    "0",
]


def _write_pairs(folder, rows=(320, 32, 32)):
    """Random 2-5 word sentences and their word-by-word translation."""
    rng = random.Random(5)
    words = sorted(DICTIONARY)
    os.makedirs(folder, exist_ok=True)
    for split, n in zip(("train", "validation", "test"), rows, strict=True):
        with gzip.open(os.path.join(folder, f"{split}.tsv.gz"), "wt") as f:
            f.write("english\tspanish\n")
            for _ in range(n):
                sentence = rng.choices(words, k=rng.randint(2, 5))
                target = " ".join(DICTIONARY[w] for w in sentence)
                f.write(" ".join(sentence) + f"\t{target}\n")
    return folder


def _run(data, out, *flags, callbacks=()):
    args = [
        "--data-dir",
        data,
        "--output-dir",
        out,
        "--source-column",
        "english",
        "--target-column",
        "spanish",
        *TINY,
        *flags,
    ]
    return load_example("translation").main(args, callbacks=callbacks)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation")
    data = _write_pairs(str(root / "data"))
    out = str(root / "out")
    keras.utils.set_random_seed(1337)
    return out, _run(data, out, "--epochs", "10")


def test_loss_falls_and_it_translates(trained):
    _, metrics = trained
    losses = metrics["train_loss"]
    assert len(losses) == 10 and losses[-1] < 0.3 * losses[0], losses
    assert metrics["initial_epoch"] == 0
    assert metrics["steps"] == 10 * metrics["steps_per_epoch"] == 10 * 20
    # A word-for-word dictionary: the model must get most of it right.
    assert metrics["bleu"] > 50.0, metrics["hypotheses"]


def test_outputs_are_cased_strings_that_stop_at_the_end_token(trained):
    _, metrics = trained
    # Every test sentence ended with [END] before the length limit.
    assert metrics["ended_fraction"] == 1.0
    for text in metrics["hypotheses"]:
        assert isinstance(text, str) and text
        assert "[END]" not in text and "[PAD]" not in text
        assert len(text.split()) <= 5
    # The target keeps its case (the references are cased).
    joined = " ".join(metrics["hypotheses"])
    assert "Gato" in joined or "Perro" in joined
    assert "gato" not in joined and "perro" not in joined
    assert isinstance(metrics["sample_outputs"][-1], str)


def test_metrics_json_and_files(trained):
    out, metrics = trained
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["bleu"] == pytest.approx(metrics["bleu"])
    assert "13a" in saved["bleu_signature"]
    assert saved["train_rows"] == 320 and saved["eval_rows"] == 32
    with open(os.path.join(out, "attention.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(os.path.join(out, "logs"))
    # Training finished, so the interruption backup was cleaned up.
    assert not os.path.exists(os.path.join(out, "backup"))


def test_saved_translator_reloads_and_generates_the_same(trained):
    out, metrics = trained
    translator = keras.saving.load_model(
        os.path.join(out, "translator.keras"), safe_mode=True
    )
    outputs = translator(tf.constant(metrics["samples"])).numpy().tolist()
    assert [o.decode("utf-8") for o in outputs] == metrics["sample_outputs"]
    served = tf.function(
        translator, input_signature=[tf.TensorSpec((None,), tf.string)]
    )
    assert served(tf.constant(["the big cat"])).shape == (1,)


def test_resumes_after_an_interruption(tmp_path):
    data = _write_pairs(str(tmp_path / "data"), rows=(64, 16, 16))
    out = str(tmp_path / "out")
    # 4 steps per epoch: interrupted in the middle of the third epoch.
    with pytest.raises(Interrupted):
        _run(data, out, "--epochs", "3", callbacks=[InterruptAfter(10)])
    assert os.path.isdir(os.path.join(out, "backup"))
    metrics = _run(data, out, "--epochs", "3")
    assert metrics["initial_epoch"] == 2
    assert metrics["epochs"] == [2]
    # The optimizer's step counter came back with the weights: 2 epochs + 1.
    assert metrics["steps"] == 3 * 4


@pytest.mark.shared_data
def test_on_a_slice_of_spa_eng(shared_data, tmp_path):
    metrics = load_example("translation").main(
        [
            "--data-dir",
            os.path.join(shared_data, "translation", "spa_eng"),
            "--output-dir",
            str(tmp_path),
            *TINY,
            "--vocabulary-size",
            "300",
            "--source-length",
            "16",
            "--target-length",
            "16",
            "--max-train-rows",
            "400",
            "--max-validation-rows",
            "64",
            "--max-eval-rows",
            "32",
            "--max-steps",
            "10",
            "--epochs",
            "1",
        ]
    )
    assert metrics["steps"] == 10
    assert metrics["eval_rows"] == 32
    # Ten steps teach the target tokens' frequencies, not translation: BLEU
    # is 0 here, and 0.18 for a model that did not train, so it tells
    # nothing (quality on this data is benchmarks/quality_seq2seq.py's
    # 40-minute run). The validation loss must fall well below the uniform
    # guess, log(V), where a model that does not train stays. Measured:
    # 4.61 against log(V) = 5.48; 5.58 with a learning rate of 1e-9.
    uniform = math.log(metrics["target_vocabulary_size"])
    assert metrics["val_loss"][-1] < uniform - 0.4, (metrics, uniform)
    assert all(isinstance(h, str) for h in metrics["hypotheses"])


def test_serving_export_answers_through_the_c_api(trained):
    out, metrics = trained
    path = os.path.join(out, "serving", "1")
    assert metrics["export_dir"] == path
    texts = list(metrics["samples"])
    response = serve_with_c_api(path, {"instances": texts})
    assert response["python_modules"] == []
    expected = metrics["sample_outputs"]
    assert response["predictions"] == expected


# Re-runs: a finished run is reported, never trained nor published again.


def _data_dir(metrics):
    return metrics["config"]["data_dir"]


def test_export_records_the_scores(trained):
    out, metrics = trained
    (version,) = published_versions(os.path.join(out, "serving"))
    assert version["path"] == metrics["export_dir"]
    assert version["bleu"] == pytest.approx(metrics["bleu"])
    assert version["bleu_signature"] == metrics["bleu_signature"]
    assert version["steps"] == metrics["steps"] == 200
    assert version["eval_rows"] == 32 and version["decoding"] == "greedy"
    assert version["data_dir"] == os.path.abspath(_data_dir(metrics))
    # The numeric scores: what a re-run reports and a new version is
    # compared on.
    assert metrics["key_metrics"] == ["bleu"]


def test_rerun_on_a_finished_run_trains_and_publishes_nothing(
    trained, tmp_path, capsys
):
    out, metrics = trained
    run = copy_run(out, tmp_path / "run")
    before = snapshot(run)
    again = _run(_data_dir(metrics), run, "--epochs", "1")
    assert snapshot(run) == before
    assert len(published_versions(os.path.join(run, "serving"))) == 1
    assert again["bleu"] == pytest.approx(metrics["bleu"])
    printed = capsys.readouterr().out
    assert (
        f"The run in {run} is finished: bleu {metrics['bleu']:.4g}" in printed
    )
    assert f"exported to {metrics['export_dir']}" in printed


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
        "2",
        "--max-eval-rows",
        "8",
    )
    assert new["steps"] == 2 and new["epochs"] == [0]
    versions = published_versions(serving)
    assert [v["version"] for v in versions] == [1, 2]
    assert snapshot(os.path.join(serving, "1")) == first
    latest = versions[-1]
    assert new["export_dir"] == latest["path"] == os.path.join(serving, "2")
    assert latest["bleu"] == pytest.approx(new["bleu"])
    assert latest["steps"] == 2 and latest["eval_rows"] == 8
    with open(os.path.join(run, "metrics.json")) as f:
        assert json.load(f)["steps"] == 2
    printed = capsys.readouterr().out
    assert (
        f"serving/1: bleu {metrics['bleu']:.4g}; this run: bleu "
        f"{new['bleu']:.4g}"
    ) in printed


def test_missing_sacrebleu_exits_before_reading_data(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as error:
        _run(str(tmp_path / "no_data"), out)
    message = str(error.value)
    assert "Missing optional module sacrebleu" in message
    assert 'pip install "keras-selfattn[examples]"' in message
    assert not os.path.exists(out)
