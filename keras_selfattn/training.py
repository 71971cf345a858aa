"""Training utilities shared by the examples: caps, budgets, logs, schedules.

`StopAtStep` and `TimeBudget` stop `fit` mid-epoch after a number of
optimizer steps or minutes; `EpochScalars` and `tensorboard_callback` write
TensorBoard curves with or without the `tensorboard` package;
`make_strategy` picks a `tf.distribute` strategy by name;
`learning_rate_schedule` gives a constant rate or warm-up then cosine decay;
`fit_resumable` runs `fit` so that re-running it after a crash continues
where it stopped; `prepare_output_dir` decides whether a run starts,
resumes, stops (already finished) or is refused, so a re-run never
re-publishes by accident; `report_finished_run` and `compare_with_published`
tell the operator what is there; `require_modules` checks the optional
packages up front; `add_training_arguments` adds the matching command-line
flags to an `argparse` parser.

Import it as `from keras_selfattn import training`. TensorBoard itself is
imported only if `tensorboard_callback` finds it installed. The module imports
no TensorFlow: `EpochScalars`, `make_strategy` and `compare_with_published`
need TensorFlow and import it when first used.
"""

import importlib
import importlib.util
import json
import numbers
import os
import shutil
import time

import keras

from keras_selfattn.layers import _validation

STRATEGIES = ("default", "mirrored", "multiworker")
SCHEDULES = ("constant", "cosine")
# Written last by every example: its presence marks a finished run.
METRICS_FILE = "metrics.json"
# `BackupAndRestore`'s folder (see `fit_resumable`): an interrupted run.
BACKUP_DIR = "backup"
# What `pip install` brings every example's optional dependencies.
EXAMPLES_INSTALL = 'pip install "keras-selfattn[examples]"'

__all__ = [
    "EpochScalars",
    "StopAtStep",
    "TimeBudget",
    "add_training_arguments",
    "compare_with_published",
    "fit_resumable",
    "learning_rate_schedule",
    "make_strategy",
    "prepare_output_dir",
    "report_finished_run",
    "require_modules",
    "tensorboard_callback",
    "worker_output_dir",
]


