"""`keras_selfattn.recipes`: callbacks, strategies, schedules, resumable
`fit`, the output-folder rules."""

import json
import math
import os
import socket
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_selfattn
from keras_selfattn import recipes
from keras_selfattn.recipes import args
from keras_selfattn.recipes import callbacks
from keras_selfattn.recipes import fitting
from keras_selfattn.recipes import runs
from tests.examples.events import read_scalars
from tests.examples.support import InterruptAfter
from tests.examples.support import Interrupted

# 32 rows in batches of 4: 8 steps per epoch.
ROWS, BATCH, STEPS_PER_EPOCH = 32, 4, 8


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 3)).astype("float32")
    y = rng.normal(size=(ROWS, 2)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


def _steps(model):
    return int(model.optimizer.iterations.numpy())


def _fit(model, callbacks, epochs=5, **kwargs):
    # The dataset is batched and in order: `shuffle` would only warn.
    return model.fit(
        _data(),
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=callbacks,
        **kwargs,
    )


@pytest.mark.parametrize(
    "module", [args, callbacks, fitting, runs], ids=lambda m: m.__name__
)
def test_public_names_are_documented_with_examples(module):
    for name in module.__all__:
        doc = getattr(module, name).__doc__
        assert "Args:" in doc and ">>>" in doc, name
        if not isinstance(getattr(module, name), type):
            assert "Returns:" in doc, name


def test_every_public_name_is_reachable_from_the_package():
    modules = [args, callbacks, fitting, runs]
    # The seq2seq names are checked without importing TensorFlow's module
    # here: by name only (tests/recipes/test_seq2seq.py loads them).
    names = [name for module in modules for name in module.__all__]
    for module in modules:
        for name in module.__all__:
            assert getattr(recipes, name) is getattr(module, name), name
    assert set(names) <= set(recipes.__all__)
    assert keras_selfattn.recipes is recipes


def test_import_needs_no_tensorboard():
    # A finder that refuses `tensorboard`, as if it were not installed.
    code = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorboard':\n"
        "            raise ImportError('no tensorboard')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from keras_selfattn import recipes\n"
        "callback = recipes.tensorboard_callback('logs')\n"
        "assert type(callback).__name__ == 'EpochScalars', callback\n"
        "assert 'tensorboard' not in sys.modules\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# StopAtStep


def test_stop_at_step_stops_mid_epoch():
    model = _model()
    history = _fit(model, [recipes.StopAtStep(3)])
    assert _steps(model) == 3
    assert history.epoch == [0]


def test_stop_at_step_counts_across_epochs():
    model = _model()
    history = _fit(model, [recipes.StopAtStep(STEPS_PER_EPOCH + 2)])
    assert _steps(model) == STEPS_PER_EPOCH + 2
    assert history.epoch == [0, 1]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None, "3"])
def test_stop_at_step_rejects_bad_max_steps(bad):
    with pytest.raises(ValueError, match="`max_steps`, expected a positive"):
        recipes.StopAtStep(bad)


# TimeBudget


def test_zero_time_budget_stops_after_one_step():
    model = _model()
    budget = recipes.TimeBudget(0)
    _fit(model, [budget])
    assert budget.stopped is True
    assert _steps(model) == 1


def test_ample_time_budget_does_not_stop():
    model = _model()
    budget = recipes.TimeBudget(60)
    _fit(model, [budget], epochs=2)
    assert budget.stopped is False
    assert budget.seconds == 3600.0
    assert _steps(model) == 2 * STEPS_PER_EPOCH


def test_spent_time_budget_stops_after_one_step():
    model = _model()
    # A minute's budget of which a resumed run spent a minute already.
    budget = recipes.TimeBudget(1, spent_seconds=60)
    _fit(model, [budget])
    assert budget.spent_seconds == 60.0
    assert budget.stopped is True
    assert _steps(model) == 1


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, True, "1"])
def test_time_budget_rejects_bad_minutes(bad):
    with pytest.raises(ValueError, match="`minutes`, expected a float >= 0"):
        recipes.TimeBudget(bad)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, True, None, "1"])
