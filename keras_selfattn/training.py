"""Training utilities shared by the examples: caps, budgets, logs, schedules.

`StopAtStep` and `TimeBudget` stop `fit` mid-epoch after a number of
optimizer steps or minutes; `EpochScalars` and `tensorboard_callback` write
TensorBoard curves with or without the `tensorboard` package;
`make_strategy` picks a `tf.distribute` strategy by name;
`learning_rate_schedule` gives a constant rate or warm-up then cosine decay;
`fit_resumable` runs `fit` so that re-running it after a crash continues
where it stopped; `add_training_arguments` adds the matching command-line
flags to an `argparse` parser.

Import it as `from keras_selfattn import training`. TensorBoard itself is
imported only if `tensorboard_callback` finds it installed.
"""

import importlib
import os
import time

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from keras_selfattn.layers import _validation

STRATEGIES = ("default", "mirrored", "multiworker")
SCHEDULES = ("constant", "cosine")

__all__ = [
    "EpochScalars",
    "StopAtStep",
    "TimeBudget",
    "add_training_arguments",
    "fit_resumable",
    "learning_rate_schedule",
    "make_strategy",
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
    `tensorboard --logdir <log_dir>` shows the curves.

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
        if name not in self.writers:
            self.writers[name] = tf.summary.create_file_writer(
                os.path.join(self.log_dir, name)
            )
        return self.writers[name]

    def on_epoch_end(self, epoch, logs=None):
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

    Call it before any other TensorFlow work: the multi-worker set-up must
    come first.

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


def add_training_arguments(parser, epochs, batch_size, learning_rate):
    """Add the examples' training flags to an `argparse` parser.

    The flags, as a `training` argument group: `--epochs`, `--max-steps`
    (`StopAtStep`), `--time-budget-minutes` (`TimeBudget`), `--batch-size`,
    `--learning-rate`, `--lr-schedule {constant,cosine}` and
    `--warmup-steps` (`learning_rate_schedule`), `--seed`, `--strategy
    {default,mirrored,multiworker}` (`make_strategy`) and `--verbose
    {0,1,2}` (`fit`'s verbosity).

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
    return train
