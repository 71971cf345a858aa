"""Does pre-training help? A classifier fine-tuned from a language model
against the same classifier trained from scratch, at equal CPU time.

Issue 16's target: on IMDB, the classifier fine-tuned from a language model
pre-trained on the IMDB training text beats the one trained from scratch
(`quality_classification.py --dataset imdb`, 0.8717) with the same total
training time. In one process, one after the other:

1. **scratch**: `examples/text_classification.py` with the IMDB settings of
   `quality_classification.py` (1 block, width 64, 512 tokens, 3 epochs);
   its training seconds `S` are the budget of the other arms.
2. **pre-training**: a `CausalLM` with the classifier's sizes on the
   training texts (SentencePiece), as the example's `--pretrain-minutes`
   does, for `--pretrain-fraction` of `S`.
3. **pretrained**, one arm per `--learning-rates` value: the classifier
   fine-tuned from that language model (`--from-lm`) for at most
   `--finetune-epochs` epochs, its time budget what is left of `S` after
   the measured pre-training seconds.

`--pretrain-minutes M` instead measures pre-training as a one-off cost
(one language model, trained once and reused by every classifier, as
`--from-lm` allows): the language model trains for `M` minutes, and each
fine-tuning arm gets the scratch arm's whole budget `S` and its epochs.
The table then compares equal fine-tuning time; its total column still
counts the pre-training.

Every arm scores the same test split; the table gives each arm's total
training seconds (pre-training included; at most about `S`, more by a
batch and a validation pass, less when the epochs end first) and their
ratio to `S`, beside its test accuracy and the difference from scratch.
Extra flags after `--` go to every arm and the pre-training (e.g. `--
--max-train-rows 10000` for a 10k-row subset); the budgets, epochs and
rates stay the benchmark's.

`--settings defaults` gives every arm the example's default model flags
(sized to the data) instead of the tuned ones: what a user's plain command
does, e.g. on a 10,000-row subset (issue 16's held-out-shaped check). The
scratch arm also fits the example's TF-IDF + logistic regression baseline,
printed under the table.

Usage:

    python benchmarks/pretraining_quality.py
    python benchmarks/pretraining_quality.py --learning-rates 3e-4,1e-3 \\
        --json /tmp/pretraining.json
    python benchmarks/pretraining_quality.py --settings defaults \\
        --pretrain-fraction 0.5 -- --max-train-rows 10000
    python benchmarks/pretraining_quality.py --pretrain-minutes 60

The machine's load average is printed before and after each arm: other
jobs on the same cores slow training, and a fixed budget then buys fewer
steps (and the arms run one after the other, not interleaved).
"""

import argparse
import json
import os
import sys
import time

from _examples import load_example
from quality_classification import SETTINGS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_average():
    return [round(v, 2) for v in os.getloadavg()]


def _floats(text):
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected positive numbers separated by commas, got {text!r}"
        )
    return values


def _fraction(text):
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a number between 0 and 1 (excluded), got {text!r}"
        )
    return value


def _positive(text):
    value = float(text)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(
            f"expected a positive number, got {text!r}"
        )
    return value


def _run_arm(name, example_argv):
    print(f"\n=== {name}: examples/text_classification.py", end=" ")
    print(" ".join(example_argv))
    before = _load_average()
    print(f"load average before: {before} on {os.cpu_count()} cores")
    start = time.time()
    # A fresh module per arm: the example keeps no state between calls,
    # but its flags' defaults are read at parse time.
    metrics = load_example("text_classification").main(example_argv)
    wall = time.time() - start
    after = _load_average()
    pretrain = metrics.get("pretrain") or {}
    return {
        "arm": name,
        "test_accuracy": round(metrics["test_accuracy"], 4),
        "best_val_accuracy": round(max(metrics["val_accuracy"]), 4),
        "learning_rate": metrics["config"]["learning_rate"]
        if "config" in metrics
        else None,
        "finetune_steps": metrics["steps"],
        "finetune_seconds": round(metrics["train_seconds"], 1),
        "pretrain_steps": pretrain.get("steps"),
        "pretrain_seconds": pretrain.get("train_seconds"),
        "lm_test_perplexity": pretrain.get("test_perplexity"),
        "total_train_seconds": round(metrics["total_train_seconds"], 1),
        "sequence_length": metrics["config"]["sequence_length"],
        "epochs": metrics["config"]["epochs"],
        "baseline_tfidf_logreg_accuracy": metrics.get(
            "baseline_tfidf_logreg_accuracy"
        ),
        "stopped_by_time_budget": metrics["stopped_by_time_budget"],
        "wall_seconds": round(wall, 1),
        "load_average_before": before,
        "load_average_after": after,
        "example_flags": example_argv,
    }


