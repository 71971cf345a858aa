"""Train one small model on JAX: one device, DataParallel, ModelParallel.

Run as its own process with `KERAS_BACKEND=jax` and
`XLA_FLAGS=--xla_force_host_platform_device_count=2` (JAX reads both when
it starts). Each run starts from the same initial weights and takes the same
SGD steps on the same batches; prints one JSON line with each run's per-step
losses, the largest difference of its final weights from the single-device
run's, and how the ModelParallel run placed each variable.
"""

import json
import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_selfattn  # noqa: E402
from keras_selfattn import distribution  # noqa: E402

STEPS = 4
BATCH = 8
DOCS = os.path.join(
    os.path.dirname(__file__), os.pardir, os.pardir, "docs", "distributed.md"
)


def build():
    keras.utils.set_random_seed(7)
    ids = keras.Input((None,), dtype="int32")
    x = keras_selfattn.TokenAndPositionEmbedding(
        64, max_length=16, embed_dim=12, mask_zero=True
    )(ids)
    x = keras_selfattn.TransformerBlock(num_heads=2, ff_dim=10, dropout=0.0)(x)
    # Grouped-query attention with a gated feed-forward network: the key
    # and value projections have 2 heads, the query 4.
    x = keras_selfattn.TransformerBlock(
        num_heads=4,
        num_key_value_heads=2,
        ff_dim=6,
        gated_feedforward=True,
        dropout=0.0,
    )(x)
    x = keras_selfattn.SequencePooling("mean")(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(ids, out)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
    )
    return model


def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 64, size=(STEPS * BATCH, 9)).astype("int32")
    ids[::3, 5:] = 0  # padding
    ids[1] = 0  # one fully padded row
    labels = (ids[:, 0] % 2).astype("int32")
    return ids, labels


def train(model, weights):
    model.set_weights(weights)
    ids, labels = data()
    losses = [
        float(
            model.train_on_batch(
                ids[i : i + BATCH], labels[i : i + BATCH], return_dict=True
            )["loss"]
        )
        for i in range(0, len(ids), BATCH)
    ]
    return losses, [np.asarray(w) for w in model.get_weights()]


def largest_difference(weights, others):
    return max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(weights, others, strict=True)
    )


def placement(model):
    """Each variable's partition spec and the shape of one device's shard."""
    result = {}
    for v in model.variables:
        value = v.value
        spec = tuple(value.sharding.spec)
        spec = spec + (None,) * (len(value.shape) - len(spec))
        shard = value.addressable_shards[0].data.shape
        result[v.path] = {
            "shape": list(value.shape),
            "spec": list(spec),
            "shard": list(shard),
        }
    return result


def docs_example():
    """Run the Python blocks of the guide's JAX section, in order, in one
    namespace (the main test process cannot: it runs TensorFlow)."""
    with open(DOCS, encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"\n## JAX:(.*?)\n## ", text, re.S)[1]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    namespace = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, DOCS, "exec"), namespace)
    return len(blocks)


def multi_query(mesh, x):
    """One key/value head on a 2-way model axis: the map without its
    key/value keys replicates them; the outputs match one device's."""
    keras.utils.set_random_seed(3)
    single = keras_selfattn.TransformerBlock(
        num_heads=2, ff_dim=10, num_key_value_heads=1, name="mqa"
    )
    expected = np.asarray(single(x))
    layouts = distribution.layout_map(mesh)
    del layouts[distribution.ATTENTION_KEY_VALUE_KERNEL]
    del layouts[distribution.ATTENTION_KEY_VALUE_BIAS]
    with keras.distribution.ModelParallel(
        layout_map=layouts, batch_dim_name="batch"
    ).scope():
        block = keras_selfattn.TransformerBlock(
            num_heads=2, ff_dim=10, num_key_value_heads=1, name="mqa"
        )
        block.build(x.shape)
        block.set_weights(single.get_weights())
        got = np.asarray(block(x))
    return float(np.max(np.abs(got - expected))), placement(block)


def main():
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, devices
    out = {"devices": len(devices)}
    single = build()
    weights = single.get_weights()
    out["single"], final = train(single, weights)
    # How far training moved the weights: the distributed runs must agree
    # far more closely than this for the comparison to mean anything.
    out["single_moved"] = largest_difference(final, weights)

    data_parallel = keras.distribution.DataParallel(devices=devices)
    with data_parallel.scope():
        model = build()
        out["data_parallel"], theirs = train(model, weights)
    out["data_parallel_weights"] = largest_difference(final, theirs)

    mesh = keras.distribution.DeviceMesh(
        (1, 2), ["batch", "model"], devices=devices
    )
    model_parallel = keras.distribution.ModelParallel(
        layout_map=distribution.layout_map(mesh), batch_dim_name="batch"
    )
    with model_parallel.scope():
        model = build()
        out["model_parallel"], theirs = train(model, weights)
        out["placement"] = placement(model)
    out["model_parallel_weights"] = largest_difference(final, theirs)
    x = np.random.default_rng(1).normal(size=(2, 5, 12)).astype("float32")
    out["multi_query"], out["multi_query_placement"] = multi_query(mesh, x)
    out["jax_devices"] = jax.device_count()
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1:] == ["docs"]:
        print(json.dumps({"docs_blocks": docs_example()}))
    else:
        main()
