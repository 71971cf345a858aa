"""Keras callbacks of the recipes: step caps, time budgets, TensorBoard curves.

`StopAtStep` and `TimeBudget` stop `fit` mid-epoch after a number of
optimizer steps or minutes; `EpochScalars` and `tensorboard_callback` write
TensorBoard curves with or without the `tensorboard` package. TensorBoard
itself is imported only if `tensorboard_callback` finds it installed;
`EpochScalars` imports TensorFlow when it first writes.
"""

import importlib
import os
import time

import keras

from keras_selfattn.layers import _validation

__all__ = [
    "EpochScalars",
    "StopAtStep",
    "TimeBudget",
    "tensorboard_callback",
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
    >>> from keras_selfattn.recipes import StopAtStep
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
    """Stops training once `minutes` of wall-clock training time are spent,
    counting `spent_seconds` already spent before this `fit`.

    The clock starts when `fit` starts and is read after every batch, so
    training stops mid-epoch (after at least one batch: a budget already
    spent at the start stops after the first); `stopped` tells whether the
    budget ended it. `fit_resumable` passes the seconds that earlier,
    interrupted calls trained, so the budget is the run's, not the call's.

    Args:
        minutes: float >= 0, the training time budget in minutes.
        spent_seconds: float >= 0, the seconds of the budget spent before
            this `fit` (e.g. by an interrupted run it resumes). Defaults
            to `0.0`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_selfattn.recipes import TimeBudget
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> budget = TimeBudget(0)
    >>> _ = model.fit(np.zeros((32, 3)), np.zeros((32, 1)), batch_size=4,
    ...               epochs=5, verbose=0, callbacks=[budget])
    >>> budget.stopped, int(model.optimizer.iterations.numpy())
    (True, 1)
    >>> spent = TimeBudget(1, spent_seconds=60)  # a resumed run's budget
    >>> _ = model.fit(np.zeros((32, 3)), np.zeros((32, 1)), batch_size=4,
    ...               epochs=5, verbose=0, callbacks=[spent])
    >>> spent.stopped, int(model.optimizer.iterations.numpy())
    (True, 2)
    """

    def __init__(self, minutes, spent_seconds=0.0):
        super().__init__()
        self.minutes = _validation.non_negative_float("minutes", minutes)
        self.spent_seconds = _validation.non_negative_float(
            "spent_seconds", spent_seconds
        )
        self.seconds = 60.0 * self.minutes
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        spent = self.spent_seconds + time.monotonic() - self.start
        if spent >= self.seconds:
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
    >>> from keras_selfattn.recipes import EpochScalars
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
    >>> from keras_selfattn.recipes import tensorboard_callback
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
