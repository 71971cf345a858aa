"""Perplexity of `CausalLM` against a model built from KerasHub's layers.

Issue 16's quality target: the same architecture size and the same
30-minute CPU budget on the IMDB text; our test perplexity must be at most
that of the KerasHub model.

Both models see the same data, cut the same way, with the same optimizer:
the text-generation example's defaults (`examples/text_generation.py`:
its `clean_text`, a SentencePiece tokenizer of 8,000 pieces learned from
the first 2,000 training reviews, 128-token windows, batch 32, Adam with
`beta_2=0.98` and clipping, learning rate 1e-3 on the example's cosine
schedule), and the same steps of its recipe
(`keras_selfattn.recipes.language_model`: `read_language_model_data`,
`build_language_model`, `evaluate_perplexity`). The models:

- ours: the example's `CausalLM` (2 layers, width 128, 4 heads,
  feed-forward 512, rotary positions, pre-norm, tied embeddings, dropout
  0.1), built by `build_language_model`;
- KerasHub: `keras_hub.models.GPT2Backbone` with the same sizes and
  dropout (learned positions, pre-norm `TransformerDecoder`s, tied
  embeddings: GPT-2's layout) and the logits from its
  `ReversibleEmbedding`, the forward pass of `GPT2CausalLM`, compiled
  exactly as ours.

The machine is shared and noisy, so the two do not train one after the
other: they alternate in chunks of `--chunk-minutes` (the first model of a
round alternating too) until each has had `--minutes` of training, each
chunk a `fit` on a freshly shuffled pass of the windows, so load that
comes and goes falls on both. Then each is scored on the same test windows
(the first `--max-eval-rows` test reviews, the example's default): the
exact perplexity over every real target token and the bits per character.
The table also gives the optimizer steps and the training tokens per
second each reached. Needs `keras-hub` (the `benchmarks` extra).

Usage:

    python benchmarks/lm_quality.py --minutes 30
    python benchmarks/lm_quality.py --minutes 1 --chunk-minutes 0.5 \\
        --max-train-rows 2000 --max-eval-rows 100    # a smoke run
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _examples import load_example  # noqa: E402

from keras_selfattn.models.causal_lm import next_token_batch  # noqa: E402
from keras_selfattn.recipes import LanguageModelOptions  # noqa: E402
from keras_selfattn.recipes import TimeBudget  # noqa: E402
from keras_selfattn.recipes import language_model as recipe  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
DATA = os.environ.get(
    "KERAS_SELFATTN_DATA", os.path.join(ROOT, os.pardir, "shared", "data")
)


def example_options(argv):
    """The text-generation example's options (its defaults, then `argv`)."""
    example = load_example("text_generation")
    args = vars(example.parse_args(argv))
    fields = {f.name for f in dataclasses.fields(LanguageModelOptions)}
    options = LanguageModelOptions(
        **{k: v for k, v in args.items() if k in fields}
    )
    return options, example.clean_text


def build_kerashub_lm(vocabulary_size, options, total_steps):
    """KerasHub's GPT-2 layout at our sizes, compiled as ours is."""
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size,
        num_layers=options.num_layers,
        num_heads=options.num_heads,
        hidden_dim=options.hidden_dim,
        intermediate_dim=options.ff_dim,
        dropout=options.dropout,
        max_sequence_length=options.sequence_length,
    )
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    # Id 0 is padding (the tail of a document's last window).
    padding_mask = keras.ops.cast(keras.ops.not_equal(token_ids, 0), "int32")
    hidden = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    logits = backbone.token_embedding(hidden, reverse=True)  # (B, T, V)
    model = keras.Model(token_ids, logits, name="kerashub_gpt2_lm")
    return recipe.compile_language_model(model, options, total_steps)