def test_time_budget_rejects_bad_spent_seconds(bad):
    with pytest.raises(
        ValueError, match="`spent_seconds`, expected a float >= 0"
    ):
        recipes.TimeBudget(1, spent_seconds=bad)


# EpochScalars and tensorboard_callback


def test_epoch_scalars_write_the_history(tmp_path):
    model = _model()
    history = _fit(
        model,
        [recipes.EpochScalars(str(tmp_path))],
        epochs=3,
        validation_data=_data(),
    )
    train = read_scalars(str(tmp_path / "train"))
    validation = read_scalars(str(tmp_path / "validation"))
    np.testing.assert_allclose(
        train["epoch_loss"], history.history["loss"], rtol=1e-6
    )
    np.testing.assert_allclose(
        validation["epoch_loss"], history.history["val_loss"], rtol=1e-6
    )


def test_epoch_scalars_rejects_a_non_path():
    with pytest.raises(TypeError, match="`log_dir`, expected a path"):
        recipes.EpochScalars(3)


def test_tensorboard_callback_without_tensorboard(monkeypatch, tmp_path):
    # `None` in sys.modules makes `import tensorboard` raise ImportError.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    callback = recipes.tensorboard_callback(str(tmp_path))
    assert isinstance(callback, recipes.EpochScalars)
    assert callback.log_dir == str(tmp_path)


def test_tensorboard_callback_with_tensorboard(monkeypatch, tmp_path):
    monkeypatch.setitem(
        sys.modules, "tensorboard", types.ModuleType("tensorboard")
    )
    callback = recipes.tensorboard_callback(str(tmp_path))
    assert isinstance(callback, keras.callbacks.TensorBoard)
    assert callback.log_dir == str(tmp_path)


def test_tensorboard_callback_rejects_a_non_path():
    with pytest.raises(TypeError, match="`log_dir`, expected a path"):
        recipes.tensorboard_callback(None)


# make_strategy


def test_default_strategy_is_the_current_one():
    strategy = recipes.make_strategy("default")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


def test_mirrored_strategy():
    strategy = recipes.make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync >= 1


@pytest.mark.parametrize("bad", ["tpu", "Mirrored", None])
def test_make_strategy_names_the_choices(bad):
    # "multiworker" is not built here: it must come before any other
    # TensorFlow work in the process.
    with pytest.raises(ValueError, match="`name`, expected one of 'default'"):
        recipes.make_strategy(bad)


# worker_output_dir


class _Resolver:
    def __init__(self, jobs, task_type, task_id):
        self.task_type, self.task_id = task_type, task_id
        self._jobs = jobs

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._jobs)


def _strategy(jobs, task_type, task_id):
    return types.SimpleNamespace(
        cluster_resolver=_Resolver(jobs, task_type, task_id)
    )


WORKERS = {"worker": ["a:1", "b:1", "c:1"]}
WITH_CHIEF = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}


@pytest.mark.parametrize(
    "jobs, task_type, task_id, expected",
    [
        (WORKERS, "worker", 0, "out"),  # no chief task: worker 0 is chief
        (WORKERS, "worker", 2, os.path.join("out", "workers", "worker_2")),
        (WITH_CHIEF, "chief", 0, "out"),
        (WITH_CHIEF, "worker", 0, os.path.join("out", "workers", "worker_0")),
        (
            WITH_CHIEF,
            "evaluator",
            0,
            os.path.join("out", "workers", "evaluator_0"),
        ),
    ],
)
def test_worker_output_dir_in_a_cluster(jobs, task_type, task_id, expected):
    strategy = _strategy(jobs, task_type, task_id)
    assert recipes.worker_output_dir("out", strategy) == expected


