"""Peak memory and time of one long-sequence forward+backward step.

Each configuration runs in a fresh subprocess, which reports its own peak
resident memory (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and the median
time of `--steps` steps after a warm-up step: batch 1, width 256, 8 heads,
float32, gradients with respect to the input and every weight.

Keras' `MultiHeadAttention` stores the whole `(8, T, T)` attention matrix
and its intermediates: about 7 GB at 8,192 tokens, out of memory (24 GB) at
16,384, so it (and our `attention_impl="dense"`, which also stores
`(8, T, T)` tensors) is skipped above `--quadratic-max-length` (8,192).

Usage:

    python benchmarks/attention_memory.py
    python benchmarks/attention_memory.py --lengths 4096 8192 --impls auto
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


def child(impl, length, window, steps):
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
    call(x[:, :8])  # build
    weights = layer.trainable_weights

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(call(x)))
        grads = tape.gradient(loss, [x, *weights])
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    step(x).numpy()  # trace and warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x).numpy()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_gb": peak_kb / 2**20}))


def run_child(impl, length, window, steps, timeout):
    command = [
        sys.executable,
        __file__,
        "--child",
        impl,
        str(length),
        str(window or 0),
        str(steps),
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
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
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
        "--window", type=int, default=None, help="ours only: window=w"
    )
    parser.add_argument("--quadratic-max-length", type=int, default=8192)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed steps (median)"
    )
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args(argv)
    if args.child:
        impl, length, window, steps = args.child
        child(impl, int(length), int(window) or None, int(steps))
        return 0
    print(f"batch 1, width {WIDTH}, {HEADS} heads, float32, fwd+bwd")
    if args.window:
        print(f"ours with window={args.window}")
    print()
    print(
        f"| length | layer | peak RSS (GB) | step, median of {args.steps} (s) |"
    )
    print("|---|---|---|---|")
    for length in args.lengths:
        for impl in args.impls:
            name = (
                "Keras MHA"
                if impl == "keras"
                else f"ours, attention_impl={impl!r}"
            )
            quadratic = impl in ("keras", "dense")
            if quadratic and length > args.quadratic_max_length:
                print(f"| {length} | {name} | skipped (quadratic memory) | |")
                continue
            window = None if impl == "keras" else args.window
            result, error = run_child(
                impl, length, window, args.steps, args.timeout
            )
            if error:
                print(f"| {length} | {name} | {error} | |", flush=True)
                continue
            print(
                f"| {length} | {name} | {result['peak_gb']:.2f} "
                f"| {result['seconds']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
