"""
Title: English-to-Spanish translation with a self-attention Transformer
Description: Learn WordPiece vocabularies, train an encoder-decoder
    Transformer with teacher forcing and checkpoints that survive an
    interruption, decode with the cached greedy or beam search, score with
    sacrebleu, and save an end-to-end model that takes raw English strings
    and returns Spanish strings.
Requirements: keras-selfattn[examples] (tensorflow, keras, tensorflow-text,
    sacrebleu, matplotlib for the attention plot; checked at start),
    tensorboard for full TensorBoard logs (optional).

Usage:

    python examples/translation.py \\
        --data-dir ../shared/data/translation/spa_eng --output-dir runs/spa

With no `--data-dir`, the keras.io / TensorFlow copy of the Tatoeba
English-Spanish pairs (`spa-eng.zip`) is downloaded into the Keras cache and
split exactly like the keras.io example (shuffled with `random.Random(1337)`,
70 % train, 15 % validation, 15 % test).

BLEU: the Spanish side keeps its case (`lower_case=False` for the target
tokenizer), so the reported number is sacrebleu's default: cased BLEU with
the `13a` tokenizer, on detokenized outputs against the raw references.
The English source is lower-cased (it only has to be understood).

Re-running the same command after an interruption resumes from the last
finished epoch (`<output-dir>/backup`). Re-running it on a finished run (its
`metrics.json`) trains and publishes nothing: it prints the run's scores and
export path. `--overwrite` trains a fresh run there, replaces the model and
`metrics.json`, and publishes the next `serving/<version>`.
"""

"""## Setup"""

import argparse
import os
import random
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

from keras_selfattn.metrics import bleu
from keras_selfattn.recipes import add_seq2seq_arguments
from keras_selfattn.recipes import add_training_arguments
from keras_selfattn.recipes import require_modules
from keras_selfattn.recipes import train_seq2seq

SPA_ENG_URL = (
    "http://storage.googleapis.com/download.tensorflow.org/data/spa-eng.zip"
)
# Optional dependencies, checked before any data is read.
REQUIRED_MODULES = ("tensorflow_text", "matplotlib", "sacrebleu")

"""## Getting the data

With `--data-dir`, any folder holding `train`, `validation` and `test` files
(`.tsv`, `.tsv.gz`, `.jsonl` or `.jsonl.gz`) works: name the source and
target columns. Without it, `spa-eng.zip` is downloaded once and laid out in
that shape (TSV, columns `en` and `es`).
"""


def download_spa_eng():
    """The keras.io English-Spanish pairs as train/validation/test TSVs."""
    archive = keras.utils.get_file(
        "spa-eng.zip", SPA_ENG_URL, extract=True, cache_subdir="datasets"
    )
    root = archive if os.path.isdir(archive) else os.path.dirname(archive)
    text_file = None
    for dirpath, _, files in os.walk(root):
        if "spa.txt" in files:
            text_file = os.path.join(dirpath, "spa.txt")
            break
    if text_file is None:
        raise FileNotFoundError(f"spa.txt not found under {root!r}")
    out = os.path.join(os.path.dirname(os.path.dirname(text_file)), "spa_eng")
    if not os.path.exists(os.path.join(out, "test.tsv")):
        # Exactly the keras.io split: same reading, seed and proportions.
        with open(text_file, encoding="utf-8") as f:
            lines = f.read().split("\n")[:-1]
        pairs = [line.split("\t")[:2] for line in lines]
        random.Random(1337).shuffle(pairs)
        n_val = int(0.15 * len(pairs))
        n_train = len(pairs) - 2 * n_val
        parts = {
            "train": pairs[:n_train],
            "validation": pairs[n_train : n_train + n_val],
            "test": pairs[n_train + n_val :],
        }
        os.makedirs(out, exist_ok=True)
        for split, rows in parts.items():
            with open(os.path.join(out, f"{split}.tsv"), "w") as f:
                f.write("en\tes\n")
                f.writelines(f"{en}\t{es}\n" for en, es in rows)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    data = p.add_argument_group("input and output")
    data.add_argument("--data-dir", default=None)
    data.add_argument("--output-dir", default="runs/translation")
    # --source-column, --max-eval-rows, ..., --vocabulary-size, --embed-dim,
    # ..., --decoding, --beam-width, ...: the defaults of `Seq2SeqOptions`
    # but for these.
    add_seq2seq_arguments(
        p, source_column="en", target_column="es", max_validation_rows=2000
    )
    # --epochs, --max-steps, --time-budget-minutes, --lr-schedule, ...
    add_training_arguments(p)
    return p.parse_args(argv)


"""## BLEU on the test split

sacrebleu's corpus BLEU (cased, `13a`) of the detokenized outputs against
the raw Spanish references, printed with the first five translations.
"""


def score_bleu(sources, hypotheses, references):
    """The metrics that open `metrics.json`."""
    score = bleu(hypotheses, references)
    print(f"test BLEU: {score['bleu']:.2f} ({score['signature']})")
    for source, hypothesis, reference in list(
        zip(sources, hypotheses, references, strict=True)
    )[:5]:
        print(f"  en:  {source}\n  out: {hypothesis}\n  ref: {reference}")
    return {
        "bleu": score["bleu"],
        "bleu_signature": score["signature"],
        "bleu_precisions": score["precisions"],
    }


def main(argv=None, callbacks=()):
    """Runs the example; `callbacks` are extra Keras callbacks for `fit`."""
    args = parse_args(argv)
    # A missing optional package stops the run now, not after training.
    require_modules(REQUIRED_MODULES)

    """## Vocabularies, training, decoding and an end-to-end translator

    `keras_selfattn.recipes.train_seq2seq` does the rest (its docstring goes
    through the steps, each a function of its own in
    `keras_selfattn.recipes.seq2seq`): it learns the WordPiece
    vocabularies, trains the encoder-decoder Transformer with teacher
    forcing and checkpoints that survive an interruption, decodes the test
    split with an end-to-end translator (raw English strings in, Spanish
    strings out, in one graph), scores it with `score_bleu`, plots where
    the decoder looks and saves `translator.keras` and a TF Serving export
    (the next version, its BLEU in the version's record). On a finished
    `--output-dir` it reports that run instead; `--overwrite` trains a
    fresh one there.

    English is lower-cased; Spanish keeps its case, because the references
    are cased and BLEU is case-sensitive. With `--shared-vocabulary` one
    cased vocabulary serves both sides (and the model shares its embedding
    table).
    """
    options = dict(vars(args), data_dir=args.data_dir or download_spa_eng())
    return train_seq2seq(
        **options,
        evaluate=score_bleu,
        name="translator",
        # The sources are lower-cased (the default), the targets not.
        target_lower_case=False,
        callbacks=callbacks,
        config=vars(args),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