def test_worker_output_dir_outside_a_cluster():
    for strategy in (
        recipes.make_strategy("default"),
        recipes.make_strategy("mirrored"),
        types.SimpleNamespace(cluster_resolver=None),
    ):
        assert recipes.worker_output_dir("out", strategy) == "out"


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_worker_output_dir_with_a_real_two_worker_cluster(tmp_path):
    # Two local processes form a MultiWorkerMirroredStrategy cluster over
    # localhost; only worker 0 (the chief) gets the shared folder.
    script = os.path.join(
        os.path.dirname(__file__),
        os.pardir,
        "scripts",
        "multiworker_output_dir.py",
    )
    hosts = [f"localhost:{_free_port()}" for _ in range(2)]
    shared = str(tmp_path / "run")
    workers = []
    for index in range(2):
        config = {
            "cluster": {"worker": hosts},
            "task": {"type": "worker", "index": index},
        }
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(config),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        workers.append(
            subprocess.Popen(
                [sys.executable, script, shared],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    results = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=240)
            assert worker.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            worker.kill()
    assert [r["replicas"] for r in results] == [2, 2]
    assert results[0]["dir"] == shared
    assert results[1]["dir"] == os.path.join(shared, "workers", "worker_1")


# learning_rate_schedule


def test_constant_schedule_is_the_float():
    lr = recipes.learning_rate_schedule(3e-4)
    assert lr == 3e-4 and isinstance(lr, float)
    # Steps and warm-up belong to the cosine schedule only.
    assert recipes.learning_rate_schedule(2, total_steps=5) == 2.0


def _at(schedule, step):
    return float(schedule(step))


def test_cosine_warms_up_then_decays_to_zero():
    peak, total, warmup = 1e-3, 110, 10
    lr = recipes.learning_rate_schedule(
        peak, "cosine", total_steps=total, warmup_steps=warmup
    )
    assert isinstance(lr, keras.optimizers.schedules.LearningRateSchedule)
    assert _at(lr, 0) == 0.0
    assert _at(lr, warmup // 2) == pytest.approx(peak / 2, rel=1e-5)
    assert _at(lr, warmup) == pytest.approx(peak, rel=1e-6)
    # Half-way through the decay, the cosine is at half the peak.
    assert _at(lr, warmup + (total - warmup) // 2) == pytest.approx(
        peak / 2, rel=1e-5
    )
    assert _at(lr, total) == pytest.approx(0.0, abs=1e-12)
    assert _at(lr, total + 50) == pytest.approx(0.0, abs=1e-12)


def test_cosine_without_warmup_starts_at_the_peak():
    lr = recipes.learning_rate_schedule(0.1, "cosine", total_steps=40)
    assert _at(lr, 0) == pytest.approx(0.1, rel=1e-6)
    assert _at(lr, 20) == pytest.approx(0.05, rel=1e-5)
    assert _at(lr, 40) == pytest.approx(0.0, abs=1e-9)


def test_cosine_schedule_drives_an_optimizer():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    lr = recipes.learning_rate_schedule(
        0.1, "cosine", total_steps=2 * STEPS_PER_EPOCH, warmup_steps=4
    )
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    _fit(model, [], epochs=2)
    # At the end of training the rate has decayed to zero.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"learning_rate": 0}, "`learning_rate`, expected a positive float"),
        ({"learning_rate": -1e-3}, "`learning_rate`, expected a positive"),
        ({"learning_rate": True}, "`learning_rate`, expected a positive"),
        ({"learning_rate": "1e-3"}, "`learning_rate`, expected a positive"),
        ({"schedule": "linear"}, "`schedule`, expected one of 'constant'"),
        ({"schedule": "cosine"}, "`total_steps`, expected a positive"),
        (
            {"schedule": "cosine", "total_steps": 0},
            "`total_steps`, expected a positive integer",
        ),
        ({"warmup_steps": -1}, "`warmup_steps`, expected a non-negative"),
        ({"warmup_steps": 1.5}, "`warmup_steps`, expected a non-negative"),
    ],
)
def test_learning_rate_schedule_rejects_bad_arguments(kwargs, match):
    kwargs = {"learning_rate": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=match):
        recipes.learning_rate_schedule(**kwargs)


# fit_resumable


class _SlowEpochs(keras.callbacks.Callback):
    """Makes every epoch last at least `seconds`, so a training time
    rounded to 0.1 s cannot be right by accident."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


class _SlowBatches(keras.callbacks.Callback):
    """Makes every training batch last at least `seconds`: the training
    seconds of a run have a known lower bound."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


def _ledger(output_dir):
    path = os.path.join(output_dir, "backup", fitting.SECONDS_LEDGER)
    with open(path) as f:
        return json.load(f)


