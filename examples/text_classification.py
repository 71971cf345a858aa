"""
Title: Text classification with a self-attention Transformer, from raw text
Description: Learn a WordPiece vocabulary, tokenize inside tf.data, train a
    Transformer classifier on SST-2 or IMDB (or any TSV/JSONL file of that
    shape) with checkpoints that survive an interruption, from scratch or
    from a pre-trained language model, then save and export an end-to-end
    model that takes raw strings.
Requirements: keras-selfattn[examples] (tensorflow, keras, tensorflow-text,
    matplotlib for the attention plot, scikit-learn for the TF-IDF baseline;
    checked at start), tensorboard for full TensorBoard logs (optional).

Usage:

    python examples/text_classification.py \\
        --data-dir ../shared/data/classification/sst2 --output-dir runs/sst2

    python examples/text_classification.py \\
        --data-dir ../shared/data/classification/imdb --output-dir runs/imdb

With no `--data-dir`, `--dataset sst2` (the default) downloads GLUE SST-2 into
the Keras cache (GLUE's train set is split 90/10 into train/validation with a
fixed seed; GLUE's dev set, whose labels are public, is the test set) and
`--dataset imdb` downloads aclImdb v1 (its train set split 90/10, its test set
as the test set).

Re-running the same command after an interruption resumes from the last
finished epoch (`<output-dir>/backup`). Re-running it on a finished run (its
`metrics.json`) trains and publishes nothing: it prints the run's test
metrics and export path. `--overwrite` trains a fresh run there, replaces
the model and `metrics.json`, and publishes the next `serving/<version>`.

Label names come from `--label-names negative,positive` (one per class, in
label-id order), else from a `label_names.txt` in `--data-dir` (one name per
line), else from the data.

Starting from a language model instead of from scratch:

    python examples/text_generation.py \\
        --data-dir ../shared/data/classification/imdb --output-dir runs/lm
    python examples/text_classification.py \\
        --data-dir ../shared/data/classification/imdb --output-dir runs/clf \\
        --from-lm runs/lm

    python examples/text_classification.py \\
        --data-dir ../shared/data/classification/imdb --output-dir runs/clf2 \\
        --pretrain-minutes 15

`--from-lm RUN_DIR` fine-tunes the `CausalLM` of a finished
`examples/text_generation.py` run (`build_classifier_from_lm`, pooled by
`--lm-pooling mean|last|max`), tokenizing with that run's tokenizer; the
sizes (`--vocabulary-size`, `--embed-dim`, `--num-heads`, `--ff-dim`,
`--num-layers`) are the language model's, and giving another value is an
error. `--pretrain-minutes M` and/or `--pretrain-max-steps N` first
pre-train that language model here, with the sizes given, on the training
texts (or on `--pretrain-data-dir`), into `<output-dir>/pretrain` (resumed
after an interruption; redone by `--overwrite`), then go on as
`--from-lm`. `metrics.json` records `from_lm`, `pretrain` (the language
model's steps, training seconds and test perplexity) and
`total_train_seconds` (pre-training included; every training's seconds
are counted across interruptions).
"""

"""## Setup"""

import argparse
import copy
import importlib
import json
import math
import os
import random
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import keras_selfattn
from keras_selfattn import recipes
from keras_selfattn.models import TextClassifier
from keras_selfattn.models import build_classifier_from_lm
from keras_selfattn.models import build_text_classifier
from keras_selfattn.models.causal_lm import ABSOLUTE_POSITIONS
from keras_selfattn.plotting import plot_attention
from keras_selfattn.text import WordPieceTokenizer
from keras_selfattn.text import find_split
from keras_selfattn.text import learn_wordpiece_vocabulary
from keras_selfattn.text import read_columns

GLUE_SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# Optional dependencies, checked before any data is read.
REQUIRED_MODULES = ("tensorflow_text", "matplotlib")
# The baseline's (not needed with `--no-baseline`).
BASELINE_MODULES = ("sklearn",)
# The baseline's inverse regularization strengths, one chosen on validation.
BASELINE_C = (1.0, 4.0, 16.0)
# Fewer training rows than this are "small data": more dropout (see
# `default_dropout`).
SMALL_DATA_ROWS = 100_000
# The metrics a finished run reports and a new version is compared on.
KEY_METRICS = ("test_accuracy", "test_loss")
# In `--data-dir`: one class name per line, in label-id order.
LABEL_NAMES_FILE = "label_names.txt"
# The model's sizes, by flag, and their defaults from scratch (and for
# `--pretrain-*`); with `--from-lm` they are the language model's.
SIZE_DEFAULTS = {
    "vocabulary_size": 8000,
    "embed_dim": 64,
    "num_heads": 4,
    "ff_dim": 128,
    "num_layers": 2,
}
# `--sequence-length`'s default (see `default_sequence_length`): long
# enough for this share of the training texts, within these bounds, a
# multiple of this step; texts' token counts are estimated from their
# words (measured with an 8,000-token WordPiece vocabulary: 1.4 tokens a
# word on IMDB reviews, 1.9 on SST-2's short phrases).
LENGTH_QUANTILE = 0.9
LENGTH_BOUNDS = (64, 256)
LENGTH_STEP = 32
TOKENS_PER_WORD = 1.5
# `--learning-rate`'s default, by start (see `default_learning_rate`).
LEARNING_RATES = {"scratch": 1e-3, "language_model": 3e-4}
# The `--pretrain-*` language model's run, under `--output-dir`.
PRETRAIN_DIR = "pretrain"
# Its options but for the sizes and limits the flags give: those of
# `examples/text_generation.py` (tuned on IMDB, 2 CPU cores), and few
# scored test texts, so that its perplexity takes seconds, not minutes.
PRETRAIN_OPTIONS = {
    "name": "language_model",
    "tokenizer": "sentencepiece",
    "batch_size": 32,
    "learning_rate": 1e-3,
    "max_validation_rows": 250,
    "max_eval_rows": 1000,
    "vocabulary_rows": 2000,
}
# Its epochs (a backup each): at most this many steps each, and at most
# this many epochs under a time budget alone.
PRETRAIN_STEPS_PER_EPOCH = 200
PRETRAIN_MAX_EPOCHS = 100

