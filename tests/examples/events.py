"""Reading back the TensorBoard event files that training writes."""

import glob
import os

import tensorflow as tf
from tensorflow.core.util import event_pb2


def read_scalars(folder):
    """`{tag: [value, ...]}` of the numeric scalars in the event files in
    `folder`, in order.

    Other summaries are skipped: with the `tensorboard` package installed,
    `keras.callbacks.TensorBoard` also writes the model's config as text.
    """
    values = {}
    files = sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")))
    for record in tf.data.TFRecordDataset(files):
        event = event_pb2.Event.FromString(record.numpy())
        for value in event.summary.value:
            array = tf.make_ndarray(value.tensor)
            if array.ndim or array.dtype.kind not in "biuf":
                continue
            values.setdefault(value.tag, []).append(float(array))
    return values