def test_fit_resumable_record_and_files(tmp_path):
    model = _model()
    start = time.time()
    history, record = recipes.fit_resumable(
        model,
        _data(),
        str(tmp_path),
        validation_data=_data(),
        epochs=2,
        callbacks=[_SlowEpochs(0.4)],
    )
    elapsed = time.time() - start
    assert set(record) == {
        "train_seconds",
        "call_seconds",
        "train_loss",
        "val_loss",
        "epochs",
        "initial_epoch",
        "steps",
        "stopped_by_time_budget",
    }
    assert record["epochs"] == [0, 1] and record["initial_epoch"] == 0
    assert record["steps"] == 2 * STEPS_PER_EPOCH
    assert record["train_loss"] == pytest.approx(history.history["loss"])
    assert record["val_loss"] == pytest.approx(history.history["val_loss"])
    assert record["stopped_by_time_budget"] is False
    # The time of `fit` itself: at least the two slowed epochs, at most the
    # whole call (rounded to 0.1 s).
    assert 0.8 <= record["train_seconds"] <= round(elapsed, 1) + 0.05
    # Not resumed: the run's seconds are this call's.
    assert record["call_seconds"] == record["train_seconds"]
    assert os.listdir(tmp_path / "logs")
    # Training finished: the interruption backup is gone.
    assert not os.path.exists(tmp_path / "backup")


def test_fit_resumable_continues_after_an_interruption(tmp_path):
    out = str(tmp_path)
    model = _model()
    # In the middle of the second epoch.
    with pytest.raises(Interrupted):
        recipes.fit_resumable(
            model,
            _data(),
            out,
            epochs=3,
            callbacks=[InterruptAfter(STEPS_PER_EPOCH + 3)],
        )
    assert os.listdir(tmp_path / "backup")
    _, record = recipes.fit_resumable(_model(), _data(), out, epochs=3)
    # Epoch 0 was backed up; the re-run repeats epoch 1 and finishes.
    assert record["initial_epoch"] == 1
    assert record["epochs"] == [1, 2]
    assert record["steps"] == 3 * STEPS_PER_EPOCH


def test_fit_resumable_counts_seconds_across_an_interruption(tmp_path):
    out = str(tmp_path)
    batch_seconds = 0.05
    start = time.monotonic()
    # Killed 3 batches into the second epoch, after the first one's backup.
    with pytest.raises(Interrupted):
        recipes.fit_resumable(
            _model(),
            _data(),
            out,
            epochs=3,
            callbacks=[
                _SlowBatches(batch_seconds),
                InterruptAfter(STEPS_PER_EPOCH + 3),
            ],
            verbose=0,
        )
    first_call = time.monotonic() - start
    ledger = _ledger(out)
    # The first epoch's seconds, without the 3 batches after its backup:
    # lost work, which the restored weights do not reflect.
    assert ledger["epoch"] == 1
    assert STEPS_PER_EPOCH * batch_seconds <= ledger["seconds"]
    assert ledger["seconds"] <= first_call - 3 * batch_seconds
    _, record = recipes.fit_resumable(
        _model(),
        _data(),
        out,
        epochs=3,
        callbacks=[_SlowBatches(batch_seconds)],
        verbose=0,
    )
    assert record["epochs"] == [1, 2]
    assert record["call_seconds"] >= 2 * STEPS_PER_EPOCH * batch_seconds
    # The run's seconds: the first call's up to its backup, then this
    # call's (each rounded to 0.1 s).
    assert record["train_seconds"] == pytest.approx(
        ledger["seconds"] + record["call_seconds"], abs=0.11
    )
    assert record["train_seconds"] >= 3 * STEPS_PER_EPOCH * batch_seconds
    # Training finished: the ledger went with the backup.
    assert not os.path.exists(tmp_path / "backup")


