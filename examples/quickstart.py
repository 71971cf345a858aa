"""
Title: Sentiment classification with keras_selfattn in five minutes
Description: A small self-attention classifier on SST-2, from raw strings to
    a saved, reloaded and exported model.
Requirements: keras-selfattn (tensorflow, keras). No tensorflow-text needed.

Usage:

    python examples/quickstart.py --data-dir ../shared/data/classification/sst2

With no `--data-dir` the GLUE SST-2 archive is downloaded into the Keras
cache (GLUE's train set is split 90/10 into train/validation with a fixed
seed; GLUE's dev set, whose labels are public, is the test set).
"""

"""## Setup"""

import argparse
import csv
import gzip
import json
import os
import random
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_selfattn  # noqa: E402

GLUE_SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"

"""## Reading the data

Any gzip or plain TSV with a header line works: name the text and label
columns. The files have no quoting (a `"` is a literal character).
"""


def read_tsv(path, text_column="text", label_column="label", limit=None):
    """Read `(texts, labels)` from a TSV(.gz) file with a header line."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        for column in (text_column, label_column):
            if column not in header:
                raise ValueError(
                    f"Column {column!r} not found in {path}; its header is "
                    f"{header}. Pass --text-column/--label-column."
                )
        t, y = header.index(text_column), header.index(label_column)
        texts, labels = [], []
        for row in reader:
            if limit is not None and len(texts) >= limit:
                break
            texts.append(row[t])
            labels.append(int(row[y]))
    return texts, np.array(labels, dtype="int32")


def find_split(data_dir, split):
    for name in (f"{split}.tsv.gz", f"{split}.tsv"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"No {split}.tsv(.gz) in --data-dir={data_dir!r}: expected "
        "train, validation and test files with a header line."
    )


def download_sst2():
    """Fetch GLUE SST-2 and lay it out as train/validation/test TSVs."""
    archive = keras.utils.get_file(
        "SST-2.zip", GLUE_SST2_URL, extract=True, cache_subdir="datasets"
    )
    root = archive if os.path.isdir(archive) else os.path.dirname(archive)
    for dirpath, _, files in os.walk(root):
        if "train.tsv" in files and "dev.tsv" in files:
            root = dirpath
            break
    out = os.path.join(os.path.dirname(root), "sst2_splits")
    if not os.path.exists(os.path.join(out, "test.tsv")):
        os.makedirs(out, exist_ok=True)
        texts, labels = read_tsv(os.path.join(root, "train.tsv"), "sentence")
        order = list(range(len(texts)))
        random.Random(0).shuffle(order)
        cut = int(0.9 * len(order))
        for split, rows in (
            ("train", order[:cut]),
            ("validation", order[cut:]),
        ):
            with open(os.path.join(out, f"{split}.tsv"), "w") as f:
                f.write("text\tlabel\n")
                f.writelines(f"{texts[i]}\t{labels[i]}\n" for i in rows)
        texts, labels = read_tsv(os.path.join(root, "dev.tsv"), "sentence")
        with open(os.path.join(out, "test.tsv"), "w") as f:
            f.write("text\tlabel\n")
            f.writelines(
                f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True)
            )
    return out


"""## The model

Token ids come from Keras' `TextVectorization` (id 0 is padding), so
`TokenAndPositionEmbedding` creates the padding mask, the `TransformerBlock`
honours it, and `SequencePooling` averages over real tokens only: an empty
review gives a finite prediction, not NaN.
"""


def build_classifier(vocab_size, sequence_length, embed_dim, num_heads):
    ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    x = keras_selfattn.TokenAndPositionEmbedding(
        vocab_size, sequence_length, embed_dim
    )(ids)
    x = keras_selfattn.TransformerBlock(
        num_heads, ff_dim=2 * embed_dim, dropout=0.1
    )(x)
    x = keras_selfattn.SequencePooling("mean")(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="probs")(x)
    return keras.Model(ids, outputs, name="classifier")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output-dir", default="runs/quickstart")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-train-rows", type=int, default=None)
    p.add_argument("--vocab-size", type=int, default=20000)
    p.add_argument("--sequence-length", type=int, default=64)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    data_dir = args.data_dir or download_sst2()
    columns = (args.text_column, args.label_column)
    train = read_tsv(
        find_split(data_dir, "train"), *columns, limit=args.max_train_rows
    )
    val = read_tsv(find_split(data_dir, "validation"), *columns)
    test = read_tsv(find_split(data_dir, "test"), *columns)
    print(
        f"train {len(train[0])}, validation {len(val[0])}, test {len(test[0])}"
    )

    """## Vocabulary and training"""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=args.vocab_size,
        output_sequence_length=args.sequence_length,
        name="vectorizer",
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(train[0]).batch(512))

    def dataset(texts, labels, shuffle=False):
        ds = tf.data.Dataset.from_tensor_slices((texts, labels))
        if shuffle:
            ds = ds.shuffle(len(texts), seed=args.seed)
        ds = ds.batch(args.batch_size).map(lambda t, y: (vectorizer(t), y))
        return ds.prefetch(tf.data.AUTOTUNE)

    model = build_classifier(
        vectorizer.vocabulary_size(),
        args.sequence_length,
        args.embed_dim,
        args.num_heads,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.time()
    history = model.fit(
        dataset(*train, shuffle=True),
        validation_data=dataset(*val),
        epochs=args.epochs,
        shuffle=False,  # the dataset is shuffled already, with a seed
        verbose=2,
    )
    train_seconds = time.time() - start
    _, test_accuracy = model.evaluate(dataset(*test), verbose=0)
    print(f"test accuracy: {test_accuracy:.4f}")

    """## An end-to-end model: raw strings in, probabilities out"""
    text = keras.Input((), dtype="string", name="text")
    end_to_end = keras.Model(text, model(vectorizer(text)), name="sentiment")
    samples = [
        "a gorgeous , witty , seductive movie .",
        "dull and lifeless .",
        "",
    ]
    probs = keras.ops.convert_to_numpy(end_to_end(tf.constant(samples)))
    for sample, p in zip(samples, probs, strict=True):
        print(f"{p[1]:.3f} positive  {sample!r}")
    if not np.all(np.isfinite(probs)):
        raise RuntimeError("an empty string must not give NaN")

    """## Save, reload, export"""
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "sentiment.keras")
    end_to_end.save(path)
    reloaded = keras.saving.load_model(path)
    again = keras.ops.convert_to_numpy(reloaded(tf.constant(samples)))
    np.testing.assert_allclose(again, probs, atol=1e-6)
    export_dir = os.path.join(args.output_dir, "export")
    end_to_end.export(export_dir, verbose=False)
    # Keep the loaded object alive while calling it: its variables live there.
    exported = tf.saved_model.load(export_dir)
    served = exported.serve(tf.constant(samples))
    np.testing.assert_allclose(served.numpy(), probs, atol=1e-5)
    print(f"saved {path}, exported {export_dir}")

    metrics = {
        "test_accuracy": float(test_accuracy),
        "train_seconds": round(train_seconds, 1),
        "train_loss": [float(v) for v in history.history["loss"]],
        "train_rows": len(train[0]),
    }
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