def windows_dataset(windows, batch_size, seed):
    """A freshly shuffled pass over `windows`, as next-token batches."""
    ds = tf.data.Dataset.from_tensor_slices(windows)
    ds = ds.shuffle(len(windows), seed=seed).batch(batch_size)
    return ds.map(next_token_batch).prefetch(tf.data.AUTOTUNE)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--chunk-minutes", type=float, default=5.0)
    p.add_argument("--max-train-rows", type=int, default=None)
    p.add_argument("--max-eval-rows", type=int, default=None)
    p.add_argument("--output-dir", default="runs/lm_quality")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.chunk_minutes <= 0:
        p.error("--minutes and --chunk-minutes must be positive")

    data_dir = os.path.join(DATA, "classification", "imdb")
    example_args = ["--data-dir", data_dir]
    if args.max_train_rows is not None:
        example_args += ["--max-train-rows", str(args.max_train_rows)]
    if args.max_eval_rows is not None:
        example_args += ["--max-eval-rows", str(args.max_eval_rows)]
    options, clean_text = example_options(example_args)
    data = recipe.read_language_model_data(
        data_dir, args.output_dir, options, preprocess=clean_text
    )
    vocabulary_size = data.tokenizer.vocabulary_size
    train = data.windows("train", options.sequence_length)
    test = data.windows("test", options.sequence_length, options.max_eval_rows)
    scored = data.splits["test"][: options.max_eval_rows]
    characters = sum(len(text) for text in scored)
    # The example's schedule length: its epochs of `steps_per_epoch` steps.
    total_steps = options.epochs * options.steps_per_epoch
    print(f"{len(train)} training windows, {len(test)} test windows")

    keras.utils.set_random_seed(options.seed)
    models = {
        "ours (CausalLM)": recipe.build_language_model(
            vocabulary_size, options, total_steps
        ),
    }
    keras.utils.set_random_seed(options.seed)
    models["KerasHub (GPT2Backbone)"] = build_kerashub_lm(
        vocabulary_size, options, total_steps
    )
    seconds = {name: 0.0 for name in models}
    chunks = math.ceil(args.minutes / args.chunk_minutes - 1e-9)
    for chunk in range(chunks):
        minutes = min(
            args.chunk_minutes, args.minutes - chunk * args.chunk_minutes
        )
        names = list(models)
        if chunk % 2:
            names.reverse()
        for name in names:
            model = models[name]
            start = time.monotonic()
            model.fit(
                windows_dataset(
                    train, options.batch_size, options.seed + chunk
                ).repeat(),
                epochs=1,
                steps_per_epoch=10**9,
                callbacks=[TimeBudget(minutes)],
                verbose=0,
            )
            seconds[name] += time.monotonic() - start
            steps = int(model.optimizer.iterations.numpy())
            print(
                f"chunk {chunk + 1}/{chunks} {name}: {steps} steps, "
                f"{seconds[name]:.0f} s, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )

    rows = []
    for name, model in models.items():
        scores = recipe.evaluate_perplexity(model, test, options.batch_size)
        steps = int(model.optimizer.iterations.numpy())
        tokens = steps * options.batch_size * options.sequence_length
        rows.append(
            {
                "model": name,
                "parameters": int(model.count_params()),
                "steps": steps,
                "train_seconds": round(seconds[name], 1),
                "train_tokens_per_second": round(tokens / seconds[name]),
                "test_perplexity": scores["perplexity"],
                "test_bits_per_character": (
                    scores["loss"] * scores["tokens"] / math.log(2) / characters
                ),
                "test_tokens": scores["tokens"],
            }
        )
    result = {
        "minutes": args.minutes,
        "chunk_minutes": args.chunk_minutes,
        "eval_rows": len(scored),
        "train_windows": int(len(train)),
        "vocabulary_size": int(vocabulary_size),
        "options": dataclasses.asdict(options),
        "rows": rows,
    }
    print(
        "| model | parameters | steps | train s | tokens/s "
        "| test perplexity | bits/char |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['parameters']:,} | {row['steps']} "
            f"| {row['train_seconds']:.0f} "
            f"| {row['train_tokens_per_second']:,} "
            f"| {row['test_perplexity']:.2f} "
            f"| {row['test_bits_per_character']:.4f} |"
        )
    ours, theirs = rows
    met = ours["test_perplexity"] <= theirs["test_perplexity"]
    print(
        f"perplexity ratio ours / KerasHub: "
        f"{ours['test_perplexity'] / theirs['test_perplexity']:.3f} "
        f"(target <= 1: {'met' if met else 'NOT met'})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