"""## Getting the data

With `--data-dir`, any folder holding `train`, `validation` and `test` files
(`.tsv`, `.tsv.gz`, `.jsonl` or `.jsonl.gz`) works: name the text and label
columns. TSV files have one header line and no quoting. Without it, the
canonical public copy is downloaded once into the Keras cache and laid out in
that same shape. Integer labels are ids; name the classes with
`--label-names` or a `label_names.txt` next to the data files.
"""


def _write_tsv(path, texts, labels):
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        for text, label in zip(texts, labels, strict=True):
            # The format has no quoting: tabs and newlines become spaces.
            text = " ".join(text.split())
            f.write(f"{text}\t{label}\n")


def _write_label_names(folder, names):
    """`label_names.txt`: the class names of ids 0, 1, ..., one a line."""
    path = os.path.join(folder, LABEL_NAMES_FILE)
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(name + "\n" for name in names)


def _split_90_10(texts, labels, seed=0):
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    cut = int(0.9 * len(order))
    return tuple(
        ([texts[i] for i in rows], [labels[i] for i in rows])
        for rows in (order[:cut], order[cut:])
    )


def _extracted_root(archive, marker):
    """The folder inside a `get_file(extract=True)` result holding `marker`."""
    root = archive if os.path.isdir(archive) else os.path.dirname(archive)
    for dirpath, dirnames, files in os.walk(root):
        if marker in files or marker in dirnames:
            return dirpath
    raise FileNotFoundError(f"{marker!r} not found under {root!r}")


def download_sst2():
    """GLUE SST-2 as train/validation/test TSVs in the Keras cache."""
    archive = keras.utils.get_file(
        "SST-2.zip", GLUE_SST2_URL, extract=True, cache_subdir="datasets"
    )
    root = _extracted_root(archive, "dev.tsv")
    out = os.path.join(os.path.dirname(root), "sst2_splits")
    if not os.path.exists(os.path.join(out, "test.tsv")):
        os.makedirs(out, exist_ok=True)
        glue = read_columns(
            os.path.join(root, "train.tsv"), ["sentence", "label"]
        )
        train, validation = _split_90_10(glue["sentence"], glue["label"])
        _write_tsv(os.path.join(out, "train.tsv"), *train)
        _write_tsv(os.path.join(out, "validation.tsv"), *validation)
        dev = read_columns(os.path.join(root, "dev.tsv"), ["sentence", "label"])
        _write_tsv(os.path.join(out, "test.tsv"), dev["sentence"], dev["label"])
    # GLUE SST-2: 0 is negative, 1 positive.
    _write_label_names(out, ["negative", "positive"])
    return out


def download_imdb():
    """aclImdb v1 as train/validation/test TSVs in the Keras cache."""
    archive = keras.utils.get_file(
        "aclImdb_v1.tar.gz", IMDB_URL, extract=True, cache_subdir="datasets"
    )
    root = _extracted_root(archive, "imdbEr.txt")
    out = os.path.join(os.path.dirname(root), "imdb_splits")

    def read(split):
        texts, labels = [], []
        for label, polarity in enumerate(("neg", "pos")):
            folder = os.path.join(root, split, polarity)
            for name in sorted(os.listdir(folder)):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    texts.append(f.read())
                labels.append(label)
        return texts, labels

    if not os.path.exists(os.path.join(out, "test.tsv")):
        os.makedirs(out, exist_ok=True)
        train, validation = _split_90_10(*read("train"))
        _write_tsv(os.path.join(out, "train.tsv"), *train)
        _write_tsv(os.path.join(out, "validation.tsv"), *validation)
        _write_tsv(os.path.join(out, "test.tsv"), *read("test"))
    # Numbered by `read`: 0 is neg/, 1 is pos/.
    _write_label_names(out, ["negative", "positive"])
    return out


def resolve_data_dir(args):
    """`--data-dir`, or the downloaded copy of `--dataset`."""
    if args.data_dir:
        return args.data_dir
    return {"sst2": download_sst2, "imdb": download_imdb}[args.dataset]()


def given_label_names(args, data_dir):
    """The class names given by `--label-names`, else by `label_names.txt`
    in `data_dir`, else `None`, with where they came from."""
    if args.label_names is not None:
        return args.label_names.split(","), "--label-names"
    path = os.path.join(data_dir, LABEL_NAMES_FILE)
    if not os.path.exists(path):
        return None, None
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f]
    # Trailing blank lines are not classes.
    while names and not names[-1]:
        names.pop()
    return names, path


