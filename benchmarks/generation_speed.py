"""Generation speed of `CausalLM` (issue 16 targets).

1. Tokens per second against KerasHub's `GPT2CausalLM.generate` with a
   same-sized randomly initialised `GPT2Backbone` (4 layers, width 256, 8
   heads, feed-forward 1,024, learned positions, pre-norm, tied
   embeddings): 32-token prompts, 128 new tokens, batch 1 and 16, greedy
   and top-p (p = 0.9). No stop token, so both generate every token.
   Target: ours >= 1.5x.
2. Cached against uncached decoding at 512 new tokens (batch 1, greedy):
   "uncached" re-runs the whole model over the sequence so far for every
   new token (what a model without a key/value cache does, on a fixed
   buffer so it traces once). Target: >= 10x.

Each side is called as a user calls it: our `model.generate(...)` eagerly,
which runs a compiled function (XLA by default, traced once before timing),
and KerasHub's `generate`, which compiles its own (XLA too, on TensorFlow
with `jit_compile="auto"`). Part 1 also times ours inside a plain
`tf.function` (`jit_compile=False`), for the graph without XLA. The models
alternate round by round and the table gives medians, the min-max over
rounds and the ratio of the medians. Needs `keras-hub` (the `benchmarks`
extra) for part 1.

Usage:

    python benchmarks/generation_speed.py
    python benchmarks/generation_speed.py --rounds 5 --skip-kerashub
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

from keras_selfattn.models import CausalLM  # noqa: E402

VOCAB, LAYERS, WIDTH, HEADS, FF = 5000, 4, 256, 8, 1024
PROMPT, NEW, LONG = 32, 128, 512


def ours(max_length):
    return CausalLM(
        VOCAB,
        LAYERS,
        WIDTH,
        HEADS,
        FF,
        max_length=max_length,
        position_embedding="learned",
        dropout=0.0,
        tie_embeddings=True,
    )


def prompts(batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, VOCAB, (batch, PROMPT)).astype("int32")


def timed(fn, rounds):
    fn()  # trace and warm up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ours_generate(model, sampler, jit_compile=True):
    def run(ids):
        return model.generate(
            ids, NEW, sampler=sampler, seed=1, jit_compile=jit_compile
        )

    return run


def kerashub_generate(batch, sampler):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=LAYERS,
        num_heads=HEADS,
        hidden_dim=WIDTH,
        intermediate_dim=FF,
        dropout=0.0,
        max_sequence_length=PROMPT + NEW,
    )
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    if sampler == "top_p":
        model.compile(sampler=keras_hub.samplers.TopPSampler(p=0.9, seed=1))
    else:
        model.compile(sampler="greedy")
    ids = np.zeros((batch, PROMPT + NEW), "int32")
    ids[:, :PROMPT] = prompts(batch)
    mask = np.zeros((batch, PROMPT + NEW), bool)
    mask[:, :PROMPT] = True
    inputs = {"token_ids": ids, "padding_mask": mask}

    def run():
        out = model.generate(inputs, stop_token_ids=None)
        assert out["token_ids"].shape == (batch, PROMPT + NEW)

    return run


def part_kerashub(rounds, samplers=("greedy", "top_p")):
    print("\n## CausalLM.generate vs KerasHub GPT2CausalLM.generate")
    print(f"{LAYERS} layers, width {WIDTH}, {HEADS} heads, ff {FF}, ", end="")
    print(f"vocabulary {VOCAB}, {PROMPT}-token prompts, {NEW} new tokens\n")
    print(
        "| batch | sampler | ours (tok/s) | KerasHub (tok/s) | speed-up "
        "| ours, no XLA (tok/s) |"
    )
    print("|---|---|---|---|---|---|")
    results = {}
    for batch in (1, 16):
        for sampler in samplers:
            model = ours(PROMPT + NEW)
            ids = tf.constant(prompts(batch))
            run = ours_generate(model, sampler)
            plain = ours_generate(model, sampler, jit_compile=False)
            theirs = kerashub_generate(batch, sampler)
            run(ids)
            plain(ids)
            theirs()
            mine, hub, graph = [], [], []
            for _ in range(rounds):
                mine += timed(lambda run=run, ids=ids: run(ids), 1)
                hub += timed(theirs, 1)
                graph += timed(lambda plain=plain, ids=ids: plain(ids), 1)
            tokens = batch * NEW
            ours_rate = tokens / statistics.median(mine)
            hub_rate = tokens / statistics.median(hub)
            results[(batch, sampler)] = ours_rate / hub_rate
            print(
                f"| {batch} | {sampler} | {ours_rate:.0f} "
                f"({tokens / max(mine):.0f}-{tokens / min(mine):.0f}) | "
                f"{hub_rate:.0f} ({tokens / max(hub):.0f}-"
                f"{tokens / min(hub):.0f}) | {ours_rate / hub_rate:.2f}x | "
                f"{tokens / statistics.median(graph):.0f} |"
            )
    return results


def part_cache(rounds):
    print(f"\n## Cached vs uncached, {LONG} new tokens, batch 1, greedy\n")
    length = PROMPT + LONG
    model = ours(length)
    ids = tf.constant(prompts(1))

    @tf.function
    def cached(ids):
        return model.generate(ids, LONG, sampler="greedy")

    @tf.function
    def uncached(ids):
        buffer = tf.concat([ids, tf.zeros((1, LONG), tf.int32)], axis=1)

        def body(i, buffer):
            # The whole model over the fixed buffer; causal attention
            # makes position i independent of the zeros after it.
            logits = model(buffer)  # (1, L, V)
            token = tf.argmax(logits[:, i - 1], axis=-1, output_type=tf.int32)
            buffer = tf.tensor_scatter_nd_update(buffer, [[0, i]], token)
            return i + 1, buffer

        _, buffer = tf.while_loop(
            lambda i, _: i < length, body, (tf.constant(PROMPT), buffer)
        )
        return buffer[:, PROMPT:]

    same = np.array_equal(cached(ids).numpy(), uncached(ids).numpy())
    fast, slow = [], []
    for _ in range(rounds):
        fast += timed(lambda: cached(ids), 1)
        slow += timed(lambda: uncached(ids), 1)
    ratio = statistics.median(slow) / statistics.median(fast)
    print("| decoding | median (s) | min-max (s) |")
    print("|---|---|---|")
    print(
        f"| cached | {statistics.median(fast):.2f} | "
        f"{min(fast):.2f}-{max(fast):.2f} |"
    )
    print(
        f"| uncached | {statistics.median(slow):.2f} | "
        f"{min(slow):.2f}-{max(slow):.2f} |"
    )
    print(f"\ncached speed-up: {ratio:.1f}x; same tokens: {same}")
    return ratio, same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-kerashub", action="store_true")
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--samplers", nargs="+", default=["greedy", "top_p"])
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    ok = True
    if not args.skip_kerashub:
        for key, ratio in part_kerashub(args.rounds, args.samplers).items():
            met = ratio >= 1.5
            ok &= met
            print(f"  {key}: {ratio:.2f}x {'met' if met else 'NOT met'}")
    if not args.skip_cache:
        ratio, same = part_cache(args.rounds)
        met = ratio >= 10 and same
        ok &= met
        print(f"  cached >= 10x uncached: {'met' if met else 'NOT met'}")
    print("all met" if ok else "not all met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
