"""
Title: Text generation with a small GPT-style language model, from scratch
Description: Learn a SentencePiece (or WordPiece) tokenizer, cut any text
    collection into next-token windows, train a decoder-only Transformer
    (`CausalLM`) with checkpoints that survive an interruption and a time
    budget, measure its exact perplexity on the test split, continue
    prompts with the cached greedy and nucleus (top-p) samplers, and
    export it for TF Serving (prompts in, generated text out).
Requirements: keras-selfattn[examples] (tensorflow, keras, tensorflow-text;
    checked at start), tensorboard for full TensorBoard logs (optional).

Usage:

    python examples/text_generation.py \\
        --data-dir ../shared/data/classification/imdb --output-dir runs/lm

Any folder holding `train`, `validation` and `test` files (`.tsv(.gz)` or
`.jsonl(.gz)`) with a text column (`--text-column`, default `text`) works.
With no `--data-dir`, the IMDB reviews of the shared data folder named by
the `KERAS_SELFATTN_DATA` environment variable are read
(`$KERAS_SELFATTN_DATA/classification/imdb`); the defaults below are tuned
for them on 2 CPU cores and a 15-minute training budget.

Perplexity: `exp` of the mean cross-entropy (in nats) of every real target
token of the test texts (the first `--max-eval-rows`; all of them with a
number at least as large as the split), summed exactly rather than averaged
per batch. It depends on the vocabulary: compare runs with the same
`--tokenizer`, `--vocabulary-size` and casing only. The bits per character
(the same summed loss in bits, over the characters of those texts) compare
across tokenizers too.

Tokenizer: `--tokenizer sentencepiece` (the default) detokenizes exactly
(a prompt is a prefix of its sample) and learns in seconds;
`--tokenizer wordpiece` splits at spaces and punctuation (the samples'
spaces before punctuation are removed) and learns in minutes.

Re-running the same command after an interruption resumes from the last
finished epoch (`<output-dir>/backup`; an epoch is `--steps-per-epoch`
steps). Re-running it on a finished run (its `metrics.json`) trains
and publishes nothing: it prints the run's perplexity. `--overwrite`
trains a fresh run there, replaces the model and `metrics.json`, and
publishes the next TF Serving version.

Outputs in `--output-dir`: `metrics.json`, `language_model.keras`,
`tokenizer.model` (or `vocabulary.txt`), TensorBoard `logs/`, and
`serving/<version>`, a TF Serving SavedModel: raw prompts in, generated
text out (`serving_default`: the run's sampler; `generate`: temperature,
top-k, top-p, seed and max_new_tokens per request).
"""

"""## Setup"""

import argparse
import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_selfattn.recipes import add_language_model_arguments
from keras_selfattn.recipes import add_training_arguments
from keras_selfattn.recipes import require_modules
from keras_selfattn.recipes import train_language_model

# Optional dependencies, checked before any data is read.
REQUIRED_MODULES = ("tensorflow_text",)
# The shared data folder, and the IMDB reviews in it.
DATA_ENV = "KERAS_SELFATTN_DATA"
IMDB_SUBDIR = os.path.join("classification", "imdb")

"""## Getting the data

Any folder with `train`, `validation` and `test` files works; only the
text column is read (the IMDB files also hold `label`, `rating` and
`source_file`). Each row is a document: it is tokenized with a start and
an end token and cut into windows of `--sequence-length + 1` tokens that
overlap by one, so every token is predicted once, with the document's
earlier tokens in the same window as context.
"""


def resolve_data_dir(args):
    """`--data-dir`, else the shared IMDB reviews."""
    if args.data_dir:
        return args.data_dir
    shared = os.environ.get(DATA_ENV)
    if not shared:
        raise ValueError(
            f"Received no --data-dir and {DATA_ENV} is not set. Pass a "
            "folder with train, validation and test .tsv(.gz) or "
            ".jsonl(.gz) files holding a text column, e.g. --data-dir "
            f"../shared/data/{IMDB_SUBDIR}"
        )
    return os.path.join(shared, IMDB_SUBDIR)


# The IMDB reviews mark paragraphs with HTML line breaks.
_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_text(text):
    """Line-break tags and runs of whitespace become single spaces."""
    return " ".join(_LINE_BREAK.sub(" ", text).split())


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    data = p.add_argument_group("input and output")
    data.add_argument(
        "--data-dir",
        default=None,
        help=f"default: ${DATA_ENV}/{IMDB_SUBDIR}",
    )
    data.add_argument("--output-dir", default="runs/text_generation")
    # --text-column, --max-eval-rows, ..., --vocabulary-size, --hidden-dim,
    # ..., --sampler, --top-p, --prompt, ...: the defaults of
    # `LanguageModelOptions` but for these, tuned for the IMDB reviews on
    # 2 CPU cores.
    add_language_model_arguments(
        p,
        max_validation_rows=250,
        max_eval_rows=1000,
        vocabulary_rows=2000,
        steps_per_epoch=200,
    )
    # --epochs, --max-steps, --time-budget-minutes, --lr-schedule, ...: the
    # time budget ends training (the epochs are an upper bound).
    add_training_arguments(
        p,
        epochs=100,
        time_budget_minutes=15.0,
        batch_size=32,
        learning_rate=1e-3,
    )
    return p.parse_args(argv)


def main(argv=None, callbacks=()):
    """Runs the example; `callbacks` are extra Keras callbacks for `fit`."""
    args = parse_args(argv)
    # A missing optional package stops the run now, not after training.
    require_modules(REQUIRED_MODULES)
    data_dir = resolve_data_dir(args)

    """## Vocabulary, training, perplexity and samples

    `keras_selfattn.recipes.train_language_model` does the rest (its
    docstring goes through the steps, each a function of its own in
    `keras_selfattn.recipes.language_model`): it learns a cased
    SentencePiece tokenizer (or WordPiece, `--tokenizer wordpiece`) from
    the training texts, trains a `CausalLM` (rotary
    positions, pre-norm blocks, tied embeddings) on next-token windows
    whose padding the loss ignores, with checkpoints that survive an
    interruption, until `--time-budget-minutes` or `--max-steps`; then it
    measures the test perplexity exactly over the real tokens, continues
    prompts (the first words of test reviews, or `--prompt`) greedily and
    with the `--sampler` seeded by `--seed`, saves `language_model.keras`
    and exports the next TF Serving version, `serving/<version>`, after
    printing how its scores compare with the version it replaces. On a
    finished `--output-dir` it reports that run instead; `--overwrite`
    trains a fresh one there.

    The text keeps its case (`--lower-case` folds it), so the samples read
    as text; SentencePiece gives it back exactly, while WordPiece puts
    spaces around punctuation, which the samples take out again.
    """
    options = dict(vars(args), data_dir=data_dir)
    return train_language_model(
        **options,
        preprocess=clean_text,
        callbacks=callbacks,
        config=vars(args),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