def test_fit_resumable_time_budget_counts_the_earlier_seconds(tmp_path):
    # The first call trains an epoch of at least `budget` seconds, then is
    # killed in the second.
    budget = 2.0
    with pytest.raises(Interrupted):
        recipes.fit_resumable(
            _model(),
            _data(),
            str(tmp_path / "resumed"),
            epochs=3,
            callbacks=[
                _SlowBatches(budget / STEPS_PER_EPOCH),
                InterruptAfter(STEPS_PER_EPOCH + 1),
            ],
            verbose=0,
        )
    assert _ledger(str(tmp_path / "resumed"))["seconds"] >= budget
    # Re-run with a budget the first call spent already: one step.
    _, resumed = recipes.fit_resumable(
        _model(),
        _data(),
        str(tmp_path / "resumed"),
        epochs=3,
        time_budget_minutes=budget / 60,
        verbose=0,
    )
    assert resumed["stopped_by_time_budget"] is True
    assert resumed["steps"] == STEPS_PER_EPOCH + 1
    assert resumed["train_seconds"] >= budget
    # The same budget, fresh: the two epochs' few steps fit in it.
    _, fresh = recipes.fit_resumable(
        _model(),
        _data(),
        str(tmp_path / "fresh"),
        epochs=2,
        time_budget_minutes=budget / 60,
        verbose=0,
    )
    assert fresh["stopped_by_time_budget"] is False
    assert fresh["steps"] == 2 * STEPS_PER_EPOCH


def test_fit_resumable_step_cap_and_time_budget(tmp_path):
    _, record = recipes.fit_resumable(
        _model(), _data(), str(tmp_path / "a"), epochs=4, max_steps=10
    )
    assert record["steps"] == 10 and record["epochs"] == [0, 1]
    assert record["stopped_by_time_budget"] is False
    _, record = recipes.fit_resumable(
        _model(), _data(), str(tmp_path / "b"), epochs=4, time_budget_minutes=0
    )
    assert record["steps"] == 1 and record["stopped_by_time_budget"] is True


def test_fit_resumable_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="`epochs`, expected a positive"):
        recipes.fit_resumable(_model(), _data(), str(tmp_path), epochs=0)
    with pytest.raises(ValueError, match="`max_steps`"):
        recipes.fit_resumable(_model(), _data(), str(tmp_path), max_steps=0)
    with pytest.raises(ValueError, match="`minutes`"):
        recipes.fit_resumable(
            _model(), _data(), str(tmp_path), time_budget_minutes=-1
        )


# prepare_output_dir