def check_label_names(names, source, labels):
    """`names` stripped, if they are distinct, non-empty and one per label
    of the data (`labels`, in id order); a `ValueError` naming `source`
    (`--label-names` or the file) otherwise."""
    names = [str(name).strip() for name in names]
    if (
        len(names) == len(labels)
        and all(names)
        and len(set(names)) == len(names)
    ):
        return names
    expected = (
        f"{len(labels)} distinct, non-empty class names, one per class in "
        f"label-id order (the data's labels: {labels})"
    )
    if source == "--label-names":
        # The library's error template, for a flag.
        raise ValueError(
            f"Received an invalid value for `--label-names`, expected "
            f"{expected}, comma-separated. Received: "
            f"--label-names={','.join(names)!r}"
        )
    raise ValueError(
        f"{source} holds {len(names)} names {names}; expected {expected}, "
        "one a line"
    )


def load_splits(args, data_dir):
    """`{split: (texts, label_ids)}` and the label names.

    Labels may be integers (`0`, `1`, ...: used as ids) or any strings
    (`"neg"`, `"pos"`: sorted and numbered). `--label-names` or a
    `label_names.txt` in `data_dir` then name the classes, in id order.
    """
    columns = [args.text_column, args.label_column]
    raw = {}
    for split in ("train", "validation", "test"):
        limit = args.max_train_rows if split == "train" else None
        rows = read_columns(find_split(data_dir, split), columns, limit=limit)
        raw[split] = (rows[args.text_column], rows[args.label_column])
    names = sorted({y for _, labels in raw.values() for y in labels})
    if all(y.strip().lstrip("-").isdigit() for y in names):
        ids = sorted({int(y) for y in names})
        if ids[0] < 0:
            raise ValueError(
                f"Integer labels must be >= 0; column {args.label_column!r} "
                f"holds {ids[0]}"
            )
        names = [str(i) for i in range(ids[-1] + 1)]
        to_id = int
    else:
        index = {name: i for i, name in enumerate(names)}
        to_id = index.__getitem__
    if len(names) < 2:
        raise ValueError(
            f"Column {args.label_column!r} holds a single label {names}: "
            "a classifier needs at least two"
        )
    given, source = given_label_names(args, data_dir)
    if given is not None:
        names = check_label_names(given, source, names)
    splits = {
        split: (texts, np.array([to_id(y) for y in labels], dtype="int32"))
        for split, (texts, labels) in raw.items()
    }
    return splits, names


"""## A baseline to beat

Before any Transformer trains, a classical model sets the bar: TF-IDF
weights of word unigrams and bigrams (words seen in at least two training
texts) and a logistic regression, its regularization strength `C` chosen
on the validation split, fitted on the same training split and scored on
the same test split. It takes seconds; a Transformer trained from scratch
that does not beat it is not worth serving. Skip it with `--no-baseline`.
"""


def tfidf_logreg_baseline(splits):
    """Test accuracy of TF-IDF (word 1-2-grams) + logistic regression.

    Args:
        splits: dict, `{split: (texts, label_ids)}` for `"train"`,
            `"validation"` and `"test"` (as from `load_splits`).

    Returns:
        dict: `test_accuracy`, `validation_accuracy` (of the chosen `C`),
        `C` (among `BASELINE_C`), `features` (the TF-IDF vocabulary's size)
        and `seconds`.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.monotonic()
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), min_df=2, sublinear_tf=True
    )
    train_texts, train_labels = splits["train"]
    features = vectorizer.fit_transform(train_texts)  # (rows, n-grams)
    validation = vectorizer.transform(splits["validation"][0])
    # One model, refitted for each C from the last fit's weights (a weaker
    # penalty moves them little: fewer iterations than a fresh start).
    model = LogisticRegression(max_iter=1000, warm_start=True)
    best = None
    for c in BASELINE_C:
        model.set_params(C=c).fit(features, train_labels)
        accuracy = model.score(validation, splits["validation"][1])
        # Ties go to the smaller C (the stronger regularization).
        if best is None or accuracy > best[0]:
            best = (accuracy, c, copy.deepcopy(model))
    validation_accuracy, c, model = best
    test_texts, test_labels = splits["test"]
    test_accuracy = model.score(vectorizer.transform(test_texts), test_labels)
    return {
        "test_accuracy": float(test_accuracy),
        "validation_accuracy": float(validation_accuracy),
        "C": c,
        "features": int(features.shape[1]),
        "seconds": round(time.monotonic() - start, 1),
    }


def default_dropout(train_rows):
    """The dropout rate for `train_rows` training rows, if not given.

    Small data overfits a Transformer trained from scratch sooner: 0.3
    below `SMALL_DATA_ROWS` rows, else the usual 0.1. Measured (see
    `benchmarks/quality_classification.md`): on SST-2's 60,614 rows 0.3
    reaches 0.803 test accuracy where 0.1 reaches 0.792; on 10,000-row
    samples it is better at most epochs (SST-2) or within noise (IMDB, 4
    rating classes). Nothing above 100,000 rows was measured.
    """
    return 0.3 if train_rows < SMALL_DATA_ROWS else 0.1


def default_sequence_length(texts, longest=None):
    """`--sequence-length`'s default, if not given: sized to the data.

    The length that holds `LENGTH_QUANTILE` (90 %) of the training texts
    whole, estimated from their whitespace words (`TOKENS_PER_WORD` tokens
    a word, plus the start and end tokens), rounded up to a multiple of
    `LENGTH_STEP` and kept within `LENGTH_BOUNDS` (64 to 256: attention
    costs grow with the square of the length) and at most `longest` (the
    length a language model started from was trained on, if any:
    `trained_length`). Texts longer than the length are cut. SST-2 (90 %
    of its training phrases have at most 21 words) keeps the 64 it always
    had; IMDB reviews (458 words) get 256, which on a 10,000-row sample
    reaches 0.798 test accuracy where 64 reached 0.725
    (`benchmarks/quality_classification.md`).

    Args:
        texts: list of str, the training texts.
        longest: int or `None`, the longest length allowed. Defaults to
            `None`.

    Returns:
        `(length, words)`: the length, and the quantile's word count.
    """
    words = np.array([len(text.split()) for text in texts] or [0])
    quantile = float(np.quantile(words, LENGTH_QUANTILE))
    tokens = quantile * TOKENS_PER_WORD + 2
    length = LENGTH_STEP * math.ceil(tokens / LENGTH_STEP)
    length = min(max(length, LENGTH_BOUNDS[0]), LENGTH_BOUNDS[1])
    if longest is not None:
        length = min(length, longest)
    return length, quantile


def trained_length(run):
    """The longest texts a language model run (`LanguageModelRun`) was
    trained on: its windows' length (`sequence_length` in its config),
    and at most its `max_length` (learned positions). `None` if neither
    is known."""
    lengths = [
        run.model.max_length,
        run.metrics.get("config", {}).get("sequence_length"),
    ]
    lengths = [n for n in lengths if n is not None]
    return min(lengths) if lengths else None


def with_sequence_length(tokenizer, sequence_length):
    """The same tokenizer, cutting and padding to `sequence_length`."""
    config = {**tokenizer.get_config(), "sequence_length": sequence_length}
    return type(tokenizer).from_config(config)


"""## Starting from a language model

