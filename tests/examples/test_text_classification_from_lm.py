"""`examples/text_classification.py` starting from a language model
(`--pretrain-max-steps`, `--from-lm`) on tiny synthetic data."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_selfattn  # noqa: F401  (registers the layers for safe_mode)
from keras_selfattn.export import serve_with_c_api
from keras_selfattn.text import SentencePieceTokenizer
from tests.examples.support import InterruptAfter
from tests.examples.support import Interrupted
from tests.examples.support import load_example
from tests.examples.support import snapshot
from tests.examples.test_text_classification import Interrupt
from tests.examples.test_text_classification import InterruptAt
from tests.examples.test_text_classification import _write_reviews

# Tiny, and no size flags: a --from-lm run takes the language model's.
COMMON = ["--batch-size", "16", "--sequence-length", "12", "--verbose", "0"]
# The pre-trained model's sizes (SentencePiece needs more than 260 tokens:
# 4 special ones and 256 byte pieces).
SIZES = [
    "--vocabulary-size",
    "300",
    "--embed-dim",
    "16",
    "--num-heads",
    "2",
    "--ff-dim",
    "24",
    "--num-layers",
    "1",
]
PRETRAIN_STEPS = 8


def _run(data, out, *flags, callbacks=(), pretrain_callbacks=(), common=COMMON):
    args = ["--data-dir", data, "--output-dir", out, *common, *flags]
    return load_example("text_classification").main(
        args, callbacks=callbacks, pretrain_callbacks=pretrain_callbacks
    )


def _pretrain_flags():
    return [*SIZES, "--pretrain-max-steps", str(PRETRAIN_STEPS)]


class RecordStart(keras.callbacks.Callback):
    """Keeps the language model's token embedding as fine-tuning starts."""

    def on_train_begin(self, logs=None):
        lm = self.model.get_layer("backbone").causal_lm
        self.embedding = keras.ops.convert_to_numpy(
            lm.token_embedding.embeddings
        )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One `--pretrain-max-steps` run, and the embedding it fine-tuned
    from."""
    root = tmp_path_factory.mktemp("pretrained")
    data = _write_reviews(str(root / "data"))
    out = str(root / "out")
    keras.utils.set_random_seed(1337)
    start = RecordStart()
    metrics = _run(
        data,
        out,
        *_pretrain_flags(),
        "--epochs",
        "6",
        "--dropout",
        "0.1",
        "--learning-rate",
        "1e-3",
        callbacks=[start],
    )
    return data, out, metrics, start.embedding


def test_pretrain_then_fine_tune(pretrained):
    _, out, metrics, _ = pretrained
    pretrain_dir = os.path.join(out, "pretrain")
    assert metrics["from_lm"] == pretrain_dir
    with open(os.path.join(pretrain_dir, "metrics.json")) as f:
        lm_metrics = json.load(f)
    assert metrics["pretrain"] == {
        "run_dir": pretrain_dir,
        "trained_in_this_run": True,
        "steps": PRETRAIN_STEPS,
        "train_seconds": lm_metrics["train_seconds"],
        "test_perplexity": lm_metrics["test_perplexity"],
    }
    assert np.isfinite(lm_metrics["test_perplexity"])
    assert metrics["total_train_seconds"] == pytest.approx(
        metrics["train_seconds"] + lm_metrics["train_seconds"], abs=0.11
    )
    # The classifier has the pre-training's sizes and tokenizer.
    config = metrics["config"]
    assert (config["embed_dim"], config["num_layers"]) == (16, 1)
    assert metrics["vocabulary_size"] == lm_metrics["vocabulary_size"] == 300
    # It learns the toy task (chance: 0.5; 0.925 measured, 40 test rows).
    assert metrics["train_loss"][-1] < 0.5 * metrics["train_loss"][0]
    assert metrics["test_accuracy"] > 0.85, metrics
    # The attention plot of the LM's first block, the baseline, the files.
    assert metrics["attention_png"] == os.path.join(out, "attention.png")
    assert os.path.exists(metrics["attention_png"])
    assert metrics["baseline_tfidf_logreg_accuracy"] >= 0.95
    model = keras.saving.load_model(os.path.join(out, "text_classifier.keras"))
    assert isinstance(model.tokenizer, SentencePieceTokenizer)
    assert model.classifier.get_layer("backbone").causal_lm.hidden_dim == 16


def test_fine_tuning_starts_from_the_pretrained_weights(pretrained):
    _, out, _, start = pretrained
    saved = keras.saving.load_model(
        os.path.join(out, "pretrain", "language_model.keras")
    )
    pretrained_embedding = keras.ops.convert_to_numpy(
        saved.token_embedding.embeddings
    )
    np.testing.assert_array_equal(start, pretrained_embedding)
    # ... and fine-tuning changed them.
    model = keras.saving.load_model(os.path.join(out, "text_classifier.keras"))
    lm = model.classifier.get_layer("backbone").causal_lm
    tuned = keras.ops.convert_to_numpy(lm.token_embedding.embeddings)
    assert not np.allclose(tuned, pretrained_embedding)


def test_export_of_the_lm_classifier_takes_raw_strings(pretrained):
    _, out, metrics, _ = pretrained
    path = metrics["export_dir"]
    assert path == os.path.join(out, "serving", "1")
    texts = ["", "great", "a dull movie with a weak cast " * 20]
    exported = tf.saved_model.load(path)
    probs = exported.signatures["serving_default"](text=tf.constant(texts))
    probs = probs["probabilities"].numpy()
    assert probs.shape == (3, 2) and np.isfinite(probs).all()
    served = exported.signatures["serving_default"](
        text=tf.constant(metrics["samples"])
    )["probabilities"].numpy()
    np.testing.assert_allclose(
        served, metrics["sample_probabilities"], atol=1e-5
    )
    # As TF Serving loads it (the C API, with the SentencePiece op).
    response = serve_with_c_api(path, {"instances": texts})
    assert response["python_modules"] == []
    np.testing.assert_allclose(
        [row["probabilities"] for row in response["predictions"]],
        probs,
        atol=1e-5,
    )


def test_from_lm_starts_from_a_finished_run(pretrained, tmp_path):
    data, out, _, _ = pretrained
    run_dir = os.path.join(out, "pretrain")
    before = snapshot(run_dir)
    metrics = _run(
        data,
        str(tmp_path / "out"),
        "--from-lm",
        run_dir,
        # Equal to the language model's: allowed.
        "--embed-dim",
        "16",
        "--lm-pooling",
        "last",
        "--max-steps",
        "3",
        "--no-baseline",
        # The language model's variables are made in the strategy's scope.
        "--strategy",
        "mirrored",
    )
    assert metrics["from_lm"] == run_dir
    assert metrics["pretrain"]["trained_in_this_run"] is False
    assert metrics["pretrain"]["steps"] == PRETRAIN_STEPS
    assert metrics["total_train_seconds"] == pytest.approx(
        metrics["train_seconds"] + metrics["pretrain"]["train_seconds"],
        abs=0.11,
    )
    assert metrics["steps"] == 3
    config = metrics["config"]
    assert (config["ff_dim"], config["num_heads"]) == (24, 2)
    assert config["vocabulary_size"] == 300  # the LM run's
    # The from-LM default rate.
    assert config["learning_rate"] == 3e-4
    model = keras.saving.load_model(metrics["model_path"])
    assert model.classifier.get_layer("pooling").mode == "last"
    # The language model's run is read, never written.
    assert snapshot(run_dir) == before


def test_from_lm_sizes_the_sequence_length_to_the_data(pretrained, tmp_path):
    data, out, _, _ = pretrained
    metrics = _run(
        data,
        str(tmp_path / "out"),
        "--from-lm",
        os.path.join(out, "pretrain"),
        "--max-steps",
        "1",
        "--no-baseline",
        common=["--batch-size", "16", "--verbose", "0"],
    )
    # Short texts would get 64, but the LM was trained on 12-token windows
    # (its rotary positions have no longest length): no longer than those.
    assert metrics["config"]["sequence_length"] == 12
    model = keras.saving.load_model(metrics["model_path"])
    assert model.tokenizer.sequence_length == 12


def test_from_lm_refuses_what_is_not_a_finished_run(tmp_path):
    data = _write_reviews(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="`--from-lm`.*no such folder"):
        _run(data, out, "--from-lm", missing)
    os.makedirs(tmp_path / "unfinished" / "backup")
    with pytest.raises(FileNotFoundError, match="did not finish"):
        _run(data, out, "--from-lm", str(tmp_path / "unfinished"))
    assert not os.path.exists(out)


def test_from_lm_refuses_another_size(pretrained, tmp_path):
    data, out, _, _ = pretrained
    with pytest.raises(
        ValueError, match=r"`--embed-dim`, expected the language model's, 16"
    ):
        _run(
            data,
            str(tmp_path / "out"),
            "--from-lm",
            os.path.join(out, "pretrain"),
            "--embed-dim",
            "32",
        )


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--from-lm", "x", "--pretrain-minutes", "1"], "--pretrain-minutes"),
        (["--from-lm", "x", "--pretrain-max-steps", "1"], "--pretrain-max"),
        (["--pretrain-data-dir", "x"], "without --pretrain-minutes"),
    ],
)
def test_start_flags_that_do_not_go_together(tmp_path, flags, match):
    with pytest.raises(ValueError, match=match):
        _run(str(tmp_path / "data"), str(tmp_path / "out"), *flags)


def test_fine_tuning_resumes_and_keeps_the_pretraining(pretrained, tmp_path):
    data, out, _, _ = pretrained
    resumed = str(tmp_path / "out")
    # A run whose pre-training finished: reported, not trained again.
    shutil.copytree(os.path.join(out, "pretrain"), f"{resumed}/pretrain")
    lm_files = snapshot(os.path.join(resumed, "pretrain"))
    flags = [*_pretrain_flags(), "--epochs", "3", "--no-baseline"]
    with pytest.raises(Interrupt, match="interrupted in epoch 1"):
        _run(data, resumed, *flags, callbacks=[InterruptAt(1, 3)])
    metrics = _run(data, resumed, *flags)
    assert metrics["initial_epoch"] == 1 and metrics["epochs"] == [1, 2]
    assert metrics["steps"] == 3 * 12
    # The fine-tuning's seconds count its epoch before the interruption,
    # and the total the language model's.
    assert metrics["train_seconds"] > metrics["call_seconds"] > 0
    assert metrics["total_train_seconds"] == pytest.approx(
        metrics["train_seconds"] + metrics["pretrain"]["train_seconds"],
        abs=0.11,
    )
    assert metrics["pretrain"]["steps"] == PRETRAIN_STEPS
    assert snapshot(os.path.join(resumed, "pretrain")) == lm_files


@pytest.mark.slow
def test_interrupted_pretraining_is_redone_not_refused(tmp_path):
    data = _write_reviews(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    flags = [*_pretrain_flags(), "--max-steps", "2", "--no-baseline"]
    with pytest.raises(Interrupted):
        _run(data, out, *flags, pretrain_callbacks=[InterruptAfter(2)])
    # The classifier's folder holds the unfinished pre-training only.
    assert os.listdir(out) == ["pretrain"]
    assert not os.path.exists(os.path.join(out, "pretrain", "metrics.json"))
    metrics = _run(data, out, *flags)
    assert metrics["pretrain"]["steps"] == PRETRAIN_STEPS
    assert metrics["steps"] == 2