def _touch(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _tree(folder):
    """Every file under `folder` with its contents and mtime."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[path] = (f.read(), os.stat(path).st_mtime_ns)
    return found


def test_prepare_output_dir_new(tmp_path):
    assert recipes.prepare_output_dir(str(tmp_path / "missing")) == "new"
    # Created later by the run, not by the check.
    assert not os.path.exists(tmp_path / "missing")
    assert recipes.prepare_output_dir(tmp_path) == "new"
    # Hidden files and the other workers' sub-folders are not a run.
    _touch(str(tmp_path / ".DS_Store"))
    _touch(str(tmp_path / "workers" / "worker_1" / "metrics.json"))
    assert recipes.prepare_output_dir(str(tmp_path)) == "new"
    assert recipes.prepare_output_dir(str(tmp_path), overwrite=True) == "new"


def test_prepare_output_dir_finished_and_interrupted(tmp_path):
    out = str(tmp_path)
    os.makedirs(tmp_path / "backup")
    _touch(str(tmp_path / "checkpoint.keras"))
    before = _tree(out)
    assert recipes.prepare_output_dir(out) == "resume"
    assert _tree(out) == before
    # metrics.json is written last: it marks the run finished.
    _touch(str(tmp_path / "metrics.json"), "{}")
    before = _tree(out)
    assert recipes.prepare_output_dir(out) == "finished"
    assert _tree(out) == before
    assert os.path.isdir(tmp_path / "backup")


def test_prepare_output_dir_refuses_a_used_folder(tmp_path):
    out = str(tmp_path)
    _touch(str(tmp_path / "checkpoint.keras"))
    _touch(str(tmp_path / "serving" / "1" / "saved_model.pb"))
    before = _tree(out)
    with pytest.raises(FileExistsError) as error:
        recipes.prepare_output_dir(out)
    message = str(error.value)
    assert "--overwrite" in message and out in message
    assert "checkpoint.keras, serving" in message
    assert "metrics.json" in message and "backup/" in message
    assert _tree(out) == before


def test_prepare_output_dir_overwrite_keeps_the_published_versions(tmp_path):
    out = str(tmp_path)
    _touch(str(tmp_path / "metrics.json"), "{}")
    _touch(str(tmp_path / "backup" / "latest.weights.h5"))
    _touch(str(tmp_path / "serving" / "1" / "saved_model.pb"), "v1")
    _touch(str(tmp_path / "logs" / "train" / "events"))
    _touch(str(tmp_path / "text_classifier.keras"))
    serving = _tree(str(tmp_path / "serving"))
    assert recipes.prepare_output_dir(out, overwrite=True) == "overwrite"
    # A fresh run: no backup to resume, no finished metrics.
    assert not os.path.exists(tmp_path / "backup")
    assert not os.path.exists(tmp_path / "metrics.json")
    assert sorted(os.listdir(out)) == [
        "logs",
        "serving",
        "text_classifier.keras",
    ]
    assert _tree(str(tmp_path / "serving")) == serving
    # Used, neither finished nor interrupted: refused without the flag.
    with pytest.raises(FileExistsError, match="--overwrite"):
        recipes.prepare_output_dir(out)
    assert recipes.prepare_output_dir(out, overwrite=True) == "overwrite"


def test_prepare_output_dir_ignores_a_nested_run(tmp_path):
    out = str(tmp_path)
    # A nested run's folder (the classification example's pretrain/),
    # interrupted or finished, is not this run's files.
    _touch(str(tmp_path / "pretrain" / "backup" / "latest.weights.h5"))
    _touch(str(tmp_path / "pretrain" / "metrics.json"), "{}")
    assert recipes.prepare_output_dir(out, ignore=["pretrain"]) == "new"
    with pytest.raises(FileExistsError, match="pretrain"):
        recipes.prepare_output_dir(out)
    os.makedirs(tmp_path / "backup")
    assert recipes.prepare_output_dir(out, ignore=("pretrain",)) == "resume"
    # An overwrite leaves it alone.
    before = _tree(str(tmp_path / "pretrain"))
    run = recipes.prepare_output_dir(out, overwrite=True, ignore=["pretrain"])
    assert run == "overwrite"
    assert _tree(str(tmp_path / "pretrain")) == before
    with pytest.raises(TypeError, match="`ignore`"):
        recipes.prepare_output_dir(out, ignore="pretrain")


def test_prepare_output_dir_after_a_real_interruption(tmp_path):
    out = str(tmp_path)
    with pytest.raises(Interrupted):
        recipes.fit_resumable(
            _model(),
            _data(),
            out,
            epochs=3,
            callbacks=[InterruptAfter(STEPS_PER_EPOCH + 3)],
            verbose=0,
        )
    assert recipes.prepare_output_dir(out) == "resume"
    recipes.fit_resumable(_model(), _data(), out, epochs=3, verbose=0)
    # Training ended (backup deleted) but no metrics.json was written.
    with pytest.raises(FileExistsError, match="logs"):
        recipes.prepare_output_dir(out)


def test_prepare_output_dir_every_worker_decides_from_the_chief(tmp_path):
    out = str(tmp_path)
    chief = _strategy(WORKERS, "worker", 0)
    worker = _strategy(WORKERS, "worker", 2)
    mine = tmp_path / "workers" / "worker_2"
    # The chief's folder holds a finished run; this worker's was deleted.
    _touch(str(tmp_path / "metrics.json"), "{}")
    assert recipes.prepare_output_dir(out, strategy=worker) == "finished"
    assert recipes.prepare_output_dir(out, strategy=chief) == "finished"
    # An overwrite clears only the folder the process writes to.
    _touch(str(mine / "metrics.json"), "{}")
    _touch(str(mine / "backup" / "state"))
    assert (
        recipes.prepare_output_dir(out, overwrite=True, strategy=worker)
        == "overwrite"
    )
    assert os.listdir(mine) == []
    assert os.path.exists(tmp_path / "metrics.json")
    assert (
        recipes.prepare_output_dir(out, overwrite=True, strategy=chief)
        == "overwrite"
    )
    assert not os.path.exists(tmp_path / "metrics.json")


def test_prepare_output_dir_restarts_an_unfinished_run(tmp_path):
    out = str(tmp_path)
    # Stopped before its first epoch ended: logs, no backup, no metrics.
    _touch(str(tmp_path / "logs" / "train" / "events"))
    before = _tree(out)
    with pytest.raises(FileExistsError, match="logs"):
        recipes.prepare_output_dir(out)
    assert recipes.prepare_output_dir(out, restart_unfinished=True) == "new"
    assert _tree(out) == before
    # A finished or an interrupted run is still reported or resumed.
    os.makedirs(tmp_path / "backup")
    assert recipes.prepare_output_dir(out, restart_unfinished=True) == "resume"
    _touch(str(tmp_path / "metrics.json"), "{}")
    run = recipes.prepare_output_dir(out, restart_unfinished=True)
    assert run == "finished"
    run = recipes.prepare_output_dir(
        out, overwrite=True, restart_unfinished=True
    )
    assert run == "overwrite"
    assert not os.path.exists(tmp_path / "metrics.json")


def test_prepare_output_dir_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="`output_dir`, expected a path"):
        recipes.prepare_output_dir(None)
    with pytest.raises(TypeError, match="`overwrite`, expected a bool"):
        recipes.prepare_output_dir(str(tmp_path), overwrite="yes")
    with pytest.raises(TypeError, match="`restart_unfinished`, expected"):
        recipes.prepare_output_dir(str(tmp_path), restart_unfinished=1)


# report_finished_run


def test_report_finished_run_prints_and_returns_the_metrics(tmp_path, capsys):
    metrics = {
        "test_accuracy": 0.80281,
        "test_loss": 0.4406,
        "steps": 315,
        "key_metrics": ["test_accuracy", "test_loss"],
        "export_dir": "runs/sst2/serving/1",
    }
    _touch(str(tmp_path / "metrics.json"), json.dumps(metrics))
    assert recipes.report_finished_run(str(tmp_path)) == metrics
    line = capsys.readouterr().out
    assert f"The run in {tmp_path} is finished" in line
    assert "test_accuracy 0.8028, test_loss 0.4406, steps 315" in line
    assert "exported to runs/sst2/serving/1" in line
    assert "--overwrite" in line
    # Explicit keys win; missing ones are skipped.
    recipes.report_finished_run(str(tmp_path), ["test_loss", "bleu"])
    line = capsys.readouterr().out
    assert "finished: test_loss 0.4406, steps 315;" in line


def test_report_finished_run_without_key_metrics(tmp_path, capsys):
    _touch(str(tmp_path / "metrics.json"), '{"bleu": 12.5}')
    assert recipes.report_finished_run(str(tmp_path)) == {"bleu": 12.5}
    assert "finished: no key metrics recorded." in capsys.readouterr().out


# compare_with_published


def _version(export_dir, version, record=None):
    folder = os.path.join(export_dir, str(version))
    os.makedirs(folder)
    if record is not None:
        _touch(
            os.path.join(folder, "assets.extra", "metadata.json"),
            json.dumps(record),
        )


def test_compare_with_published(tmp_path, capsys):
    serving = str(tmp_path / "serving")
    metrics = {"test_accuracy": 0.551, "test_loss": 0.69}
    keys = ["test_accuracy"]
    # Nothing published yet: nothing to compare with.
    assert recipes.compare_with_published(serving, metrics, keys) is None
    assert capsys.readouterr().out == ""
    _version(serving, 1, {"test_accuracy": 0.6})
    _version(serving, 2, {"test_accuracy": 0.803, "version": 2})
    line = recipes.compare_with_published(serving, metrics, keys)
    # The latest version: the one TF Serving serves now.
    assert line == (
        "serving/2: test_accuracy 0.803; this run: test_accuracy 0.551"
    )
    assert capsys.readouterr().out == line + "\n"
    _version(serving, 3)  # exported by another tool, without a record
    line = recipes.compare_with_published(
        serving, metrics, ["test_accuracy", "test_loss"]
    )
    assert line == (
        "serving/3: no recorded metrics; "
        "this run: test_accuracy 0.551, test_loss 0.69"
    )
