"""Quality of the seq2seq examples on the shared data, under a time budget.

Runs `examples/translation.py` (Tatoeba en->es, sacrebleu BLEU on the test
split) and/or `examples/summarization.py` (SAMSum, ROUGE-1/2/L/Lsum on the
test split) from scratch on this machine and prints one JSON line per task
with the metric, the training time and the command.

    python benchmarks/quality_seq2seq.py --task translation --minutes 45
    python benchmarks/quality_seq2seq.py --task summarization --minutes 45

Targets (2-core CPU, issue 3): en->es BLEU >= 25; SAMSum ROUGE-2 > 8.68
(LEAD-3) and ROUGE-1 >= 30, each within 45 minutes of training.
Extra arguments after `--` go to the example (they override the defaults
below).
"""

import argparse
import json
import os
import sys
import time

from _examples import load_example

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
DATA = os.environ.get(
    "KERAS_SELFATTN_DATA", os.path.join(ROOT, os.pardir, "shared", "data")
)

# Sizes chosen for a 2-core CPU; the time budget stops training.
TASKS = {
    "translation": {
        "data": os.path.join("translation", "spa_eng"),
        "flags": [
            "--embed-dim",
            "256",
            "--num-heads",
            "8",
            "--ff-dim",
            "1024",
            "--num-encoder-layers",
            "2",
            "--num-decoder-layers",
            "2",
            "--source-length",
            "24",
            "--target-length",
            "24",
            "--vocabulary-size",
            "8000",
            "--batch-size",
            "64",
            "--learning-rate",
            "5e-4",
            "--epochs",
            "30",
        ],
        "targets": {"bleu": 25.0},
    },
    "summarization": {
        "data": os.path.join("summarization", "samsum"),
        "flags": [
            "--embed-dim",
            "256",
            "--num-heads",
            "8",
            "--ff-dim",
            "1024",
            "--num-encoder-layers",
            "2",
            "--num-decoder-layers",
            "2",
            "--source-length",
            "192",
            "--target-length",
            "48",
            "--vocabulary-size",
            "8000",
            "--shared-vocabulary",
            "--copy-attention",
            "--batch-size",
            "32",
            "--learning-rate",
            "5e-4",
            "--lr-schedule",
            "cosine",
            "--warmup-steps",
            "400",
            "--epochs",
            "9",
            "--decoding",
            "beam",
            "--beam-width",
            "4",
            "--no-repeat-ngram-size",
            "3",
        ],
        "targets": {"rouge2": 8.68, "rouge1": 30.0},
    },
}


def run(task, minutes, output_dir, extra, max_eval_rows):
    spec = TASKS[task]
    argv = [
        "--data-dir",
        os.path.join(DATA, spec["data"]),
        "--output-dir",
        output_dir,
        # A benchmark measures a fresh run, even in a folder used before
        # (a finished run would otherwise be reported, not re-measured).
        "--overwrite",
        "--time-budget-minutes",
        str(minutes),
        "--verbose",
        "2",
        *spec["flags"],
    ]
    if max_eval_rows is not None:
        argv += ["--max-eval-rows", str(max_eval_rows)]
    argv += extra
    start = time.time()
    metrics = load_example(task).main(argv)
    keys = ("bleu",) if task == "translation" else ("rouge1", "rouge2")
    result = {
        "task": task,
        "command": f"python examples/{task}.py " + " ".join(argv),
        **{k: round(metrics[k], 2) for k in keys},
        "targets": spec["targets"],
        "met": all(metrics[k] >= v for k, v in spec["targets"].items()),
        "train_minutes": round(metrics["train_seconds"] / 60, 1),
        "total_minutes": round((time.time() - start) / 60, 1),
        "steps": metrics["steps"],
        "eval_rows": metrics["eval_rows"],
    }
    print(json.dumps(result))
    return result


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--task",
        choices=("translation", "summarization", "both"),
        default="both",
    )
    p.add_argument("--minutes", type=float, default=45.0)
    p.add_argument("--max-eval-rows", type=int, default=None)
    p.add_argument("--output-dir", default="runs/quality_seq2seq")
    args = p.parse_args(argv)
    tasks = list(TASKS) if args.task == "both" else [args.task]
    return [
        run(
            task,
            args.minutes,
            os.path.join(args.output_dir, task),
            extra,
            args.max_eval_rows,
        )
        for task in tasks
    ]


if __name__ == "__main__":
    main()
