"""
Title: English-to-Spanish translation with a self-attention Transformer
Description: Learn WordPiece vocabularies, train an encoder-decoder
    Transformer with teacher forcing and checkpoints that survive an
    interruption, decode with the cached greedy or beam search, score with
    sacrebleu, and save an end-to-end model that takes raw English strings
    and returns Spanish strings.
Requirements: keras-selfattn[text,metrics] (tensorflow, keras,
    tensorflow-text, sacrebleu), matplotlib for the attention plot.

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
finished epoch (`<output-dir>/backup`).
"""

"""## Setup"""

import argparse
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

# Registers the tensorflow-text ops that a reloaded SavedModel needs.
import tensorflow_text  # noqa: F401
from tensorflow.core.framework import summary_pb2

import keras_selfattn
from keras_selfattn.metrics import bleu
from keras_selfattn.models import Seq2SeqTransformer
from keras_selfattn.models.text_generator import TextGenerator
from keras_selfattn.models.text_generator import cross_attention_scores
from keras_selfattn.models.text_generator import make_seq2seq_dataset
from keras_selfattn.plotting import plot_attention
from keras_selfattn.text import WordPieceTokenizer
from keras_selfattn.text import find_split
from keras_selfattn.text import learn_wordpiece_vocabulary
from keras_selfattn.text import read_columns

SPA_ENG_URL = (
    "http://storage.googleapis.com/download.tensorflow.org/data/spa-eng.zip"
)
SPLITS = ("train", "validation", "test")

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


def load_splits(args):
    """`{split: (sources, targets)}` read from `--data-dir` (or the
    download)."""
    data_dir = args.data_dir or download_spa_eng()
    columns = [args.source_column, args.target_column]
    limits = {
        "train": args.max_train_rows,
        "validation": args.max_validation_rows,
        "test": None,
    }
    splits = {}
    for split in SPLITS:
        rows = read_columns(
            find_split(data_dir, split), columns, limit=limits[split]
        )
        splits[split] = (rows[columns[0]], rows[columns[1]])
    return splits


"""## Training with a step cap and a time budget

Both callbacks read the optimizer's step counter and the clock after every
batch, so they stop mid-epoch; the step counter is part of the checkpoint,
so `--max-steps` counts steps across an interruption too.
"""


class StopAtStep(keras.callbacks.Callback):
    """Stops training once the optimizer has taken `max_steps` steps."""

    def __init__(self, max_steps):
        super().__init__()
        self.max_steps = max_steps

    def on_train_batch_end(self, batch, logs=None):
        steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if steps >= self.max_steps:
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training after `minutes` of wall-clock training time."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start >= self.seconds:
            self.stopped = True
            self.model.stop_training = True


class EpochScalars(keras.callbacks.Callback):
    """TensorBoard event files of the epoch metrics, without TensorBoard.

    `keras.callbacks.TensorBoard` needs the `tensorboard` package, which
    TensorFlow no longer installs. This writes the same `epoch_<metric>`
    scalars to `<log_dir>/train` and `<log_dir>/validation` with TensorFlow's
    own summary writer, so `tensorboard --logdir` shows the curves.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.writers = {}

    def _writer(self, name):
        if name not in self.writers:
            self.writers[name] = tf.summary.create_file_writer(
                os.path.join(self.log_dir, name)
            )
        return self.writers[name]

    def on_epoch_end(self, epoch, logs=None):
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name="scalars"
            )
        )
        for key, value in (logs or {}).items():
            split = "validation" if key.startswith("val_") else "train"
            tag = "epoch_" + key.removeprefix("val_")
            with self._writer(split).as_default():
                tf.summary.write(
                    tag,
                    tf.constant(float(value)),
                    step=epoch,
                    metadata=metadata,
                )
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def tensorboard_callback(log_dir):
    """Keras' TensorBoard callback when `tensorboard` is installed."""
    try:
        importlib.import_module("tensorboard")
    except ImportError:
        return EpochScalars(log_dir)
    return keras.callbacks.TensorBoard(log_dir)