def _pretrain(example_argv):
    """Pre-train the language model as `--pretrain-minutes` does (the
    example's `pretrain_language_model`, into `<output-dir>/pretrain`)
    and return its folder."""
    print("\n=== pre-training: examples/text_classification.py", end=" ")
    print(" ".join(example_argv))
    print(f"load average before: {_load_average()}")
    example = load_example("text_classification")
    args = example.parse_args(example_argv)
    example.check_start_flags(args)
    example.fill_default_sizes(args)
    if args.sequence_length is None:
        # As the example sizes it, from the training texts.
        splits, _ = example.load_splits(args, args.data_dir)
        args.sequence_length, _ = example.default_sequence_length(
            splits["train"][0]
        )
    lm_dir = example.pretrain_language_model(args, args.data_dir)
    print(f"load average after: {_load_average()}")
    return lm_dir


def _table(rows):
    scratch = rows[0]["test_accuracy"]
    budget = rows[0]["total_train_seconds"]
    lines = [
        "| arm | learning rate | LM steps | LM s | LM ppl | fine-tune steps "
        "| fine-tune s | total s | total / scratch | best val acc "
        "| test acc | vs scratch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ppl = row["lm_test_perplexity"]
        lines.append(
            f"| {row['arm']} | {row['learning_rate']:g} "
            f"| {row['pretrain_steps'] or '-'} "
            f"| {row['pretrain_seconds'] or '-'} "
            f"| {f'{ppl:.1f}' if ppl else '-'} "
            f"| {row['finetune_steps']} | {row['finetune_seconds']} "
            f"| {row['total_train_seconds']} "
            f"| {row['total_train_seconds'] / budget:.2f} "
            f"| {row['best_val_accuracy']:.4f} "
            f"| {row['test_accuracy']:.4f} "
            f"| {row['test_accuracy'] - scratch:+.4f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data-root",
        default=os.environ.get(
            "KERAS_SELFATTN_DATA",
            os.path.join(HERE, os.pardir, os.pardir, "shared", "data"),
        ),
        help="the shared data folder (holds classification/imdb)",
    )
    p.add_argument("--dataset", choices=sorted(SETTINGS), default="imdb")
    p.add_argument(
        "--settings",
        choices=("tuned", "defaults"),
        default="tuned",
        help="the model flags of every arm: quality_classification.py's "
        "tuned ones for the dataset, or none (the example's defaults, "
        "sized to the data)",
    )
    p.add_argument(
        "--scratch-minutes",
        type=float,
        default=None,
        help="the scratch arm's time budget (default: the dataset's "
        "quality_classification.py budget; it usually ends its epochs "
        "first)",
    )
    p.add_argument(
        "--pretrain-fraction",
        type=_fraction,
        default=1 / 3,
        help="the share of the scratch arm's seconds spent pre-training",
    )
    p.add_argument(
        "--pretrain-minutes",
        type=_positive,
        default=None,
        help="pre-train for this many minutes as a one-off cost: every "
        "fine-tuning arm then gets the scratch arm's whole budget and "
        "epochs (instead of --pretrain-fraction)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=None,
        help="the fine-tuning arms' epochs (default: 2 at equal total "
        "time, the scratch arm's with --pretrain-minutes)",
    )
    p.add_argument(
        "--learning-rates",
        type=_floats,
        default=[3e-4],
        help="fine-tuning rates, comma-separated (one arm each)",
    )
    p.add_argument("--output-dir", default=os.path.join("runs", "pretraining"))
    p.add_argument("--json", default=None)
    p.add_argument("--verbose", type=int, default=2)
    p.add_argument("extra", nargs="*", help="more flags for every arm")
    args = p.parse_args(argv)
    one_off = args.pretrain_minutes is not None
    setting = SETTINGS[args.dataset]
    common = [
        "--data-dir",
        os.path.join(args.data_root, "classification", args.dataset),
        # A benchmark measures fresh runs, even in folders used before.
        "--overwrite",
        "--verbose",
        str(args.verbose),
        *(setting["flags"] if args.settings == "tuned" else []),
    ]
    rows = []
    scratch_minutes = args.scratch_minutes or setting["minutes"]
    # The extra flags come before each arm's own: the budgets, epochs and
    # rates below are the benchmark's and cannot be overridden.
    rows.append(
        _run_arm(
            "scratch",
            [
                *common,
                *args.extra,
                # The TF-IDF + logistic regression baseline, once.
                "--baseline",
                "--output-dir",
                os.path.join(args.output_dir, "scratch"),
                "--time-budget-minutes",
                str(scratch_minutes),
            ],
        )
    )
    budget = rows[0]["total_train_seconds"]
    finetune_epochs = args.finetune_epochs
    if finetune_epochs is None:
        # One-off: the epochs the scratch arm ran with (its run's config).
        finetune_epochs = rows[0]["epochs"] if one_off else 2
    # Pre-trained once, as the example's --pretrain-minutes does; every
    # fine-tuning arm then starts from it (--from-lm) with what is left
    # of the scratch arm's seconds after the measured pre-training.
    lm_dir = _pretrain(
        [
            *common,
            *args.extra,
            "--no-baseline",
            "--output-dir",
            os.path.join(args.output_dir, "pretrained"),
            "--pretrain-minutes",
            f"{args.pretrain_minutes:g}"
            if one_off
            else f"{args.pretrain_fraction * budget / 60:.3f}",
        ]
    )
    with open(os.path.join(lm_dir, "metrics.json")) as f:
        lm_seconds = json.load(f)["train_seconds"]
    # One-off: the language model is reused, each arm gets all of S.
    left = (budget if one_off else max(budget - lm_seconds, 1.0)) / 60
    for rate in args.learning_rates:
        rows.append(
            _run_arm(
                "pretrained",
                [
                    *common,
                    *args.extra,
                    "--no-baseline",
                    "--output-dir",
                    os.path.join(args.output_dir, f"finetuned_lr{rate:g}"),
                    "--from-lm",
                    lm_dir,
                    "--epochs",
                    str(finetune_epochs),
                    "--learning-rate",
                    f"{rate:g}",
                    "--time-budget-minutes",
                    f"{left:.3f}",
                ],
            )
        )
    print()
    if one_off:
        print(
            f"Pre-training is a one-off cost here ({lm_seconds:.0f} s): each "
            "fine-tuning arm had the scratch arm's whole budget."
        )
    print(_table(rows))
    baseline = rows[0]["baseline_tfidf_logreg_accuracy"]
    if baseline is not None:
        print(f"\nTF-IDF + logistic regression baseline: {baseline:.4f}")
    result = {
        "dataset": args.dataset,
        "budget_seconds": budget,
        "settings": args.settings,
        "pretrain_fraction": None if one_off else args.pretrain_fraction,
        "pretrain_minutes": args.pretrain_minutes,
        "pretraining_counted": "one-off" if one_off else "in the budget",
        "pretrain_seconds": lm_seconds,
        "finetune_epochs": finetune_epochs,
        "arms": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
