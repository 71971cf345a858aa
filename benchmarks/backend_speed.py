"""`MultiHeadSelfAttention` on JAX and on TensorFlow, and against Keras MHA.

Two comparisons, forward+backward (the gradients with respect to the input
and every weight), width 256, 8 heads, float32, no mask:

1. Within one backend: our layer against `keras.layers.MultiHeadAttention`
   with the same weights (`query = value = key`), both compiled (`jax.jit`
   on JAX, `tf.function` on TensorFlow), timed interleaved in one process
   (ours, theirs, ours, ...): the speed-up is the ratio of the medians.
2. Across backends: the same layer on JAX and on TensorFlow. A Keras backend
   is fixed when Keras is imported, so each backend runs in its own worker
   process. The workers alternate (JAX, TensorFlow, JAX, ...) for
   `--rounds` rounds so that both see the same machine state on average;
   a backend's time is the median over all its rounds' timings, the spread
   the lowest and highest round median. Each worker also times a 2048^3
   float32 matmul in its own framework: if the two ceilings differ a lot,
   the machine was busier for one of them.

Usage:

    python benchmarks/backend_speed.py
    python benchmarks/backend_speed.py --configs 8x512 --rounds 3
    python benchmarks/backend_speed.py --worker jax  # one worker, JSON out
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WIDTH = 256
HEADS = 8
KEY_DIM = WIDTH // HEADS
DEFAULT_CONFIGS = ("32x128", "8x512", "2x2048")
BACKENDS = ("jax", "tensorflow")


def make_layers(keras, multi_head_self_attention):
    """Our layer and Keras MHA holding the same weights."""
    ours = multi_head_self_attention(HEADS)
    theirs = keras.layers.MultiHeadAttention(HEADS, KEY_DIM)
    x = keras.ops.zeros((1, 4, WIDTH))
    ours(x)
    theirs(x, x)
    for mine, its in (
        ("query", theirs._query_dense),
        ("key", theirs._key_dense),
        ("value", theirs._value_dense),
        ("output", theirs._output_dense),
    ):
        its.kernel.assign(getattr(ours, f"{mine}_kernel"))
        its.bias.assign(getattr(ours, f"{mine}_bias"))
    return ours, theirs


def jax_step(layer, inputs):
    """A jitted forward+backward step on JAX: stateless, weights as
    arguments, returning one scalar that depends on every gradient.
    `inputs`: how many times the layer takes `x` (1 for ours, `query` and
    `value` for Keras MHA)."""
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]

    def loss(weights, x, upstream):
        y, _ = layer.stateless_call(weights, frozen, *[x] * inputs)
        return jnp.sum(y * upstream)

    grad = jax.grad(loss, argnums=(0, 1))

    @jax.jit
    def step(weights, x, upstream):
        d_weights, d_x = grad(weights, x, upstream)
        # Reduce every gradient so that none is dead code.
        return sum(jnp.sum(g) for g in [d_x, *d_weights])

    return lambda x, upstream: step(trainable, x, upstream)


def tf_step(layer, inputs):
    """A `tf.function` forward+backward step, as attention_speed.py."""
    import tensorflow as tf

    weights = layer.trainable_weights

    @tf.function
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(*[x] * inputs) * upstream)
        grads = tape.gradient(loss, [x, *weights])
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    return step


def matmul_ceiling(backend, size=2048, repeats=5):
    """Median GFLOP/s of a `size x size` float32 matmul in `backend`."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.normal(size=(size, size)).astype("float32")
    if backend == "jax":
        import jax

        step = jax.jit(lambda a: (a @ a).sum())
        a = jax.numpy.asarray(a)
    else:
        import tensorflow as tf

        step = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
        a = tf.constant(a)
    float(step(a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(step(a))
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def worker(backend, configs, warmup, repeats):
    """Time ours and Keras MHA, interleaved, on this process' backend."""
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    from keras_selfattn import MultiHeadSelfAttention

    assert keras.backend.backend() == backend
    keras.utils.set_random_seed(0)
    result = {
        "backend": backend,
        "keras": keras.__version__,
        "ceiling_before": matmul_ceiling(backend),
        "configs": {},
    }
    if backend == "jax":
        import jax

        result["version"] = jax.__version__
    else:
        import tensorflow as tf

        result["version"] = tf.__version__
    for config in configs:
        batch, length = (int(v) for v in config.split("x"))
        ours, theirs = make_layers(keras, MultiHeadSelfAttention)
        rng = np.random.default_rng(0)
        x, upstream = (
            keras.ops.convert_to_tensor(
                rng.normal(size=(batch, length, WIDTH)).astype("float32")
            )
            for _ in range(2)
        )
        # The two layers compute the same function: check before timing.
        difference = float(keras.ops.max(keras.ops.abs(ours(x) - theirs(x, x))))
        assert difference < 1e-4, difference
        make_step = jax_step if backend == "jax" else tf_step
        steps = [make_step(ours, 1), make_step(theirs, 2)]
        # `float` waits for the result (JAX dispatches asynchronously).
        for step in steps:
            for _ in range(warmup):
                float(step(x, upstream))
        times = [[], []]
        for _ in range(repeats):
            for i, step in enumerate(steps):
                start = time.perf_counter()
                float(step(x, upstream))
                times[i].append(time.perf_counter() - start)
        result["configs"][config] = {
            "ours": times[0],
            "keras": times[1],
            "difference": difference,
        }
    result["ceiling_after"] = matmul_ceiling(backend)
    return result


def run_worker(backend, args):
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        backend,
        "--configs",
        *args.configs,
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{backend} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ms(seconds):
    return f"{seconds * 1e3:.1f}"


def report(runs, configs):
    """Markdown tables from the workers' timings."""
    lines = []
    first = {b: next(r for r in runs if r["backend"] == b) for b in BACKENDS}
    lines.append(
        f"Keras {first['jax']['keras']}, JAX {first['jax']['version']}, "
        f"TensorFlow {first['tensorflow']['version']}; width {WIDTH}, "
        f"{HEADS} heads, float32, forward+backward; {len(runs)} worker "
        "runs, alternating."
    )
    lines.append("")
    lines.append(
        "| batch x length | backend | ours (ms) | Keras MHA (ms) "
        "| speed-up (per-round range) |"
    )
    lines.append("|---|---|---|---|---|")
    medians = {}
    for config in configs:
        for backend in BACKENDS:
            mine = [r for r in runs if r["backend"] == backend]
            ours = [t for r in mine for t in r["configs"][config]["ours"]]
            keras_ = [t for r in mine for t in r["configs"][config]["keras"]]
            ratios = [
                statistics.median(r["configs"][config]["keras"])
                / statistics.median(r["configs"][config]["ours"])
                for r in mine
            ]
            medians[config, backend] = (
                statistics.median(ours),
                [statistics.median(r["configs"][config]["ours"]) for r in mine],
                statistics.median(keras_),
            )
            lines.append(
                f"| {config.replace('x', ' x ')} | {backend} "
                f"| {_ms(statistics.median(ours))} "
                f"| {_ms(statistics.median(keras_))} "
                f"| {statistics.median(ratios):.2f}x "
                f"({min(ratios):.2f}-{max(ratios):.2f}) |"
            )
    lines.append("")
    lines.append(
        "| batch x length | ours on JAX (ms, round range) "
        "| ours on TensorFlow (ms, round range) | TF time / JAX time "
        "| Keras MHA: TF / JAX |"
    )
    lines.append("|---|---|---|---|---|")
    for config in configs:
        jax_med, jax_rounds, jax_keras = medians[config, "jax"]
        tf_med, tf_rounds, tf_keras = medians[config, "tensorflow"]
        lines.append(
            f"| {config.replace('x', ' x ')} "
            f"| {_ms(jax_med)} ({_ms(min(jax_rounds))}-"
            f"{_ms(max(jax_rounds))}) "
            f"| {_ms(tf_med)} ({_ms(min(tf_rounds))}-{_ms(max(tf_rounds))}) "
            f"| {tf_med / jax_med:.2f}x | {tf_keras / jax_keras:.2f}x |"
        )
    lines.append("")
    for backend in BACKENDS:
        ceilings = [
            c
            for r in runs
            if r["backend"] == backend
            for c in (r["ceiling_before"], r["ceiling_after"])
        ]
        lines.append(
            f"{backend} 2048^3 float32 matmul: {min(ceilings):.0f}-"
            f"{max(ceilings):.0f} GFLOP/s over its workers."
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        help="BATCHxLENGTH pairs",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="worker runs per backend, alternating",
    )
    parser.add_argument(
        "--worker",
        choices=BACKENDS,
        help="run one backend's timings in this process, print JSON",
    )
    args = parser.parse_args(argv)
    if args.worker:
        print(
            json.dumps(
                worker(args.worker, args.configs, args.warmup, args.repeats)
            )
        )
        return 0
    load = os.getloadavg()[0]
    runs = []
    for _ in range(args.rounds):
        for backend in BACKENDS:
            runs.append(run_worker(backend, args))
            print(f"{backend} worker done", file=sys.stderr)
    print(report(runs, args.configs))
    print(
        f"\nLoad average {load:.1f} before, {os.getloadavg()[0]:.1f} after "
        f"({args.rounds} rounds x {args.repeats} repeats per backend)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