def make_strategy(name):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        # Reads the cluster from the TF_CONFIG environment variable.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", default=None)
    data.add_argument("--source-column", default="en")
    data.add_argument("--target-column", default="es")
    data.add_argument("--max-train-rows", type=int, default=None)
    data.add_argument("--max-validation-rows", type=int, default=2000)
    data.add_argument(
        "--max-eval-rows",
        type=int,
        default=None,
        help="decode and score only the first rows of the test split",
    )
    data.add_argument("--output-dir", default="runs/translation")
    model = p.add_argument_group("model")
    model.add_argument("--vocabulary-size", type=int, default=8000)
    model.add_argument(
        "--shared-vocabulary",
        action="store_true",
        help="one vocabulary (and embedding table) for both languages",
    )
    model.add_argument("--source-length", type=int, default=32)
    model.add_argument("--target-length", type=int, default=32)
    model.add_argument("--embed-dim", type=int, default=256)
    model.add_argument("--num-heads", type=int, default=8)
    model.add_argument("--ff-dim", type=int, default=1024)
    model.add_argument("--num-encoder-layers", type=int, default=2)
    model.add_argument("--num-decoder-layers", type=int, default=2)
    model.add_argument("--dropout", type=float, default=0.1)
    model.add_argument(
        "--copy-attention",
        action="store_true",
        help="pointer-generator output that can copy source tokens "
        "(needs --shared-vocabulary)",
    )
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--time-budget-minutes", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--learning-rate", type=float, default=5e-4)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
    )
    train.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line",
    )
    decode = p.add_argument_group("decoding")
    decode.add_argument(
        "--decoding", choices=("greedy", "beam"), default="greedy"
    )
    decode.add_argument("--beam-width", type=int, default=4)
    decode.add_argument("--length-penalty", type=float, default=0.6)
    decode.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=0,
        help="never generate the same n-gram twice in an output (0: off)",
    )
    return p.parse_args(argv)


