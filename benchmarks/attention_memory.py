"""Peak memory and time of one long-sequence forward+backward step.

Each configuration runs in a fresh subprocess, which reports its own peak
resident memory (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and the median
time of `--steps` steps after a warm-up step: batch 1, width 256, 8 heads,
float32, gradients with respect to the input and every weight.

The step runs on every way a user may run it (`--paths`, default all):
`function` (a `tf.GradientTape` step in a `tf.function`), `eager` (the same
step without `tf.function`), `jit` (`tf.function(jit_compile=True)`), `fit`
(`model.fit` on a model of the layer alone, traced with a `None` batch;
gradients of the weights only) and `fit_eager` (`run_eagerly=True`).

Keras' `MultiHeadAttention` stores the whole `(8, T, T)` attention matrix
and its intermediates: about 7 GB at 8,192 tokens, out of memory (24 GB) at
16,384, so it (and our `attention_impl="dense"`, which also stores
`(8, T, T)` tensors) is skipped above `--quadratic-max-length` (8,192).

Usage:

    python benchmarks/attention_memory.py
    python benchmarks/attention_memory.py --lengths 4096 8192 --impls auto
    python benchmarks/attention_memory.py --lengths 16384 --impls auto \
        --paths eager fit_eager
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

WIDTH = 256
HEADS = 8
# How a step runs (`--paths`): the name and what it measures.
PATHS = {
    "function": "a GradientTape step in a `tf.function`",
    "eager": "the same step run eagerly (no `tf.function`)",
    "jit": "the same step in a `tf.function(jit_compile=True)`",
    "fit": "`model.fit` of a model of the layer alone (weights only)",
    "fit_eager": "the same `model.fit` with `run_eagerly=True`",
}


def child(impl, length, window, steps, path):
    """Run one configuration in this process; print a JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_selfattn import MultiHeadSelfAttention

    keras.utils.set_random_seed(0)
    if impl == "keras":
        layer = keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)

        def call(x):
            return layer(x, x)

    else:
        layer = MultiHeadSelfAttention(
            HEADS, attention_impl=impl, window=window
        )
        call = layer
    x = tf.constant(
        np.random.default_rng(0).normal(size=(1, length, WIDTH)), "float32"
    )
    if path in ("fit", "fit_eager"):
        seconds = _fit_seconds(
            keras, tf, call, x, steps, run_eagerly=path == "fit_eager"
        )
    else:
        call(x[:, :8])  # build
        seconds = _step_seconds(tf, layer, call, x, steps, path)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_gb": peak_kb / 2**20}))


def _step_seconds(tf, layer, call, x, steps, path):
    """Median seconds of a GradientTape step, eager, traced or under XLA."""
    weights = layer.trainable_weights

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(call(x)))
        grads = tape.gradient(loss, [x, *weights])
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    if path == "function":
        step = tf.function(step)
    elif path == "jit":
        step = tf.function(step, jit_compile=True)
    step(x).numpy()  # trace (compile) and warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fit_seconds(keras, tf, call, x, steps, run_eagerly):
    """Median seconds of a `model.fit` batch (a warm-up batch first).

    A model of the layer alone, mean squared error against zeros, plain
    SGD; one epoch of `steps + 1` batches of the same sequence. The
    gradients are those of the weights only (not of the input).
    """
    inputs = keras.Input((x.shape[1], WIDTH))
    model = keras.Model(inputs, call(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss="mse",
        run_eagerly=run_eagerly,
        jit_compile=False,
    )
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    # One stored copy of the sequence, batched as `fit` usually sees data:
    # with a `None` batch size in the traced step.
    data = (
        tf.data.Dataset.from_tensors((x[0], tf.zeros_like(x[0])))
        .repeat(steps + 1)
        .batch(1)
    )
    model.fit(
        data,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[Timer()],
    )
    # The first batch traces the step.
    return statistics.median(times[1:])


def run_child(impl, length, window, steps, path, timeout):
    command = [
        sys.executable,
        __file__,
        "--child",
        impl,
        str(length),
        str(window or 0),
        str(steps),
        path,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None, "timed out"
    if done.returncode != 0:
        return None, f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument(
        "--lengths", nargs="+", type=int, default=[4096, 8192, 16384, 32768]
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        default=["auto", "keras"],
        help="auto, "
        "dense, chunked (ours) or keras (keras.layers.MultiHeadAttention)",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=PATHS,
        default=list(PATHS),
        help="how the step runs: "
        + "; ".join(f"{k}: {v}" for k, v in PATHS.items()),
    )
    parser.add_argument(
        "--window", type=int, default=None, help="ours only: window=w"
    )
    parser.add_argument("--quadratic-max-length", type=int, default=8192)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed steps (median)"
    )
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args(argv)
    if args.child:
        impl, length, window, steps, path = args.child
        child(impl, int(length), int(window) or None, int(steps), path)
        return 0
    print(f"batch 1, width {WIDTH}, {HEADS} heads, float32, fwd+bwd")
    if args.window:
        print(f"ours with window={args.window}")
    print()
    print(
        f"| length | path | layer | peak RSS (GB) "
        f"| step, median of {args.steps} (s) |"
    )
    print("|---|---|---|---|---|")
    for length in args.lengths:
        for impl in args.impls:
            name = (
                "Keras MHA"
                if impl == "keras"
                else f"ours, attention_impl={impl!r}"
            )
            quadratic = impl in ("keras", "dense")
            for path in args.paths:
                row = f"| {length} | {path} | {name} |"
                if quadratic and length > args.quadratic_max_length:
                    print(f"{row} skipped (quadratic memory) | |")
                    continue
                window = None if impl == "keras" else args.window
                result, error = run_child(
                    impl, length, window, args.steps, path, args.timeout
                )
                if error:
                    print(f"{row} {error} | |", flush=True)
                    continue
                print(
                    f"{row} {result['peak_gb']:.2f} "
                    f"| {result['seconds']:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