A Transformer trained from scratch on a few thousand labelled texts learns
its words from those texts only. A language model trained first on
unlabelled text (the same texts without their labels, or any other) has
learned them already; the classifier can start from it
(`build_classifier_from_lm`: the LM's embedding, causal blocks and final
norm, then a pooling and a softmax head) and fine-tune all of it. Two
ways in:

- `--from-lm RUN_DIR`: the folder of a finished
  `examples/text_generation.py` run. The classifier tokenizes with that
  run's tokenizer (the ids the LM was trained on, with its start and end
  tokens), and its sizes are the LM's.
- `--pretrain-minutes M` (or `--pretrain-max-steps N`): pre-train that
  language model first, with `recipes.train_language_model`, on the
  training texts (or on `--pretrain-data-dir`), with the classifier's
  sizes, into `<output-dir>/pretrain`; then start from it as above.

`metrics.json` records the start (`from_lm`, `pretrain`) and
`total_train_seconds`, pre-training included (each training's seconds
counted across interruptions, up to its last backup), so that runs that
cost the same CPU time can be compared.
"""


def _flag(name):
    return "--" + name.replace("_", "-")


def pretraining(args):
    """Whether this run pre-trains its language model (`--pretrain-*`)."""
    return args.pretrain_minutes is not None or (
        args.pretrain_max_steps is not None
    )


def check_start_flags(args):
    """Refuse flags that do not go together, before any data is read."""
    if args.from_lm is not None and pretraining(args):
        given = "--pretrain-minutes"
        if args.pretrain_minutes is None:
            given = "--pretrain-max-steps"
        raise ValueError(
            f"Received both --from-lm and {given}: start from a finished "
            "language-model run (--from-lm) or pre-train one here "
            "(--pretrain-minutes / --pretrain-max-steps), not both. "
            f"Received: --from-lm={args.from_lm!r}"
        )
    if args.pretrain_data_dir is not None and not pretraining(args):
        raise ValueError(
            "Received --pretrain-data-dir without --pretrain-minutes or "
            "--pretrain-max-steps, which turn pre-training on. Received: "
            f"--pretrain-data-dir={args.pretrain_data_dir!r}"
        )
    if pretraining(args) and args.strategy == "multiworker":
        raise ValueError(
            "Received --strategy multiworker with --pretrain-*: pre-train "
            "with examples/text_generation.py first, then pass its folder "
            "to --from-lm."
        )


def default_learning_rate(from_lm):
    """`--learning-rate`'s default: 1e-3 from scratch, 3e-4 when starting
    from a language model (a third of the rate it was pre-trained with,
    so fine-tuning does not wash out what it learned; as GPT fine-tunes at
    a quarter of its pre-training rate). On IMDB 3e-4 and 1e-3 gave
    0.8475 and 0.8457 test accuracy (`benchmarks/pretraining_quality.py`,
    `benchmarks/RESULTS.md`): no measured difference."""
    return LEARNING_RATES["language_model" if from_lm else "scratch"]


def pretrain_language_model(args, data_dir, callbacks=()):
    """Pre-train (or resume, or report) `<output-dir>/pretrain`, a
    `CausalLM` with the classifier's sizes, on `--pretrain-data-dir` or
    the classifier's texts; returns its folder."""
    pretrain_dir = os.path.join(args.output_dir, PRETRAIN_DIR)
    max_steps = args.pretrain_max_steps
    steps_per_epoch = PRETRAIN_STEPS_PER_EPOCH
    epochs = PRETRAIN_MAX_EPOCHS
    if max_steps is not None:
        # Epochs end at the step cap: a backup at each, none wasted.
        steps_per_epoch = min(steps_per_epoch, max_steps)
        epochs = math.ceil(max_steps / steps_per_epoch)
    print(f"pre-training a language model in {pretrain_dir}")
    recipes.train_language_model(
        args.pretrain_data_dir or data_dir,
        pretrain_dir,
        **PRETRAIN_OPTIONS,
        text_column=args.text_column,
        max_train_rows=args.max_train_rows,
        vocabulary_size=args.vocabulary_size,
        sequence_length=args.sequence_length,
        hidden_dim=args.embed_dim,
        num_heads=args.num_heads,
        ff_dim=args.ff_dim,
        num_layers=args.num_layers,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        max_steps=max_steps,
        time_budget_minutes=args.pretrain_minutes,
        seed=args.seed,
        strategy=args.strategy,
        verbose=args.verbose,
        overwrite=args.overwrite,
        # Only this run writes there: files with no finished nor
        # interrupted run are its own pre-training, stopped before its
        # first epoch ended; it starts again.
        restart_unfinished=True,
        callbacks=callbacks,
    )
    return pretrain_dir


