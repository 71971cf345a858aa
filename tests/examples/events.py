"""Reading back the TensorBoard event files that training writes."""

import glob
import os

import tensorflow as tf
from tensorflow.core.util import event_pb2


def read_scalars(folder):
    """`{tag: [value, ...]}` from the event files in `folder`, in order."""
    values = {}
    files = sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")))
    for record in tf.data.TFRecordDataset(files):
        event = event_pb2.Event.FromString(record.numpy())
        for value in event.summary.value:
            values.setdefault(value.tag, []).append(
                float(tf.make_ndarray(value.tensor))
            )
    return values
