"""Test accuracy of `examples/text_classification.py` within a time budget.

Trains from scratch on the shared data (no pretrained weights) with tuned
settings and a wall-clock training budget (the example's
`--time-budget-minutes`, checked after every batch), then reports the test
accuracy next to the issue's targets: SST-2 >= 0.80 within 10 minutes,
IMDB >= 0.87 within 15 minutes, on the project's 2-core CPU.

Usage:

    python benchmarks/quality_classification.py --dataset sst2
    python benchmarks/quality_classification.py --dataset imdb
    python benchmarks/quality_classification.py --dataset sst2 \\
        --time-budget-minutes 2 -- --epochs 1   # extra flags for the example

The machine's load average is printed before and after: other jobs on the
same cores slow training, and a fixed budget then buys fewer steps.
"""

import argparse
import json
import os
import sys
import time

from _examples import load_example

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = os.path.dirname(os.path.abspath(__file__))

# Chosen as described in quality_classification.md (two SST-2 runs).
SETTINGS = {
    "sst2": {
        "target": 0.80,
        "minutes": 10.0,
        "flags": [
            "--vocabulary-size",
            "10000",
            "--sequence-length",
            "64",
            "--embed-dim",
            "64",
            "--num-heads",
            "4",
            "--ff-dim",
            "128",
            "--num-layers",
            "2",
            "--dropout",
            "0.3",
            "--batch-size",
            "64",
            "--learning-rate",
            "1e-3",
            "--epochs",
            "3",
            "--early-stopping-patience",
            "1",
        ],
    },
    "imdb": {
        "target": 0.87,
        "minutes": 15.0,
        "flags": [
            "--vocabulary-size",
            "16000",
            "--sequence-length",
            "512",
            "--embed-dim",
            "64",
            "--num-heads",
            "4",
            "--ff-dim",
            "128",
            "--num-layers",
            "1",
            "--dropout",
            "0.3",
            "--batch-size",
            "32",
            "--learning-rate",
            "1e-3",
            "--lr-schedule",
            "cosine",
            "--warmup-steps",
            "200",
            "--epochs",
            "3",
            # The measured run kept its last epoch (the example now keeps
            # the best validation epoch by default).
            "--no-early-stopping",
        ],
    },
}


def _load_average():
    return [round(v, 2) for v in os.getloadavg()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(SETTINGS), default="sst2")
    p.add_argument(
        "--data-root",
        default=os.environ.get(
            "KERAS_SELFATTN_DATA",
            os.path.join(HERE, os.pardir, os.pardir, "shared", "data"),
        ),
        help="the shared data folder (holds classification/<dataset>)",
    )
    p.add_argument("--time-budget-minutes", type=float, default=None)
    p.add_argument("--output-dir", default=None)
    p.add_argument("--verbose", type=int, default=2)
    p.add_argument("extra", nargs="*", help="more flags for the example")
    args = p.parse_args(argv)
    setting = SETTINGS[args.dataset]
    minutes = args.time_budget_minutes or setting["minutes"]
    output_dir = args.output_dir or os.path.join(
        "runs", f"quality_{args.dataset}"
    )
    example_argv = [
        "--data-dir",
        os.path.join(args.data_root, "classification", args.dataset),
        "--output-dir",
        output_dir,
        # A benchmark measures a fresh run, even in a folder used before
        # (a finished run would otherwise be reported, not re-measured).
        "--overwrite",
        "--time-budget-minutes",
        str(minutes),
        "--verbose",
        str(args.verbose),
        *setting["flags"],
        *args.extra,
    ]
    print("example flags:", " ".join(example_argv))
    load_before = _load_average()
    print(f"load average before: {load_before} on {os.cpu_count()} cores")
    start = time.time()
    metrics = load_example("text_classification").main(example_argv)
    wall = time.time() - start
    load_after = _load_average()
    result = {
        "dataset": args.dataset,
        "test_accuracy": round(metrics["test_accuracy"], 4),
        "target": setting["target"],
        "met": metrics["test_accuracy"] >= setting["target"]
        and metrics["train_seconds"] <= 60 * setting["minutes"] + 30,
        "train_seconds": metrics["train_seconds"],
        "budget_minutes": minutes,
        "stopped_by_time_budget": metrics["stopped_by_time_budget"],
        "steps": metrics["steps"],
        "epochs": metrics["epochs"],
        "val_accuracy": [round(v, 4) for v in metrics["val_accuracy"]],
        "wall_seconds_total": round(wall, 1),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "example_flags": example_argv,
    }
    print(json.dumps(result, indent=2))
    with open(os.path.join(output_dir, "benchmark.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
