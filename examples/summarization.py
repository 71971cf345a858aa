"""
Title: Dialogue summarization (SAMSum) with a self-attention Transformer
Description: Learn a WordPiece vocabulary, train an encoder-decoder
    Transformer from scratch on messenger-style chats and their summaries
    with checkpoints that survive an interruption, decode with the cached
    greedy or beam search, score with ROUGE, and save an end-to-end model
    that takes a raw dialogue string and returns its summary.
Requirements: keras-selfattn[examples] (tensorflow, keras, tensorflow-text,
    rouge-score, matplotlib for the attention plot; checked at start),
    tensorboard for full TensorBoard logs (optional).

Usage:

    python examples/summarization.py \\
        --data-dir ../shared/data/summarization/samsum --output-dir runs/samsum

`--data-dir` is required. SAMSum (Gliwa et al., 2019; CC BY-NC-ND 4.0) has
no stable canonical download URL: the original `corpus.7z` sits in the arXiv
paper's ancillary files (a 7-Zip archive, which neither Python nor Keras'
`get_file` can unpack), and the Hugging Face copies are community uploads
that have been moved, renamed and re-exported over time. Rather than
download something that may silently change, the example reads any folder
with `train`, `validation` and `test` files (`.jsonl(.gz)` or `.tsv(.gz)`)
holding a dialogue and a summary column, e.g. the shared copy described in
`shared/data/summarization/README.md` (the `knkarthick/samsum` CSV export
converted to JSON Lines with keys `id`, `dialogue`, `summary`).

Text is lower-cased (ROUGE is case-insensitive). ROUGE-1/2/L/Lsum are F1
x100 from Google's `rouge-score` with Porter stemming, averaged over the test
dialogues; for ROUGE-Lsum each sentence is put on its own line.

Re-running the same command after an interruption resumes from the last
finished epoch (`<output-dir>/backup`). Re-running it on a finished run (its
`metrics.json`) trains and publishes nothing: it prints the run's scores and
export path. `--overwrite` trains a fresh run there, replaces the model and
`metrics.json`, and publishes the next `serving/<version>`.
"""

"""## Setup"""

import argparse
import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_selfattn.metrics import rouge
from keras_selfattn.recipes import add_seq2seq_arguments
from keras_selfattn.recipes import add_training_arguments
from keras_selfattn.recipes import require_modules
from keras_selfattn.recipes import train_seq2seq

# Optional dependencies, checked before any data is read.
REQUIRED_MODULES = (
    "tensorflow_text",
    "matplotlib",
    "rouge_score",
)

"""## Getting the data

Any folder holding `train`, `validation` and `test` files (`.jsonl`,
`.jsonl.gz`, `.tsv` or `.tsv.gz`) works: name the dialogue and summary
columns (JSON keys or TSV header names). In JSON Lines the utterances of a
dialogue are separated by newlines; the tokenizer treats them as spaces.
"""


def require_data_dir(args):
    """`--data-dir`, which this example cannot download."""
    if not args.data_dir:
        raise ValueError(
            "Received no --data-dir: SAMSum has no stable canonical download "
            "URL (see the module docstring). Pass a folder with train, "
            "validation and test .jsonl(.gz) files, e.g. "
            "--data-dir ../shared/data/summarization/samsum"
        )
    return args.data_dir


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    data = p.add_argument_group("input and output")
    data.add_argument("--data-dir", default=None)
    data.add_argument("--output-dir", default="runs/summarization")
    # --source-column, --max-eval-rows, ..., --vocabulary-size, --embed-dim,
    # ..., --decoding, --beam-width, ...: the defaults of `Seq2SeqOptions`
    # but for these.
    add_seq2seq_arguments(
        p,
        source_column="dialogue",
        target_column="summary",
        source_length=192,
        target_length=48,
    )
    # --epochs, --max-steps, --time-budget-minutes, --lr-schedule, ...
    add_training_arguments(p, epochs=20, batch_size=32)
    return p.parse_args(argv)


"""## ROUGE on the test split

rouge-score's ROUGE-1/2/L/Lsum F1 of the generated summaries against the
reference summaries, with one sentence per line for ROUGE-Lsum, printed
with the first three summaries.
"""

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def sentence_per_line(text):
    """One sentence per line, as ROUGE-Lsum expects."""
    return re.sub(r"([.!?])\s+", "\\1\n", text.strip())


def score_rouge(sources, hypotheses, references):
    """The metrics that open `metrics.json`."""
    scores = rouge(
        [sentence_per_line(h) for h in hypotheses],
        [sentence_per_line(r) for r in references],
    )
    print(
        "test ROUGE-1/2/L/Lsum: "
        + " / ".join(f"{scores[k]:.2f}" for k in ROUGE_KEYS)
    )
    for source, hypothesis, reference in list(
        zip(sources, hypotheses, references, strict=True)
    )[:3]:
        print(f"  dialogue: {source[:300]!r}")
        print(f"  out: {hypothesis}\n  ref: {reference}")
    return {key: float(scores[key]) for key in ROUGE_KEYS}


def main(argv=None, callbacks=()):
    """Runs the example; `callbacks` are extra Keras callbacks for `fit`."""
    args = parse_args(argv)
    # A missing optional package stops the run now, not after training.
    require_modules(REQUIRED_MODULES)
    require_data_dir(args)

    """## Training, decoding and an end-to-end summarizer

    The rest is `keras_selfattn.recipes.train_seq2seq`, shared with the
    translation example (its docstring has the details). Both sides are
    lower-cased. With `--shared-vocabulary` one vocabulary serves dialogues
    and summaries (and the model shares its embedding table), which helps
    with the names a summary copies from the chat. Dialogues longer than
    `--source-length` tokens are truncated (their beginning is kept). The
    attention plot shows the first 48 tokens of the first test dialogue;
    the end-to-end model, `summarizer.keras`, takes a raw dialogue string
    and returns its summary. On a finished `--output-dir` it reports that
    run instead of training; `--overwrite` trains a fresh one there and
    publishes the next serving version, its ROUGE in the version's record.
    """
    return train_seq2seq(
        **vars(args),
        evaluate=score_rouge,
        name="summarizer",
        attention_source_tokens=48,
        callbacks=callbacks,
        config=vars(args),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