def fill_default_sizes(args):
    """The size flags not given take their from-scratch defaults."""
    for name, default in SIZE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def pretrain_and_load(args, data_dir, strategy, callbacks=()):
    """`--pretrain-*`: pre-train (or resume, or find finished) the
    language model, then load it as `--from-lm` would (in `strategy`'s
    scope: its variables are the classifier's)."""
    fill_default_sizes(args)
    args.from_lm = pretrain_language_model(args, data_dir, callbacks)
    with strategy.scope():
        start = load_language_model(args)
    # The classifier's head starts as on an uninterrupted run.
    keras.utils.set_random_seed(args.seed)
    return start


def learn_tokenizer(args, train_texts):
    """From scratch: a WordPiece tokenizer learned from the training
    texts."""
    fill_default_sizes(args)
    vocabulary = learn_wordpiece_vocabulary(
        tf.data.Dataset.from_tensor_slices(train_texts),
        vocabulary_size=args.vocabulary_size,
    )
    print(f"vocabulary: {len(vocabulary)} WordPiece tokens")
    return WordPieceTokenizer(
        vocabulary, sequence_length=args.sequence_length, name="tokenizer"
    )


def load_language_model(args):
    """`--from-lm`'s run (`recipes.load_language_model_run`); the size
    flags take the language model's values, and a `--sequence-length`
    longer than it allows is refused. Its tokenizer is cut to the
    classifier's length where `main` takes it (`with_sequence_length`)."""
    run = recipes.load_language_model_run(args.from_lm, argument="--from-lm")
    take_language_model_sizes(args, run.model, run.metrics, args.from_lm)
    return run


def language_model_sizes(causal_lm, lm_metrics):
    """The size flags' values of a language model's classifier. The
    vocabulary size is the one its run asked for (a SentencePiece model
    learned from little text may hold fewer tokens)."""
    requested = lm_metrics.get("config", {}).get("vocabulary_size")
    return {
        "vocabulary_size": requested or causal_lm.vocab_size,
        "embed_dim": causal_lm.hidden_dim,
        "num_heads": causal_lm.num_heads,
        "ff_dim": causal_lm.ff_dim,
        "num_layers": causal_lm.num_layers,
    }


def take_language_model_sizes(args, causal_lm, lm_metrics, run_dir):
    """Set the size flags to the language model's; a flag given with
    another value is an error naming it and the LM's value."""
    for name, value in language_model_sizes(causal_lm, lm_metrics).items():
        given = getattr(args, name)
        if given is not None and given != value:
            hint = (
                "pass --overwrite to pre-train again with the new sizes"
                if pretraining(args)
                else "leave the flag out: the sizes are the language model's"
            )
            raise ValueError(
                f"Received an invalid value for `{_flag(name)}`, expected "
                f"the language model's, {value} (in {run_dir}), or no "
                f"{_flag(name)}; {hint}. Received: {_flag(name)}={given}"
            )
        setattr(args, name, value)
    longest = causal_lm.max_length
    given = args.sequence_length
    if longest is not None and given is not None and given > longest:
        raise ValueError(
            f"Received an invalid value for `--sequence-length`, expected at "
            f"most {longest}, the language model's max_length (in "
            f"{run_dir}). Received: --sequence-length={args.sequence_length}"
        )


def pretrain_record(lm_metrics, run_dir, trained_here):
    """What `metrics.json` says of the language model it starts from."""
    return {
        "run_dir": run_dir,
        "trained_in_this_run": trained_here,
        "steps": lm_metrics.get("steps"),
        "train_seconds": lm_metrics.get("train_seconds"),
        "test_perplexity": lm_metrics.get("test_perplexity"),
    }


