"""Train the same small model with and without MirroredStrategy.

Run as its own process: the two logical CPU devices must be configured
before TensorFlow initialises. Prints one JSON line with both loss curves.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_selfattn  # noqa: E402


def split_cpu_in_two():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )


def build(layer_names):
    keras.utils.set_random_seed(7)
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(50, 12, mask_zero=True)(ids)
    for name in layer_names:
        cls = getattr(keras_selfattn, name)
        if name == "MultiHeadSelfAttention":
            x = cls(num_heads=3)(x)
        else:  # the blocks
            x = cls(num_heads=3, ff_dim=11, dropout=0.0)(x)
    x = keras_selfattn.SequencePooling("mean")(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(ids, out)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
    )
    return model


def main(layer_names):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(32, 9)).astype("int32")
    ids[::3, 5:] = 0  # padding
    ids[1] = 0  # one fully padded row
    labels = (ids[:, 0] % 2).astype("int32")
    losses = {}
    single = build(layer_names)
    weights = single.get_weights()
    losses["single"] = single.fit(
        ids, labels, batch_size=8, epochs=3, shuffle=False, verbose=0
    ).history["loss"]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build(layer_names)
    mirrored.set_weights(weights)
    losses["mirrored"] = mirrored.fit(
        ids, labels, batch_size=8, epochs=3, shuffle=False, verbose=0
    ).history["loss"]
    losses["replicas"] = strategy.num_replicas_in_sync
    print(json.dumps(losses))


if __name__ == "__main__":
    split_cpu_in_two()
    main(sys.argv[1:] or ["MultiHeadSelfAttention"])