def _optimizer_steps(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class StopAtStep(keras.callbacks.Callback):
    """Stops training once the optimizer has taken `max_steps` steps.

    It reads the optimizer's step counter after every batch, so it stops
    mid-epoch; the counter is part of a `BackupAndRestore` checkpoint, so
    the cap counts steps across an interruption too.

    Args:
        max_steps: int, the number of optimizer steps after which `fit`
            stops.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_selfattn.training import StopAtStep
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x, y = np.zeros((32, 3)), np.zeros((32, 1))
    >>> _ = model.fit(x, y, batch_size=4, epochs=5, verbose=0,
    ...               callbacks=[StopAtStep(3)])
    >>> int(model.optimizer.iterations.numpy())
    3
    """

    def __init__(self, max_steps):
        super().__init__()
        self.max_steps = _validation.positive_int("max_steps", max_steps)

    def on_train_batch_end(self, batch, logs=None):
        if _optimizer_steps(self.model) >= self.max_steps:
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training after `minutes` of wall-clock training time.

    The clock starts when `fit` starts and is read after every batch, so
    training stops mid-epoch (after at least one batch); `stopped` tells
    whether the budget ended it.

    Args:
        minutes: float >= 0, the training time budget in minutes.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_selfattn.training import TimeBudget
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> budget = TimeBudget(0)
    >>> _ = model.fit(np.zeros((32, 3)), np.zeros((32, 1)), batch_size=4,
    ...               epochs=5, verbose=0, callbacks=[budget])
    >>> budget.stopped, int(model.optimizer.iterations.numpy())
    (True, 1)
    """

    def __init__(self, minutes):
        super().__init__()
        self.minutes = _validation.non_negative_float("minutes", minutes)
        self.seconds = 60.0 * self.minutes
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start >= self.seconds:
            self.stopped = True
            self.model.stop_training = True


class EpochScalars(keras.callbacks.Callback):
    """TensorBoard event files of the epoch metrics, without TensorBoard.

    `keras.callbacks.TensorBoard` needs the `tensorboard` package, which
    TensorFlow no longer installs. This writes the same `epoch_<metric>`
    scalars to `<log_dir>/train` and `<log_dir>/validation` (the `val_`
    metrics) with TensorFlow's own summary writer, so
    `tensorboard --logdir <log_dir>` shows the curves. Needs TensorFlow
    (imported at the first epoch's end).

    Args:
        log_dir: str, the folder of the event files.

    Example:

    >>> import os
    >>> import tempfile
    >>> import keras
    >>> import numpy as np
    >>> from keras_selfattn.training import EpochScalars
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x, y = np.zeros((8, 3)), np.zeros((8, 1))
    >>> log_dir = tempfile.mkdtemp()
    >>> _ = model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0,
    ...               callbacks=[EpochScalars(log_dir)])
    >>> sorted(os.listdir(log_dir))
    ['train', 'validation']
    """

    def __init__(self, log_dir):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise _validation.invalid(
                "log_dir", "a path", log_dir, error=TypeError
            )
        self.log_dir = os.fspath(log_dir)
        self.writers = {}

    def _writer(self, name):
        import tensorflow as tf

        if name not in self.writers:
            self.writers[name] = tf.summary.create_file_writer(
                os.path.join(self.log_dir, name)
            )
        return self.writers[name]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        # The plugin name makes TensorBoard draw the values as scalars.
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name="scalars"
            )
        )
        for key, value in (logs or {}).items():
            split = "validation" if key.startswith("val_") else "train"
            tag = "epoch_" + key.removeprefix("val_")
            with self._writer(split).as_default():
                tf.summary.write(
                    tag,
                    tf.constant(float(value)),
                    step=epoch,
                    metadata=metadata,
                )
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def tensorboard_callback(log_dir):
    """A callback that writes TensorBoard curves to `log_dir`.

    Args:
        log_dir: str, the folder of the event files.

    Returns:
        `keras.callbacks.TensorBoard(log_dir)` when the `tensorboard`
        package is installed (it is imported only here), else
        `EpochScalars(log_dir)`: the epoch metrics only, written with
        TensorFlow's summary writer.

    Example:

    >>> import keras
    >>> from keras_selfattn.training import tensorboard_callback
    >>> callback = tensorboard_callback("logs")
    >>> isinstance(callback, keras.callbacks.Callback)
    True
    """
    if not isinstance(log_dir, (str, os.PathLike)):
        raise _validation.invalid("log_dir", "a path", log_dir, error=TypeError)
    try:
        importlib.import_module("tensorboard")
    except ImportError:
        return EpochScalars(log_dir)
    return keras.callbacks.TensorBoard(os.fspath(log_dir))


def make_strategy(name):
    """A `tf.distribute` strategy by name.

    Needs TensorFlow (imported here). Call it before any other TensorFlow
    work: the multi-worker set-up must come first.

    Args:
        name: `"default"` (one device), `"mirrored"` (all local devices) or
            `"multiworker"` (the cluster in the `TF_CONFIG` environment
            variable; write through `worker_output_dir`, so that only the
            chief writes the results).

    Returns:
        A `tf.distribute.Strategy`; build and compile the model under its
        `scope()`.

    Example:

    >>> from keras_selfattn.training import make_strategy
    >>> strategy = make_strategy("default")
    >>> strategy.num_replicas_in_sync
    1
    """
    name = _validation.one_of("name", name, STRATEGIES)
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        # Reads the cluster from the TF_CONFIG environment variable.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_output_dir(output_dir, strategy):
    """Where this process should write: `output_dir` on the chief, a
    private sub-folder on every other worker.

    Under `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the
    whole script. If they all wrote to one shared folder they would
    overwrite each other's checkpoints, metrics and exports. The chief (the
    `"chief"` task, or worker 0 when the cluster has none) writes to
    `output_dir`; every other task writes its own copies to
    `<output_dir>/workers/<task type>_<task index>`, which can be deleted
    after training. Any other strategy, and a process outside a cluster,
    gets `output_dir`.

    Args:
        output_dir: str, the folder of the results.
        strategy: a `tf.distribute.Strategy` (e.g. from `make_strategy`).

    Returns:
        str, the folder this process writes to.

    Example:

    >>> from keras_selfattn.training import make_strategy, worker_output_dir
    >>> worker_output_dir("runs/sst2", make_strategy("default"))
    'runs/sst2'
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None:
        return output_dir
    task_id = int(getattr(resolver, "task_id", 0) or 0)
    jobs = resolver.cluster_spec().as_dict()
    chief = ("chief", 0) if "chief" in jobs else ("worker", 0)
    if (task_type, task_id) == chief:
        return output_dir
    return os.path.join(output_dir, "workers", f"{task_type}_{task_id}")


def learning_rate_schedule(
    learning_rate, schedule="constant", total_steps=None, warmup_steps=0
):
    """A constant learning rate, or linear warm-up then cosine decay.

    With `"cosine"` the rate climbs linearly from 0 to `learning_rate` over
    `warmup_steps` steps (no warm-up when it is 0), then follows a cosine
    down to 0 at step `total_steps` and stays there.

    Args:
        learning_rate: float > 0, the constant rate, or the peak of the
            cosine schedule.
        schedule: `"constant"` or `"cosine"`. Defaults to `"constant"`.
        total_steps: int, the training steps in all (e.g. epochs times
            steps per epoch); needed for `"cosine"`, unused for
            `"constant"`. Defaults to `None`.
        warmup_steps: int >= 0, the warm-up steps of `"cosine"` (unused for
            `"constant"`). Defaults to `0`.

    Returns:
        `learning_rate` as a float for `"constant"`, else a
        `keras.optimizers.schedules.CosineDecay`: either goes to a Keras
        optimizer's `learning_rate`.

    Example:

    >>> from keras_selfattn.training import learning_rate_schedule
    >>> learning_rate_schedule(1e-3)
    0.001
    >>> lr = learning_rate_schedule(1e-3, "cosine", total_steps=100,
    ...                             warmup_steps=10)
    >>> float(lr(0)), float(lr(5)) < 1e-3, float(lr(100))
    (0.0, True, 0.0)
    >>> abs(float(lr(10)) - 1e-3) < 1e-9
    True
    """
    learning_rate = _validation.positive_float(
        "learning_rate", learning_rate, finite=True
    )
    schedule = _validation.one_of("schedule", schedule, SCHEDULES)
    warmup_steps = _validation.non_negative_int("warmup_steps", warmup_steps)
    if schedule == "constant":
        return learning_rate
    if total_steps is None:
        raise _validation.invalid(
            "total_steps",
            'a positive integer when schedule="cosine"',
            total_steps,
        )
    total_steps = _validation.positive_int("total_steps", total_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate,
        # At least one step: a warm-up as long as training has no decay.
        decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def fit_resumable(
    model,
    train_data,
    output_dir,
    validation_data=None,
    epochs=1,
    max_steps=None,
    time_budget_minutes=None,
    callbacks=(),
    verbose=1,
):
    """`model.fit` that survives an interruption, with a step cap and budget.

    `keras.callbacks.BackupAndRestore` saves the weights, the optimizer
    state and the epoch to `<output_dir>/backup` at the end of every epoch;
    calling this again with the same `output_dir` after a crash restores
    them and continues with the next epoch (the backup is deleted once
    training finishes). TensorBoard curves go to `<output_dir>/logs`
    (`tensorboard_callback`); `StopAtStep` and `TimeBudget` stop training
    mid-epoch when asked. Then come `callbacks`.

    Args:
        model: a compiled `keras.Model`.
        train_data: the training data for `fit`, e.g. a batched
            `tf.data.Dataset` (shuffle it yourself: `fit` does not).
        output_dir: str, the folder of `backup/` and `logs/` (created).
        validation_data: data for `fit`'s `validation_data`, or `None`.
            Defaults to `None`.
        epochs: int, the last epoch (counted from the first run, not this
            one). Defaults to `1`.
        max_steps: int or `None`, stop after this many optimizer steps (in
            all, across interruptions). Defaults to `None`.
        time_budget_minutes: float or `None`, stop after this much training
            time in this call. Defaults to `None`.
        callbacks: more Keras callbacks. Defaults to `()`.
        verbose: 0, 1 or 2, `fit`'s verbosity. Defaults to `1`.

    Returns:
        A tuple `(history, record)`: the `keras.callbacks.History`, and a
        JSON-ready dict with `train_seconds` (this call, rounded to 0.1 s),
        `train_loss` and `val_loss` (per epoch run), `epochs` (the epoch
        indices run), `initial_epoch` (the first of them: > 0 after a
        resume, `None` if none ran), `steps` (the optimizer's step count)
        and `stopped_by_time_budget`.

    Example:

    >>> import tempfile
    >>> import keras
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from keras_selfattn.training import fit_resumable
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> data = tf.data.Dataset.from_tensor_slices(
    ...     (np.zeros((32, 3)), np.zeros((32, 1)))).batch(4)
    >>> history, record = fit_resumable(
    ...     model, data, tempfile.mkdtemp(), epochs=3, max_steps=2,
    ...     verbose=0)
    >>> record["steps"], record["epochs"], record["stopped_by_time_budget"]
    (2, [0], False)
    """
    epochs = _validation.positive_int("epochs", epochs)
    os.makedirs(output_dir, exist_ok=True)
    fit_callbacks = [
        keras.callbacks.BackupAndRestore(
            backup_dir=os.path.join(output_dir, "backup")
        ),
        tensorboard_callback(os.path.join(output_dir, "logs")),
    ]
    if max_steps is not None:
        fit_callbacks.append(StopAtStep(max_steps))
    time_budget = None
    if time_budget_minutes is not None:
        time_budget = TimeBudget(time_budget_minutes)
        fit_callbacks.append(time_budget)
    start = time.time()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        callbacks=fit_callbacks + list(callbacks),
        # `shuffle` applies to arrays only; datasets come shuffled, seeded.
        shuffle=False,
        verbose=verbose,
    )
    train_seconds = time.time() - start
    logs = history.history
    record = {
        "train_seconds": round(train_seconds, 1),
        "train_loss": [float(v) for v in logs.get("loss", [])],
        "val_loss": [float(v) for v in logs.get("val_loss", [])],
        "epochs": [int(e) for e in history.epoch],
        "initial_epoch": int(history.epoch[0]) if history.epoch else None,
        "steps": _optimizer_steps(model),
        "stopped_by_time_budget": bool(time_budget and time_budget.stopped),
    }
    return history, record


def _used_entries(folder):
    """What `folder` holds of a run: hidden names and `workers/` (the other
    workers' sub-folders, see `worker_output_dir`) do not count."""
    if not os.path.isdir(folder):
        return []
    return sorted(
        name
        for name in os.listdir(folder)
        if not name.startswith(".") and name != "workers"
    )


def prepare_output_dir(output_dir, overwrite=False, strategy=None):
    """What a run finds in its output folder, and so what it must do.

    The examples call this before they read any data, so re-running a
    command never trains again nor publishes a new TF Serving version by
    accident:

    - `"new"`: the folder is missing or empty; train.
    - `"resume"`: it holds `backup/`, an interrupted run's
      `BackupAndRestore` state; train, and `fit_resumable` continues with
      the next epoch.
    - `"finished"`: it holds `metrics.json`, which a run writes last; do
      not train nor publish (`report_finished_run` says what is there).
    - `"overwrite"`: it holds a run (finished, interrupted or neither) and
      `overwrite` is `True`: this removes `backup/` and `metrics.json`, so
      the run trains from scratch; it then replaces the model files and
      `metrics.json` and publishes the next serving version. Nothing else
      is removed: earlier `serving/<version>` folders stay, and TensorBoard
      logs are appended to.

    Any other used folder (e.g. `checkpoint.keras` or `serving/` but no
    `backup/` and no `metrics.json`: a run that failed before its first
    epoch ended, or another run's files) is refused unless `overwrite`.
    Names starting with `.` and the `workers/` sub-folder do not count.

    Under a multi-worker strategy every process checks `output_dir` (the
    chief's folder), so that all take the same decision, and an overwrite
    removes files only in the folder this process writes to
    (`worker_output_dir`).

    Args:
        output_dir: str, the run's folder (the `--output-dir` flag).
        overwrite: bool, start a fresh run in a used folder (the
            `--overwrite` flag). Defaults to `False`.
        strategy: a `tf.distribute.Strategy` or `None`, to find the folder
            this process writes to. Defaults to `None` (`output_dir`).

    Returns:
        str, one of `"new"`, `"resume"`, `"finished"` and `"overwrite"`.

    Raises:
        FileExistsError: `output_dir` holds files but neither a finished
            nor an interrupted run, and `overwrite` is `False`; the message
            names the files and `--overwrite`.

    Example:

    >>> import os
    >>> import tempfile
    >>> from keras_selfattn.training import prepare_output_dir
    >>> run = tempfile.mkdtemp()
    >>> prepare_output_dir(run)
    'new'
    >>> os.makedirs(os.path.join(run, "backup"))
    >>> prepare_output_dir(run)
    'resume'
    >>> with open(os.path.join(run, "metrics.json"), "w") as f:
    ...     _ = f.write('{"test_accuracy": 0.8}')
    >>> prepare_output_dir(run)
    'finished'
    >>> os.makedirs(os.path.join(run, "serving", "1"))
    >>> prepare_output_dir(run, overwrite=True)
    'overwrite'
    >>> sorted(os.listdir(run))  # backup/ and metrics.json removed
    ['serving']
    >>> try:
    ...     prepare_output_dir(run)
    ... except FileExistsError as error:
    ...     message = str(error)
    >>> "--overwrite" in message and "serving" in message
    True
    """
    if not isinstance(output_dir, (str, os.PathLike)):
        raise _validation.invalid(
            "output_dir", "a path", output_dir, error=TypeError
        )
    output_dir = os.fspath(output_dir)
    _validation.boolean("overwrite", overwrite)
    used = _used_entries(output_dir)
    if not used:
        return "new"
    if not overwrite:
        if METRICS_FILE in used:
            return "finished"
        if BACKUP_DIR in used:
            return "resume"
        shown = ", ".join(used[:6]) + (", ..." if len(used) > 6 else "")
        raise FileExistsError(
            f"The output folder {output_dir!r} holds files of an earlier run "
            f"({shown}) but neither a finished run ({METRICS_FILE}) nor an "
            f"interrupted one ({BACKUP_DIR}/). Pass --overwrite "
            "(overwrite=True) to train a fresh run there (it publishes the "
            "next serving version and keeps the existing ones), or choose "
            "another --output-dir."
        )
    # Only this process's own folder: under multi-worker training the chief
    # owns `output_dir` and every other worker a `workers/` sub-folder.
    own = output_dir
    if strategy is not None:
        own = worker_output_dir(output_dir, strategy)
    backup = os.path.join(own, BACKUP_DIR)
    if os.path.isdir(backup):
        shutil.rmtree(backup)
    metrics = os.path.join(own, METRICS_FILE)
    if os.path.exists(metrics):
        os.remove(metrics)
    return "overwrite"


def _format_metrics(record, keys):
    parts = []
    for key in keys:
        if key not in record:
            continue
        value = record[key]
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = f"{value:.4g}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def report_finished_run(output_dir, keys=None):
    """Say that `output_dir` holds a finished run, and return its metrics.

    What an example does instead of training when `prepare_output_dir`
    returns `"finished"`: it prints one line with the key metrics of
    `<output_dir>/metrics.json`, its steps and its export path, and how to
    train again (`--overwrite`).

    Args:
        output_dir: str, the finished run's folder.
        keys: list of str or `None`, the metrics to print. Defaults to
            `None`: the `key_metrics` list recorded in `metrics.json` (the
            examples write one).

    Returns:
        dict, the finished run's metrics as read from `metrics.json`.

    Example:

    >>> import json
    >>> import os
    >>> import tempfile
    >>> from keras_selfattn.training import report_finished_run
    >>> run = tempfile.mkdtemp()
    >>> with open(os.path.join(run, "metrics.json"), "w") as f:
    ...     json.dump({"test_accuracy": 0.80281, "steps": 315,
    ...                "key_metrics": ["test_accuracy"],
    ...                "export_dir": "runs/sst2/serving/1"}, f)
    >>> metrics = report_finished_run(run)
    The run in ... is finished: test_accuracy 0.8028, steps 315; exported
    to runs/sst2/serving/1. Nothing trained or published; pass --overwrite
    to train again (it publishes the next serving version).
    >>> metrics["steps"]
    315
    """
    path = os.path.join(os.fspath(output_dir), METRICS_FILE)
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    if keys is None:
        keys = metrics.get("key_metrics") or []
    summary = _format_metrics(metrics, [*keys, "steps"])
    export_dir = metrics.get("export_dir")
    exported = f"; exported to {export_dir}" if export_dir else ""
    print(
        f"The run in {os.fspath(output_dir)} is finished: "
        f"{summary or 'no key metrics recorded'}{exported}. Nothing trained "
        "or published; pass --overwrite to train again (it publishes the "
        "next serving version)."
    )
    return metrics


def compare_with_published(export_dir, metrics, keys):
    """Print how this run compares with the latest published version.

    Call it just before exporting: TF Serving serves the highest version
    number, so an operator should see at once when a new version scores
    worse than the one it replaces, e.g. `serving/1: test_accuracy 0.803;
    this run: test_accuracy 0.551`. The earlier numbers come from the
    version's record (`keras_selfattn.export.published_versions`, whose
    module imports TensorFlow on this call).

    Args:
        export_dir: str, the base folder of the versions (`serving/`).
        metrics: dict, this run's metrics.
        keys: list of str, the metrics to compare.

    Returns:
        str, the printed line, or `None` (nothing printed) when no version
        was published yet.

    Example:

    >>> import os
    >>> import tempfile
    >>> import keras
    >>> import keras_selfattn
    >>> from keras_selfattn.training import compare_with_published
    >>> base = os.path.join(tempfile.mkdtemp(), "serving")
    >>> compare_with_published(base, {"test_loss": 0.5}, ["test_loss"])
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> _ = keras_selfattn.export.export_model(
    ...     model, base, metadata={"test_loss": 0.25})
    >>> line = compare_with_published(base, {"test_loss": 0.5}, ["test_loss"])
    serving/1: test_loss 0.25; this run: test_loss 0.5
    """
    from keras_selfattn.export.saved_model import published_versions

    versions = published_versions(export_dir)
    if not versions:
        return None
    latest = versions[-1]
    name = os.path.join(
        os.path.basename(os.path.normpath(os.fspath(export_dir))),
        str(latest["version"]),
    )
    line = (
        f"{name}: {_format_metrics(latest, keys) or 'no recorded metrics'}; "
        f"this run: {_format_metrics(metrics, keys) or 'no metrics'}"
    )
    print(line)
    return line


def require_modules(modules, install=EXAMPLES_INSTALL):
    """Exit at once, naming them, when optional modules are not installed.

    The examples call this first, so a missing optional dependency (e.g.
    `matplotlib`, needed only for the plot at the end) stops the run
    before hours of training rather than after. Nothing is imported:
    `importlib.util.find_spec` only looks.

    Args:
        modules: list of str, the top-level module names needed.
        install: str, the command that installs them. Defaults to
            `'pip install "keras-selfattn[examples]"'`.

    Returns:
        list of str, `modules` (all found).

    Raises:
        SystemExit: some are missing; the message names them and
            `install`.

    Example:

    >>> from keras_selfattn.training import require_modules
    >>> require_modules(["json", "keras"])
    ['json', 'keras']
    >>> try:
    ...     require_modules(["json", "no_such_module_here"])
    ... except SystemExit as error:
    ...     message = str(error)
    >>> print(message)
    Missing optional module no_such_module_here; install it with:
    pip install "keras-selfattn[examples]"
    """
    if isinstance(modules, str):
        modules = [modules]
    modules = list(modules)
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            # A parent that fails to import, or a broken module entry.
            found = False
        if not found:
            missing.append(name)
    if missing:
        noun, it = (
            ("module", "it") if len(missing) == 1 else ("modules", "them")
        )
        raise SystemExit(
            f"Missing optional {noun} {', '.join(missing)}; install {it} "
            f"with:\n{install}"
        )
    return modules


def add_training_arguments(parser, epochs, batch_size, learning_rate):
    """Add the examples' training flags to an `argparse` parser.

    The flags, as a `training` argument group: `--epochs`, `--max-steps`
    (`StopAtStep`), `--time-budget-minutes` (`TimeBudget`), `--batch-size`,
    `--learning-rate`, `--lr-schedule {constant,cosine}` and
    `--warmup-steps` (`learning_rate_schedule`), `--seed`, `--strategy
    {default,mirrored,multiworker}` (`make_strategy`), `--verbose
    {0,1,2}` (`fit`'s verbosity) and `--overwrite` (`prepare_output_dir`:
    train a fresh run in an `--output-dir` that holds one, and publish the
    next serving version; without it a finished run is reported, not
    trained again, and an interrupted one resumes).

    Args:
        parser: an `argparse.ArgumentParser`.
        epochs: int, the default of `--epochs`.
        batch_size: int, the default of `--batch-size`.
        learning_rate: float, the default of `--learning-rate`.

    Returns:
        The argument group, to add more training flags to.

    Example:

    >>> import argparse
    >>> from keras_selfattn.training import add_training_arguments
    >>> parser = argparse.ArgumentParser()
    >>> group = add_training_arguments(parser, epochs=3, batch_size=64,
    ...                                learning_rate=1e-3)
    >>> args = parser.parse_args(["--lr-schedule", "cosine",
    ...                           "--warmup-steps", "10"])
    >>> args.epochs, args.batch_size, args.lr_schedule, args.warmup_steps
    (3, 64, 'cosine', 10)
    >>> args.learning_rate, args.max_steps, args.strategy, args.verbose
    (0.001, None, 'default', 1)
    >>> args.overwrite, parser.parse_args(["--overwrite"]).overwrite
    (False, True)
    """
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=epochs)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--time-budget-minutes", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=batch_size)
    train.add_argument("--learning-rate", type=float, default=learning_rate)
    train.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default="constant",
        help="cosine: linear warm-up over --warmup-steps, then cosine decay "
        "to zero at the end of the last epoch",
    )
    train.add_argument("--warmup-steps", type=int, default=0)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--strategy", choices=STRATEGIES, default="default")
    train.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="start a fresh run in an --output-dir that holds one (a "
        "finished run is otherwise reported, not trained again): train from "
        "scratch, replace the model files and metrics.json, publish the "
        "next serving version (existing ones are kept)",
    )
    return train