def first_block_attention(classifier, ids):
    """The first block's attention on `ids` `(1, T)` (no padding):
    `(scores (1, heads, T, T), block name)`, or `(None, why not)`."""
    names = {layer.name for layer in classifier.layers}
    if "backbone" not in names:
        embedded = classifier.get_layer("embedding")(ids)  # (1, T, D)
        block = classifier.get_layer("transformer_block_0")
    else:
        causal_lm = classifier.get_layer("backbone").causal_lm
        if causal_lm.position_embedding in ABSOLUTE_POSITIONS:
            return None, (
                "its language model adds absolute position embeddings "
                "before the first block"
            )
        # Positions are inside the blocks (rotary, ...): the block's input
        # is the token embedding alone, as in `CausalLM.hidden_states`.
        embedded = causal_lm.token_embedding(ids)  # (1, T, D)
        block = causal_lm.blocks[0]
    _, scores = block(
        embedded, mask=ids != 0, return_attention_scores=True
    )  # (1, heads, T, T)
    return scores, block.name


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", default=None)
    data.add_argument("--dataset", choices=("sst2", "imdb"), default="sst2")
    data.add_argument("--text-column", default="text")
    data.add_argument("--label-column", default="label")
    data.add_argument(
        "--label-names",
        default=None,
        help="comma-separated class names, one per class in label-id order "
        f"(e.g. negative,positive); default: {LABEL_NAMES_FILE} in "
        "--data-dir if present, else the labels of the data",
    )
    data.add_argument("--max-train-rows", type=int, default=None)
    data.add_argument("--output-dir", default="runs/text_classification")
    model = p.add_argument_group("model")
    for name, default in SIZE_DEFAULTS.items():
        # `None`: not given (a size given with --from-lm must be the LM's).
        model.add_argument(
            _flag(name),
            type=int,
            default=None,
            help=f"default: {default}; with --from-lm, the language model's "
            "(another value is an error)",
        )
    model.add_argument(
        "--sequence-length",
        type=int,
        default=None,
        help="tokens a text (longer texts are cut); default: sized to the "
        f"data, what holds {LENGTH_QUANTILE:.0%} of the training texts, "
        f"{LENGTH_BOUNDS[0]} to {LENGTH_BOUNDS[1]} (with --from-lm, at most "
        "the length the language model was trained on)",
    )
    model.add_argument(
        "--dropout",
        type=float,
        default=None,
        help=f"default: sized to the data, 0.3 below {SMALL_DATA_ROWS:,} "
        "training rows, else 0.1",
    )
    start = p.add_argument_group(
        "start from a language model (default: from scratch)"
    )
    start.add_argument(
        "--from-lm",
        default=None,
        metavar="RUN_DIR",
        help="the folder of a finished examples/text_generation.py run: "
        "fine-tune its language model, with its tokenizer and sizes",
    )
    start.add_argument(
        "--pretrain-minutes",
        type=float,
        default=None,
        help="first pre-train a language model for this long, with the "
        "sizes above, on the training texts (or --pretrain-data-dir), into "
        f"<output-dir>/{PRETRAIN_DIR}, then start from it",
    )
    start.add_argument(
        "--pretrain-max-steps",
        type=int,
        default=None,
        help="pre-train for at most this many steps (with or without "
        "--pretrain-minutes)",
    )
    start.add_argument(
        "--pretrain-data-dir",
        default=None,
        help="pre-train on this folder's train/validation/test files "
        "(column --text-column, no labels needed) instead",
    )
    start.add_argument(
        "--lm-pooling",
        choices=("mean", "last", "max"),
        default="mean",
        help="how the classifier reads the language model's hidden states: "
        "their mean or max over the real tokens, or the last token's (the "
        "end token, which has seen the whole text)",
    )
    # --epochs, --max-steps, --time-budget-minutes, --lr-schedule, ...
    train = recipes.add_training_arguments(p, epochs=3)
    # Chosen by start (`default_learning_rate`) when not given.
    p.set_defaults(learning_rate=None)
    train.description = (
        "--learning-rate defaults to "
        f"{LEARNING_RATES['scratch']:g} from scratch and to "
        f"{LEARNING_RATES['language_model']:g} from a language model "
        "(--from-lm, --pretrain-*). "
        "--time-budget-minutes and --max-steps bound the fine-tuning only."
    )
    train.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after training, keep the weights of the epoch with the best "
        "validation accuracy, and stop when it has not improved for "
        "--early-stopping-patience epochs",
    )
    train.add_argument(
        "--early-stopping-patience",
        type=int,
        default=2,
        help="epochs without a better validation accuracy before stopping",
    )
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit and print a TF-IDF + logistic regression baseline on the "
        "same splits (needs scikit-learn; seconds)",
    )
    return p.parse_args(argv)


