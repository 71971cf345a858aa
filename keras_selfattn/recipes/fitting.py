"""Running `fit` in the recipes: strategies, schedules, resumable training.

`make_strategy` picks a `tf.distribute` strategy by name and
`worker_output_dir` the folder each worker writes to;
`learning_rate_schedule` gives a constant rate or warm-up then cosine decay;
`fit_resumable` runs `fit` so that re-running it after a crash continues
where it stopped, its training seconds and time budget counted across the
interruption. The module imports no TensorFlow: `make_strategy`
imports it when called.
"""

import json
import os
import time

import keras

from keras_selfattn.layers import _validation
from keras_selfattn.recipes.callbacks import StopAtStep
from keras_selfattn.recipes.callbacks import TimeBudget
from keras_selfattn.recipes.callbacks import tensorboard_callback

# The choices of `--strategy` and `--lr-schedule`.
STRATEGIES = ("default", "mirrored", "multiworker")
SCHEDULES = ("constant", "cosine")
# `BackupAndRestore`'s folder in the output folder: an interrupted run.
BACKUP_DIR = "backup"
# The ledger of training seconds, in the backup folder: `BackupAndRestore`
# deletes it with the backup when training finishes.
SECONDS_LEDGER = "train_seconds.json"

__all__ = [
    "fit_resumable",
    "learning_rate_schedule",
    "make_strategy",
    "worker_output_dir",
]


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

    >>> from keras_selfattn.recipes import make_strategy
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

    >>> from keras_selfattn.recipes import make_strategy, worker_output_dir
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

    >>> from keras_selfattn.recipes import learning_rate_schedule
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


def _read_seconds_ledger(backup_dir):
    """The training seconds of the interrupted calls before this one, from
    the ledger in `backup_dir` (0.0 when there is none: a fresh run)."""
    path = os.path.join(backup_dir, SECONDS_LEDGER)
    if not os.path.exists(path):
        return 0.0
    with open(path) as f:
        return float(json.load(f)["seconds"])


class _SecondsLedger(keras.callbacks.Callback):
    """Writes the run's training seconds so far (`earlier_seconds` plus
    this call's since `start`, a `time.monotonic()` reading) and the epoch
    to resume from to `<backup_dir>/train_seconds.json` at each epoch's
    end. Placed after `BackupAndRestore`, so the ledger never counts an
    epoch whose backup was not written."""

    def __init__(self, backup_dir, earlier_seconds, start):
        super().__init__()
        self.path = os.path.join(backup_dir, SECONDS_LEDGER)
        self.earlier_seconds = earlier_seconds
        self.start = start

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.earlier_seconds + time.monotonic() - self.start
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # Written whole, then renamed: a kill mid-write leaves the last
        # ledger, never a truncated one.
        temporary = self.path + ".tmp"
        with open(temporary, "w") as f:
            # `epoch` as in `BackupAndRestore`'s metadata: the next one.
            json.dump({"seconds": seconds, "epoch": epoch + 1}, f)
        os.replace(temporary, self.path)


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
    steps_per_epoch=None,
):
    """`model.fit` that survives an interruption, with a step cap and budget.

    `keras.callbacks.BackupAndRestore` saves the weights, the optimizer
    state and the epoch to `<output_dir>/backup` at the end of every epoch;
    calling this again with the same `output_dir` after a crash restores
    them and continues with the next epoch (the backup is deleted once
    training finishes). TensorBoard curves go to `<output_dir>/logs`
    (`tensorboard_callback`); `StopAtStep` and `TimeBudget` stop training
    mid-epoch when asked. Then come `callbacks`.

    The training seconds are the run's, across interruptions: a ledger in
    `backup/` (`train_seconds.json`, deleted with the backup) holds the
    seconds trained up to the last backup, written after it at each
    epoch's end; a resumed call starts from them, and the time budget
    counts them as spent. The seconds of an interrupted epoch after its
    last backup are lost work and are not counted: the restored weights
    do not reflect them.

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
            time (in all, across interruptions). Defaults to `None`.
        callbacks: more Keras callbacks. Defaults to `()`.
        verbose: 0, 1 or 2, `fit`'s verbosity. Defaults to `1`.
        steps_per_epoch: int or `None`, as in `fit`: an epoch of this many
            steps on a repeated dataset, so backups, validations and
            TensorBoard points come every `steps_per_epoch` steps. Defaults
            to `None` (one pass over `train_data`).

    Returns:
        A tuple `(history, record)`: the `keras.callbacks.History`, and a
        JSON-ready dict with `train_seconds` (the run's, across
        interruptions, rounded to 0.1 s), `call_seconds` (this call's
        alone, rounded), `train_loss` and `val_loss` (per epoch run),
        `epochs` (the epoch indices run), `initial_epoch` (the first of
        them: > 0 after a resume, `None` if none ran), `steps` (the
        optimizer's step count) and `stopped_by_time_budget`.

    Example:

    >>> import tempfile
    >>> import keras
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from keras_selfattn.recipes import fit_resumable
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> data = tf.data.Dataset.from_tensor_slices(
    ...     (np.zeros((32, 3)), np.zeros((32, 1)))).batch(4)
    >>> history, record = fit_resumable(
    ...     model, data, tempfile.mkdtemp(), epochs=3, max_steps=2,
    ...     verbose=0)
    >>> record["steps"], record["epochs"], record["stopped_by_time_budget"]
    (2, [0], False)
    >>> record["train_seconds"] == record["call_seconds"]  # not resumed
    True
    """
    epochs = _validation.positive_int("epochs", epochs)
    steps_per_epoch = _validation.positive_int(
        "steps_per_epoch", steps_per_epoch, allow_none=True
    )
    os.makedirs(output_dir, exist_ok=True)
    backup_dir = os.path.join(output_dir, BACKUP_DIR)
    earlier_seconds = _read_seconds_ledger(backup_dir)
    start = time.monotonic()
    fit_callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir=backup_dir),
        # After the backup: it counts only backed-up epochs.
        _SecondsLedger(backup_dir, earlier_seconds, start),
        tensorboard_callback(os.path.join(output_dir, "logs")),
    ]
    if max_steps is not None:
        fit_callbacks.append(StopAtStep(max_steps))
    time_budget = None
    if time_budget_minutes is not None:
        time_budget = TimeBudget(
            time_budget_minutes, spent_seconds=earlier_seconds
        )
        fit_callbacks.append(time_budget)
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=fit_callbacks + list(callbacks),
        # `shuffle` applies to arrays only; datasets come shuffled, seeded.
        shuffle=False,
        verbose=verbose,
    )
    call_seconds = time.monotonic() - start
    logs = history.history
    record = {
        "train_seconds": round(earlier_seconds + call_seconds, 1),
        "call_seconds": round(call_seconds, 1),
        "train_loss": [float(v) for v in logs.get("loss", [])],
        "val_loss": [float(v) for v in logs.get("val_loss", [])],
        "epochs": [int(e) for e in history.epoch],
        "initial_epoch": int(history.epoch[0]) if history.epoch else None,
        "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "stopped_by_time_budget": bool(time_budget and time_budget.stopped),
    }
    return history, record
