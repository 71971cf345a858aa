"""Overhead of relative positions (rotary, ALiBi, T5) inside attention.

`MultiHeadSelfAttention(8 heads, width 256, causal=True)`, one
forward+backward step (the gradients with respect to the input and every
weight, inside a `tf.function`, as in `attention_speed.py`), for each
variant of the layer:

- `plain`: no positions;
- `rotary`: `position_embedding="rotary"`;
- `alibi`: `position_embedding="alibi"`;
- `relative`: `position_embedding="relative"` (T5's learned bias; reported,
  no target);
- `soft_cap`: `logit_soft_cap=50.0` (reported, no target);
- `qk_norm`: `qk_norm=True` (reported, no target).

Every variant gets the plain layer's projection weights (the `qk_norm`
scales start at ones) and the same input. The variants run interleaved
within each round (the order rotates from round to round, so no variant
always follows the same one); the table gives the median time, its spread
(min-max over the rounds) and the ratio to `plain`: the ratio of the
medians, and the min-max of the per-round ratios. Target (issue 14):
rotary and ALiBi at most 1.15x plain.

Default configurations (`--configs IMPL:BATCHxLENGTH`): the dense path at
8 x 512 and 2 x 2,048, the chunked path at 1 x 8,192.

Usage:

    python benchmarks/position_overhead.py
    python benchmarks/position_overhead.py --configs dense:8x512 --repeats 9
    python benchmarks/position_overhead.py --variants plain rotary alibi
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
DEFAULT_CONFIGS = ("dense:8x512", "dense:2x2048", "chunked:1x8192")
# Layer arguments of each variant, on top of the shared ones.
VARIANTS = {
    "plain": {},
    "rotary": {"position_embedding": "rotary"},
    "alibi": {"position_embedding": "alibi"},
    "relative": {"position_embedding": "relative"},
    "soft_cap": {"logit_soft_cap": 50.0},
    "qk_norm": {"qk_norm": True},
}
TARGET = 1.15  # rotary and ALiBi: at most 15 % over plain
TARGETED = ("rotary", "alibi")
PROJECTIONS = ("query", "key", "value", "output")


def parse_config(text):
    """`"dense:8x512"` -> `("dense", 8, 512)`."""
    impl, shape = text.split(":")
    batch, length = (int(v) for v in shape.split("x"))
    return impl, batch, length


def make_layers(impl, variants):
    """One built layer per variant, all with the first one's projections."""
    layers = {}
    x = np.zeros((1, 4, WIDTH), "float32")
    for name in variants:
        layer = MultiHeadSelfAttention(
            HEADS, causal=True, attention_impl=impl, **VARIANTS[name]
        )
        layer(x)
        layers[name] = layer
    reference = layers[variants[0]]
    for layer in layers.values():
        # Copy kernel and bias of each projection (the weight lists differ
        # in length: `qk_norm` adds two scales, which start at ones).
        for target in PROJECTIONS:
            for part in ("kernel", "bias"):
                attr = f"{target}_{part}"
                getattr(layer, attr).assign(getattr(reference, attr))
    return layers


def train_step(layer):
    weights = layer.trainable_weights

    @tf.function
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, *weights])
        # Reduce every gradient so none of them is pruned from the graph.
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    return step


def measure(steps, x, upstream, warmup, repeats):
    """`{name: [seconds per round]}`, the steps interleaved in each round
    with the order rotated by one each round."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name](x, upstream).numpy()
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            steps[name](x, upstream).numpy()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times, reference="plain"):
    """Rows `(name, median ms, min ms, max ms, ratio, ratio min, ratio
    max)`: ratio of the medians, and the spread of the per-round ratios."""
    ref = times[reference]
    rows = []
    for name, samples in times.items():
        ratios = [s / r for s, r in zip(samples, ref, strict=True)]
        rows.append(
            (
                name,
                1e3 * statistics.median(samples),
                1e3 * min(samples),
                1e3 * max(samples),
                statistics.median(samples) / statistics.median(ref),
                min(ratios),
                max(ratios),
            )
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        help="IMPL:BATCHxLENGTH, IMPL an `attention_impl`",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="the first one is the reference of the ratios (plain)",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--long-length",
        type=int,
        default=8192,
        help="from this length on, use --long-warmup and --long-repeats",
    )
    parser.add_argument("--long-warmup", type=int, default=1)
    parser.add_argument("--long-repeats", type=int, default=7)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(
        f"width {WIDTH}, {HEADS} heads, causal, float32, fwd+bwd; "
        f"ratios against {args.variants[0]!r}"
    )
    tables = []
    for config in args.configs:
        impl, batch, length = parse_config(config)
        long = length >= args.long_length
        warmup = args.long_warmup if long else args.warmup
        repeats = args.long_repeats if long else args.repeats
        layers = make_layers(impl, args.variants)
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=(batch, length, WIDTH)), "float32")
        upstream = tf.constant(
            rng.normal(size=(batch, length, WIDTH)), "float32"
        )
        steps = {name: train_step(layer) for name, layer in layers.items()}
        start = time.perf_counter()
        times = measure(steps, x, upstream, warmup, repeats)
        elapsed = time.perf_counter() - start
        rows = summarize(times, args.variants[0])
        tables.append((impl, batch, length, repeats, rows))
        print(
            f"\n{impl} {batch} x {length}: {repeats} rounds after {warmup} "
            f"warm-up, {elapsed:.0f} s, load average "
            f"{os.getloadavg()[0]:.2f}"
        )
        print(
            "| variant | median (ms) | min-max (ms) | ratio to plain "
            "| per-round ratios |"
        )
        print("|---|---|---|---|---|")
        for name, med, low, high, ratio, r_low, r_high in rows:
            print(
                f"| {name} | {med:.1f} | {low:.1f}-{high:.1f} "
                f"| {ratio:.3f}x | {r_low:.2f}-{r_high:.2f} |"
            )
    print(f"\nTarget: {', '.join(TARGETED)} <= {TARGET:.2f}x plain")
    met = True
    for impl, batch, length, _, rows in tables:
        for name, *_, ratio, _low, _high in rows:
            if name in TARGETED:
                ok = ratio <= TARGET
                met = met and ok
                verdict = "met" if ok else "NOT met"
                print(f"  {impl} {batch} x {length} {name}: {verdict}")
    print("all met" if met else "not all met")
    return tables


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