def main(argv=None, callbacks=(), pretrain_callbacks=()):
    """Runs the example; `callbacks` are extra Keras callbacks for `fit`,
    `pretrain_callbacks` for the pre-training's."""
    args = parse_args(argv)
    check_start_flags(args)
    # A missing optional package stops the run now, not after training.
    recipes.require_modules(
        REQUIRED_MODULES + (BASELINE_MODULES if args.baseline else ())
    )
    # Registers the tensorflow-text ops that a reloaded SavedModel needs.
    importlib.import_module("tensorflow_text")
    # Before any other TensorFlow work: multi-worker set-up must come first.
    strategy = recipes.make_strategy(args.strategy)

    """## A finished run is not trained (nor published) again

    TF Serving serves the highest version in `serving/`, so re-running the
    command must not silently publish a new one: a finished run (its
    `metrics.json`) is reported and left as it is, an interrupted one
    (`backup/`) resumes, any other used folder is refused, and
    `--overwrite` trains a fresh run that publishes the next version.
    """
    run = recipes.prepare_output_dir(
        args.output_dir,
        args.overwrite,
        strategy,
        # The pre-training's run folder looks after itself.
        ignore=(PRETRAIN_DIR,) if pretraining(args) else (),
    )
    if run == "finished":
        return recipes.report_finished_run(args.output_dir, KEY_METRICS)
    # Only the chief writes to --output-dir (other workers: a sub-folder).
    args.output_dir = recipes.worker_output_dir(args.output_dir, strategy)
    keras.utils.set_random_seed(args.seed)
    start = None
    if args.from_lm is not None:
        # Loaded first: a wrong folder or size fails before any data work.
        # Its variables are the classifier's: made in the strategy's scope.
        with strategy.scope():
            start = load_language_model(args)
    data_dir = resolve_data_dir(args)
    splits, label_names = load_splits(args, data_dir)
    for split, (texts, _) in splits.items():
        print(f"{split}: {len(texts)} rows")
    print(f"labels: {label_names}")
    train_texts, train_labels = splits["train"]
    if args.sequence_length is None:
        args.sequence_length, words = default_sequence_length(
            train_texts, None if start is None else trained_length(start)
        )
        print(
            f"sequence length: {args.sequence_length} ({LENGTH_QUANTILE:.0%} "
            f"of the training texts have at most {words:.0f} words)"
        )
    baseline = tfidf_logreg_baseline(splits) if args.baseline else None
    if baseline is not None:
        print(
            "TF-IDF + logistic regression baseline: test accuracy "
            f"{baseline['test_accuracy']:.4f} (C={baseline['C']:g} chosen on "
            f"validation, {baseline['seconds']:.1f} s)"
        )

    """## A WordPiece vocabulary and a tokenizer inside the graph

    From scratch, the vocabulary is learned from the training texts only.
    The tokenizer is a Keras layer (tensorflow-text's
    `FastWordpieceTokenizer`); it runs in the `tf.data` pipeline here and
    inside the end-to-end model later, with the vocabulary stored in its
    config. A classifier that starts from a language model takes the
    language model's tokenizer instead (SentencePiece, by default).
    """
    if pretraining(args):
        start = pretrain_and_load(args, data_dir, strategy, pretrain_callbacks)
    if start is None:
        causal_lm, lm_pretrain = None, None
        tokenizer = learn_tokenizer(args, train_texts)
    else:
        causal_lm, lm_metrics = start.model, start.metrics
        # The LM's tokenizer, cutting and padding to the classifier's
        # length (given, or sized to the data above).
        tokenizer = with_sequence_length(start.tokenizer, args.sequence_length)
        lm_pretrain = pretrain_record(
            lm_metrics, args.from_lm, trained_here=pretraining(args)
        )
        print(
            f"starting from the language model in {args.from_lm}: "
            f"{causal_lm.count_params():,} parameters, "
            f"{lm_metrics.get('steps')} steps, test perplexity "
            f"{lm_metrics.get('test_perplexity', float('nan')):.2f}, "
            f"{tokenizer.vocabulary_size} {type(tokenizer).__name__} tokens"
        )
    if args.learning_rate is None:
        args.learning_rate = default_learning_rate(causal_lm is not None)

    def dataset(texts, labels, shuffle=False):
        ds = tf.data.Dataset.from_tensor_slices((texts, labels))
        if shuffle:
            ds = ds.shuffle(len(texts), seed=args.seed)
        ds = ds.batch(args.batch_size)
        ds = ds.map(
            lambda t, y: (trim_padding(tokenizer(t)), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        options = tf.data.Options()
        # In-memory data: shard by element, not by file, across workers.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    """## The classifier

    Token id 0 is padding, so the embedding creates the padding mask, the
    Transformer blocks honour it and the mean pooling averages real tokens
    only. Built and compiled under the distribution strategy's scope. From
    a language model, `build_classifier_from_lm` puts the same kind of
    head (`--lm-pooling`, dropout, softmax) on its hidden states, and
    fine-tuning trains the language model's weights too.
    """
    steps_per_epoch = math.ceil(len(train_texts) / args.batch_size)
    if args.dropout is None:
        args.dropout = default_dropout(len(train_texts))
        print(f"dropout: {args.dropout} ({len(train_texts)} training rows)")
    with strategy.scope():
        if causal_lm is None:
            classifier = build_text_classifier(
                vocabulary_size=tokenizer.vocabulary_size,
                sequence_length=args.sequence_length,
                num_classes=len(label_names),
                embed_dim=args.embed_dim,
                num_heads=args.num_heads,
                ff_dim=args.ff_dim,
                num_layers=args.num_layers,
                dropout=args.dropout,
            )
        else:
            classifier = build_classifier_from_lm(
                causal_lm,
                len(label_names),
                pooling=args.lm_pooling,
                dropout=args.dropout,
            )
        # Constant, or linear warm-up then cosine decay to zero at the end.
        learning_rate = recipes.learning_rate_schedule(
            args.learning_rate,
            args.lr_schedule,
            total_steps=args.epochs * steps_per_epoch,
            warmup_steps=args.warmup_steps,
        )
        classifier.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )

    """## Training that survives an interruption

    `recipes.fit_resumable` adds `BackupAndRestore`, which saves the
    weights, the optimizer state and the epoch at the end of every epoch;
    re-running the same command after a crash restores them and continues
    with the next epoch. It also writes the TensorBoard curves and stops
    after `--max-steps` optimizer steps or `--time-budget-minutes` (both
    counted across an interruption), mid-epoch. `ModelCheckpoint` keeps
    the latest complete model.
    """
    fit_callbacks = [
        keras.callbacks.ModelCheckpoint(
            os.path.join(args.output_dir, "checkpoint.keras")
        )
    ]
    early_stopping = None
    if args.early_stopping:
        # The test split is never looked at: validation picks the epoch.
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_accuracy",
            patience=args.early_stopping_patience,
            restore_best_weights=True,
        )
        fit_callbacks.append(early_stopping)
    history, record = recipes.fit_resumable(
        classifier,
        dataset(*splits["train"], shuffle=True),
        args.output_dir,
        validation_data=dataset(*splits["validation"]),
        epochs=args.epochs,
        max_steps=args.max_steps,
        time_budget_minutes=args.time_budget_minutes,
        callbacks=fit_callbacks + list(callbacks),
        verbose=args.verbose,
    )
    steps = record["steps"]
    best_epoch = None
    if early_stopping is not None and early_stopping.best_weights is not None:
        # `fit` ended with the best epoch's weights restored.
        best_epoch = int(early_stopping.best_epoch)
        print(f"kept the weights of epoch {best_epoch + 1} (best validation)")
    test_loss, test_accuracy = classifier.evaluate(
        dataset(*splits["test"]), verbose=0
    )
    beside = ""
    if baseline is not None:
        beside = (
            "; TF-IDF + logistic regression baseline: "
            f"{baseline['test_accuracy']:.4f}"
        )
    print(f"test accuracy: {test_accuracy:.4f} ({steps} steps){beside}")

    """## An end-to-end model: raw strings in, probabilities out

    `TextClassifier` chains the tokenizer and the classifier in one Keras
    model that takes Python lists and NumPy string arrays as they are, in
    `predict` as in a call, and keeps the label names.
    """
    end_to_end = TextClassifier(
        tokenizer, classifier, label_names=label_names, name="text_classifier"
    )
    test_texts, test_labels = splits["test"]
    samples = list(test_texts[:4]) + [""]
    probs = end_to_end.predict(samples, verbose=0)
    for sample, p in zip(samples, probs, strict=True):
        guess = label_names[int(np.argmax(p))]
        print(f"{guess!r} ({p.max():.3f})  {sample[:70]!r}")
    if not np.all(np.isfinite(probs)):
        raise RuntimeError("an empty string must not give NaN")

    """## Where does the first block attend?

    The first Transformer block returns its attention weights when asked;
    one test sentence is plotted, token labels from the vocabulary. (From
    a language model: its first causal block, so each token attends to
    itself and the tokens before it only.)
    """
    ids = tokenizer(tf.constant(test_texts[:1]))  # (1, T)
    length = max(1, int(np.count_nonzero(keras.ops.convert_to_numpy(ids))))
    ids = ids[:, :length]
    scores, block_name = first_block_attention(classifier, ids)
    attention_png = None
    if scores is None:
        print(f"no attention plot: {block_name}")
    else:
        tokens = [
            t.decode("utf-8")
            for t in tokenizer.id_to_token(ids[0]).numpy().tolist()
        ]
        attention_png = plot_attention(
            keras.ops.convert_to_numpy(scores)[0],
            tokens,
            tokens,
            os.path.join(args.output_dir, "attention.png"),
            title=block_name,
        )

    """## Save, reload, export"""
    model_path = os.path.join(args.output_dir, "text_classifier.keras")
    end_to_end.save(model_path)
    reloaded = keras.saving.load_model(model_path)
    again = reloaded.predict(np.array(samples), verbose=0)  # a str array
    np.testing.assert_allclose(again, probs, atol=1e-6)
    # A TF Serving layout: <output-dir>/serving/<version>/, raw strings in;
    # `label`, `label_id`, `probabilities` out (and a `token_ids` signature).
    # The next version, with this run's test metrics in its record
    # (assets.extra/metadata.json); first, how it compares with the one
    # TF Serving serves now.
    serving_dir = os.path.join(args.output_dir, "serving")
    record_metadata = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "steps": steps,
        "epochs": record["epochs"],
        "train_rows": len(train_texts),
        "test_rows": len(test_texts),
        "data_dir": os.path.abspath(data_dir),
        "model_path": os.path.abspath(model_path),
    }
    recipes.compare_with_published(serving_dir, record_metadata, KEY_METRICS)
    export_dir = keras_selfattn.export.export_classifier(
        classifier,
        tokenizer,
        serving_dir,
        label_names=[str(name) for name in label_names],
        metadata=record_metadata,
    )
    # Keep the loaded object alive while calling it: its variables live there.
    exported = tf.saved_model.load(export_dir)
    answer = exported.signatures["serving_default"](text=tf.constant(samples))
    served = answer["probabilities"].numpy()
    if not np.all(np.isfinite(served)):
        raise RuntimeError("the exported model gave non-finite outputs")
    np.testing.assert_allclose(served, probs, atol=1e-5)
    print(f"saved {model_path}, exported {export_dir}")

    metrics = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "key_metrics": list(KEY_METRICS),
        **record,
        "val_accuracy": [
            float(v) for v in history.history.get("val_accuracy", [])
        ],
        "best_epoch": best_epoch,
        "steps_per_epoch": steps_per_epoch,
        "train_rows": len(train_texts),
        "test_rows": len(test_texts),
        "label_names": label_names,
        "baseline_tfidf_logreg_accuracy": (
            None if baseline is None else baseline["test_accuracy"]
        ),
        "baseline_tfidf_logreg": baseline,
        "data_dir": data_dir,
        "from_lm": args.from_lm,
        "pretrain": lm_pretrain,
        # The language model's training (if any) and the fine-tuning: runs
        # of equal total CPU time compare.
        "total_train_seconds": round(
            record["train_seconds"]
            + ((lm_pretrain or {}).get("train_seconds") or 0.0),
            1,
        ),
        "vocabulary_size": tokenizer.vocabulary_size,
        "num_parameters": int(classifier.count_params()),
        "attention_png": attention_png,
        "model_path": model_path,
        "export_dir": export_dir,
        "sample_probabilities": probs.tolist(),
        "samples": samples,
        "config": vars(args),
    }
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def trim_padding(ids):
    """Drop the columns that are padding in every row of the batch.

    Short sentences padded to `sequence_length` waste attention work; the
    classifier takes any length up to `sequence_length`.
    """
    lengths = tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1)
    return ids[:, : tf.maximum(tf.reduce_max(lengths), 1)]


if __name__ == "__main__":
    main(sys.argv[1:])
