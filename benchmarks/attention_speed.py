"""Forward+backward speed of `MultiHeadSelfAttention` vs Keras' own MHA.

Both layers get the same weights and the same input (`query = value = key`
for `keras.layers.MultiHeadAttention`). With `--kv-heads K`, grouped-query
attention (`num_key_value_heads=K`) against
`keras.layers.GroupQueryAttention` with the same weights. One step is a
forward pass and the gradients with respect to the input and every weight,
inside a
`tf.function`. Timings are interleaved (ours, theirs, ours, ...) and the
median after warm-up is reported, with a large float32 `tf.matmul` measured
in the same process as the ceiling.

Usage:

    python benchmarks/attention_speed.py
    python benchmarks/attention_speed.py --configs 8x512 --repeats 9
    python benchmarks/attention_speed.py --unknown-batch  # as `fit` traces
    python benchmarks/attention_speed.py --kv-heads 2  # 8 query, 2 kv heads
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_selfattn import MultiHeadSelfAttention  # noqa: E402

WIDTH = 256
HEADS = 8
KEY_DIM = WIDTH // HEADS
DEFAULT_CONFIGS = ("32x128", "8x512", "2x2048")


def attention_flops(
    batch, length, width=WIDTH, heads=HEADS, key_dim=KEY_DIM, kv_heads=None
):
    """Multiply-add FLOPs of one forward+backward step (matmuls only).

    Forward: Q/K/V/output projections `2 * 2 B T D (N + K) H` (`K` key/value
    heads, `N` by default) plus scores and value mixing `2 * 2 B N T^2 H`;
    the backward pass costs twice that.
    """
    kv_heads = kv_heads or heads
    projections = 2 * 2 * batch * length * width * (heads + kv_heads) * key_dim
    attention = 2 * 2 * batch * heads * length * length * key_dim
    return 3 * (projections + attention)


def matmul_ceiling(size=2048, repeats=7):
    """Median GFLOP/s of a `size x size` float32 `tf.matmul`."""
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    step = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    step(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def make_layers(impl, kv_heads=None):
    kwargs = {} if impl is None else {"attention_impl": impl}
    ours = MultiHeadSelfAttention(HEADS, num_key_value_heads=kv_heads, **kwargs)
    if kv_heads is None:
        theirs = keras.layers.MultiHeadAttention(HEADS, KEY_DIM)
    else:
        theirs = keras.layers.GroupQueryAttention(
            head_dim=KEY_DIM,
            num_query_heads=HEADS,
            num_key_value_heads=kv_heads,
        )
    x = np.zeros((1, 4, WIDTH), "float32")
    ours(x)
    theirs(x, x)
    theirs._query_dense.kernel.assign(ours.query_kernel)
    theirs._query_dense.bias.assign(ours.query_bias)
    theirs._key_dense.kernel.assign(ours.key_kernel)
    theirs._key_dense.bias.assign(ours.key_bias)
    theirs._value_dense.kernel.assign(ours.value_kernel)
    theirs._value_dense.bias.assign(ours.value_bias)
    theirs._output_dense.kernel.assign(ours.output_kernel)
    theirs._output_dense.bias.assign(ours.output_bias)
    return ours, theirs


def train_step(layer, call, signature=None):
    weights = layer.trainable_weights

    @tf.function(input_signature=signature)
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = call(x)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, *weights])
        # Reduce every gradient so none of them is pruned from the graph.
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    return step


def measure(steps, x, upstream, warmup, repeats):
    """Interleaved timings: one call of each step per round."""
    for step in steps:
        for _ in range(warmup):
            step(x, upstream).numpy()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step(x, upstream).numpy()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        help="BATCHxLENGTH pairs",
    )
    parser.add_argument(
        "--impl", default="auto", help="attention_impl, or 'none'"
    )
    parser.add_argument(
        "--unknown-batch",
        action="store_true",
        help="trace the steps with a `None` batch size, as `Model.fit` does",
    )
    parser.add_argument(
        "--kv-heads",
        type=int,
        default=None,
        help="grouped-query: this many key/value heads, against Keras' "
        "GroupQueryAttention",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    ceiling = matmul_ceiling()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"width {WIDTH}, {HEADS} heads, key_dim {KEY_DIM}, float32, fwd+bwd")
    reference = "Keras MHA"
    if args.kv_heads:
        reference = "Keras GQA"
        print(f"{args.kv_heads} key/value heads, against GroupQueryAttention")
    if args.unknown_batch:
        print("steps traced with an unknown (None) batch size")
    print()
    header = (
        f"| batch x length | ours (ms) | {reference} (ms) | speed-up "
        "| ours GFLOP/s (% ceiling) | Keras GFLOP/s (% ceiling) |"
    )
    rows = []
    for config in args.configs:
        batch, length = (int(v) for v in config.split("x"))
        ours, theirs = make_layers(
            None if args.impl == "none" else args.impl, args.kv_heads
        )
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=(batch, length, WIDTH)), "float32")
        upstream = tf.constant(
            rng.normal(size=(batch, length, WIDTH)), "float32"
        )
        signature = None
        if args.unknown_batch:
            signature = [tf.TensorSpec((None, length, WIDTH), "float32")] * 2
        steps = [
            train_step(ours, ours, signature),
            train_step(
                theirs, lambda x, theirs=theirs: theirs(x, x), signature
            ),
        ]
        t_ours, t_theirs = measure(
            steps, x, upstream, args.warmup, args.repeats
        )
        flops = attention_flops(batch, length, kv_heads=args.kv_heads)
        g_ours, g_theirs = flops / t_ours / 1e9, flops / t_theirs / 1e9
        row = (
            f"| {batch} x {length} | {t_ours * 1e3:.1f} "
            f"| {t_theirs * 1e3:.1f} | {t_theirs / t_ours:.2f}x "
            f"| {g_ours:.1f} ({{ours:.0f}} %) "
            f"| {g_theirs:.1f} ({{theirs:.0f}} %) |"
        )
        rows.append((row, g_ours, g_theirs))
    # The machine is shared: take the best of the ceilings measured before
    # and after, so a busy moment does not inflate the fractions.
    ceiling = max(ceiling, matmul_ceiling())
    print(header)
    print("|" + "---|" * 6)
    for row, g_ours, g_theirs in rows:
        print(
            row.format(
                ours=100 * g_ours / ceiling, theirs=100 * g_theirs / ceiling
            )
        )
    print()
    print(f"float32 matmul ceiling (2048^3): {ceiling:.1f} GFLOP/s")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