def _vocabulary(path, texts, args, lower_case):
    """Learn a WordPiece vocabulary, or reuse the one saved in `path` (a
    resumed run must keep the ids its checkpoint was trained with)."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    vocabulary = learn_wordpiece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts),
        vocabulary_size=args.vocabulary_size,
        lower_case=lower_case,
    )
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token in vocabulary)
    return vocabulary


def main(argv=None, callbacks=()):
    """Runs the example; `callbacks` are extra Keras callbacks for `fit`."""
    args = parse_args(argv)
    # Before any other TensorFlow work: multi-worker set-up must come first.
    strategy = make_strategy(args.strategy)
    keras.utils.set_random_seed(args.seed)
    splits = load_splits(args)
    for split, (sources, _) in splits.items():
        print(f"{split}: {len(sources)} pairs")
    train_sources, train_targets = splits["train"]
    os.makedirs(args.output_dir, exist_ok=True)

    """## WordPiece vocabularies and tokenizers inside the graph

    English is lower-cased; Spanish keeps its case, because the references
    are cased and BLEU is case-sensitive. With `--shared-vocabulary` one
    cased vocabulary serves both sides (and the model shares its embedding
    table). The target tokenizer adds `[START]` and `[END]`; its length is
    one more than the decoder's, for the shift of teacher forcing.
    """
    if args.shared_vocabulary:
        source_vocabulary = target_vocabulary = _vocabulary(
            os.path.join(args.output_dir, "vocabulary.txt"),
            train_sources + train_targets,
            args,
            lower_case=False,
        )
        source_lower_case = False
    else:
        source_vocabulary = _vocabulary(
            os.path.join(args.output_dir, "source_vocabulary.txt"),
            train_sources,
            args,
            lower_case=True,
        )
        target_vocabulary = _vocabulary(
            os.path.join(args.output_dir, "target_vocabulary.txt"),
            train_targets,
            args,
            lower_case=False,
        )
        source_lower_case = True
    source_tokenizer = WordPieceTokenizer(
        source_vocabulary,
        sequence_length=args.source_length,
        lower_case=source_lower_case,
        name="source_tokenizer",
    )
    target_tokenizer = WordPieceTokenizer(
        target_vocabulary,
        sequence_length=args.target_length + 1,
        lower_case=False,
        add_start_token=True,
        add_end_token=True,
        name="target_tokenizer",
    )
    print(
        f"vocabularies: {len(source_vocabulary)} source, "
        f"{len(target_vocabulary)} target WordPiece tokens"
    )

    def dataset(split, shuffle=False):
        sources, targets = splits[split]
        return make_seq2seq_dataset(
            sources,
            targets,
            source_tokenizer,
            target_tokenizer,
            batch_size=args.batch_size,
            shuffle=shuffle,
            seed=args.seed,
        )

    """## The encoder-decoder Transformer

    Token id 0 is padding: the encoder ignores padded source positions, the
    decoder's self-attention is causal and its cross-attention skips the
    source padding. The loss ignores padded target positions. Built and
    compiled under the distribution strategy's scope.
    """
    with strategy.scope():
        seq2seq = Seq2SeqTransformer(
            source_vocabulary_size=len(source_vocabulary),
            target_vocabulary_size=len(target_vocabulary),
            source_length=args.source_length,
            target_length=args.target_length,
            embed_dim=args.embed_dim,
            num_heads=args.num_heads,
            ff_dim=args.ff_dim,
            num_encoder_layers=args.num_encoder_layers,
            num_decoder_layers=args.num_decoder_layers,
            dropout=args.dropout,
            share_embeddings=args.shared_vocabulary,
            copy_attention=args.copy_attention,
            name="seq2seq",
        )
        seq2seq.build()
        seq2seq.compile(
            optimizer=keras.optimizers.Adam(
                args.learning_rate, beta_2=0.98, global_clipnorm=1.0
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=0
            ),
            # Batches have different lengths: no XLA recompilation per shape.
            jit_compile=False,
        )
    print(f"parameters: {seq2seq.count_params():,}")

    """## Training that survives an interruption

    `BackupAndRestore` saves the weights, the optimizer state and the epoch
    at the end of every epoch; re-running the same command after a crash
    restores them and continues with the next epoch (the vocabularies are
    saved next to it). TensorBoard logs go to `<output-dir>/logs`.
    """
    time_budget = None
    fit_callbacks = [
        keras.callbacks.BackupAndRestore(
            backup_dir=os.path.join(args.output_dir, "backup")
        ),
        tensorboard_callback(os.path.join(args.output_dir, "logs")),
    ]
    if args.max_steps is not None:
        fit_callbacks.append(StopAtStep(args.max_steps))
    if args.time_budget_minutes is not None:
        time_budget = TimeBudget(args.time_budget_minutes)
        fit_callbacks.append(time_budget)
    steps_per_epoch = math.ceil(len(train_sources) / args.batch_size)
    start = time.time()
    history = seq2seq.fit(
        dataset("train", shuffle=True),
        validation_data=dataset("validation"),
        epochs=args.epochs,
        callbacks=fit_callbacks + list(callbacks),
        shuffle=False,  # the dataset is shuffled already, with a seed
        verbose=args.verbose,
    )
    train_seconds = time.time() - start
    steps = int(keras.ops.convert_to_numpy(seq2seq.optimizer.iterations))
    print(f"trained {steps} steps in {train_seconds:.0f} s")

    """## An end-to-end translator: raw strings in, strings out

    `TextGenerator` tokenizes, decodes with the key/value-cached greedy (or
    beam) search and detokenizes, all in one graph; traced once with a
    string signature, it decodes the test set batch by batch.
    """
    # An uncompiled copy: the `.keras` file then holds the weights only,
    # not the optimizer's state (three times the size with Adam).
    inference_model = Seq2SeqTransformer.from_config(seq2seq.get_config())
    inference_model.build()
    inference_model.set_weights(seq2seq.get_weights())
    translator = TextGenerator(
        source_tokenizer,
        target_tokenizer,
        inference_model,
        max_length=args.target_length,
        method=args.decoding,
        beam_width=args.beam_width,
        length_penalty=args.length_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        name="translator",
    )
    generate_ids = tf.function(
        translator.generate_ids,
        input_signature=[tf.TensorSpec((None,), tf.string)],
        autograph=False,  # graph-ready already: keras.ops loops
    )
    test_sources, test_targets = splits["test"]
    if args.max_eval_rows is not None:
        test_sources = test_sources[: args.max_eval_rows]
        test_targets = test_targets[: args.max_eval_rows]
    start = time.time()
    hypotheses, ended = [], 0
    for i in range(0, len(test_sources), args.batch_size):
        batch = tf.constant(test_sources[i : i + args.batch_size])
        ids = generate_ids(batch)
        # Rows that emitted the end token before the length limit.
        ended += int((ids.numpy() == target_tokenizer.end_id).any(1).sum())
        hypotheses += [
            s.decode("utf-8") for s in translator.detokenize(ids).numpy()
        ]
    decode_seconds = time.time() - start

    """## BLEU on the test split

    sacrebleu's corpus BLEU (cased, `13a`) of the detokenized outputs
    against the raw Spanish references.
    """
    score = bleu(hypotheses, test_targets)
    print(f"test BLEU: {score['bleu']:.2f} ({score['signature']})")
    for source, hypothesis, reference in list(
        zip(test_sources, hypotheses, test_targets, strict=True)
    )[:5]:
        print(f"  en:  {source}\n  out: {hypothesis}\n  ref: {reference}")

    """## Where does the decoder look?

    The last decoder block's cross-attention for one test sentence, with the
    generated tokens as the decoder's input (teacher forcing on its own
    output): row `t` is where it looked when choosing token `t + 1`.
    """
    attention_png = plot_cross_attention(
        translator,
        test_sources[0] if test_sources else "",
        os.path.join(args.output_dir, "attention.png"),
    )

    """## Save and reload the end-to-end model"""
    samples = list(test_sources[:3]) + [""]
    outputs = translator(tf.constant(samples)).numpy().tolist()
    model_path = os.path.join(args.output_dir, "translator.keras")
    keras.saving.save_model(translator, model_path)
    reloaded = keras.saving.load_model(model_path)
    again = reloaded(tf.constant(samples)).numpy().tolist()
    if again != outputs:
        raise RuntimeError(f"reloaded model differs: {again} != {outputs}")
    # TF Serving layout, <output-dir>/serving/<version>/: `text` in, `text`
    # out, decoding inside the graph.
    export_dir = keras_selfattn.export.export_text_generator(
        translator, os.path.join(args.output_dir, "serving")
    )
    exported = tf.saved_model.load(export_dir)
    answer = exported.signatures["serving_default"](text=tf.constant(samples))
    if answer["text"].numpy().tolist() != outputs:
        raise RuntimeError("the exported model answers differently")
    print(f"saved {model_path}, exported {export_dir}")

    metrics = {
        "bleu": score["bleu"],
        "bleu_signature": score["signature"],
        "bleu_precisions": score["precisions"],
        "train_seconds": round(train_seconds, 1),
        "decode_seconds": round(decode_seconds, 1),
        "train_loss": [float(v) for v in history.history.get("loss", [])],
        "val_loss": [float(v) for v in history.history.get("val_loss", [])],
        "epochs": [int(e) for e in history.epoch],
        "initial_epoch": int(history.epoch[0]) if history.epoch else None,
        "steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "stopped_by_time_budget": bool(time_budget and time_budget.stopped),
        "train_rows": len(train_sources),
        "eval_rows": len(test_sources),
        "ended_fraction": ended / max(len(test_sources), 1),
        "source_vocabulary_size": len(source_vocabulary),
        "target_vocabulary_size": len(target_vocabulary),
        "num_parameters": int(seq2seq.count_params()),
        "decoding": args.decoding,
        "samples": samples,
        "export_dir": export_dir,
        "sample_outputs": [o.decode("utf-8") for o in outputs],
        "hypotheses": hypotheses[:20],
        "attention_png": attention_png,
        "model_path": model_path,
        "config": vars(args),
    }
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
    return metrics


def plot_cross_attention(generator, text, path):
    """Plot the last decoder block's cross-attention for one input."""
    source_ids = generator.source_tokenizer(tf.constant([text]))  # (1, S)
    length = max(1, int(np.count_nonzero(source_ids.numpy())))
    source_ids = source_ids[:, :length]
    generated = generator.generate_ids(tf.constant([text])).numpy()[0]
    end = generator.target_tokenizer.end_id
    stop = list(generated).index(end) + 1 if end in generated else 0
    stop = stop or max(1, int(np.count_nonzero(generated)))
    generated = generated[:stop]  # the output tokens, end token included
    start = generator.target_tokenizer.start_id
    decoder_ids = np.concatenate([[start], generated[:-1]])[None]  # (1, T)
    scores = cross_attention_scores(
        generator.seq2seq, source_ids, decoder_ids
    )  # (1, H, T, S)

    def labels(tokenizer, ids):
        return [t.decode("utf-8") for t in tokenizer.id_to_token(ids).numpy()]

    return plot_attention(
        keras.ops.convert_to_numpy(scores)[0],
        labels(generator.target_tokenizer, generated),
        labels(generator.source_tokenizer, source_ids[0]),
        path,
        title="cross-attention, last decoder block",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
