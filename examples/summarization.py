"""
Title: Dialogue summarization (SAMSum) with a self-attention Transformer
Description: Learn a WordPiece vocabulary, train an encoder-decoder
    Transformer from scratch on messenger-style chats and their summaries
    with checkpoints that survive an interruption, decode with the cached
    greedy or beam search, score with ROUGE, and save an end-to-end model
    that takes a raw dialogue string and returns its summary.
Requirements: keras-selfattn[text,metrics] (tensorflow, keras,
    tensorflow-text, rouge-score), matplotlib for the attention plot.

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
finished epoch (`<output-dir>/backup`).
"""

"""## Setup"""

import argparse
import importlib
import json
import math
import os
import re
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
from keras_selfattn.metrics import rouge
from keras_selfattn.models import Seq2SeqTransformer
from keras_selfattn.models.text_generator import TextGenerator
from keras_selfattn.models.text_generator import cross_attention_scores
from keras_selfattn.models.text_generator import make_seq2seq_dataset
from keras_selfattn.plotting import plot_attention
from keras_selfattn.text import WordPieceTokenizer
from keras_selfattn.text import find_split
from keras_selfattn.text import learn_wordpiece_vocabulary
from keras_selfattn.text import read_columns

SPLITS = ("train", "validation", "test")

"""## Getting the data

Any folder holding `train`, `validation` and `test` files (`.jsonl`,
`.jsonl.gz`, `.tsv` or `.tsv.gz`) works: name the dialogue and summary
columns (JSON keys or TSV header names). In JSON Lines the utterances of a
dialogue are separated by newlines; the tokenizer treats them as spaces.
"""


def load_splits(args):
    """`{split: (dialogues, summaries)}` read from `--data-dir`."""
    if not args.data_dir:
        raise ValueError(
            "Received no --data-dir: SAMSum has no stable canonical download "
            "URL (see the module docstring). Pass a folder with train, "
            "validation and test .jsonl(.gz) files, e.g. "
            "--data-dir ../shared/data/summarization/samsum"
        )
    data_dir = args.data_dir
    columns = [args.source_column, args.target_column]
    limits = {
        "train": args.max_train_rows,
        "validation": args.max_validation_rows,
        "test": args.max_eval_rows,
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
    data.add_argument("--source-column", default="dialogue")
    data.add_argument("--target-column", default="summary")
    data.add_argument("--max-train-rows", type=int, default=None)
    data.add_argument("--max-validation-rows", type=int, default=None)
    data.add_argument(
        "--max-eval-rows",
        type=int,
        default=None,
        help="decode and score only the first rows of the test split",
    )
    data.add_argument("--output-dir", default="runs/summarization")
    model = p.add_argument_group("model")
    model.add_argument("--vocabulary-size", type=int, default=8000)
    model.add_argument(
        "--shared-vocabulary",
        action="store_true",
        help="one vocabulary (and embedding table) for dialogues and summaries",
    )
    model.add_argument("--source-length", type=int, default=192)
    model.add_argument("--target-length", type=int, default=48)
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
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--time-budget-minutes", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=5e-4)
    train.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="cosine: linear warm-up over --warmup-steps, then cosine decay "
        "to zero at the end of the last epoch",
    )
    train.add_argument("--warmup-steps", type=int, default=0)
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


def _learning_rate(args, train_rows):
    """A constant rate, or warm-up then cosine decay to zero at the end."""
    if args.lr_schedule == "constant":
        return args.learning_rate
    total_steps = args.epochs * math.ceil(train_rows / args.batch_size)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if args.warmup_steps else args.learning_rate,
        decay_steps=max(total_steps - args.warmup_steps, 1),
        warmup_target=args.learning_rate if args.warmup_steps else None,
        warmup_steps=args.warmup_steps,
    )


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

    Both sides are lower-cased. With `--shared-vocabulary` one vocabulary
    serves dialogues and summaries (and the model shares its embedding
    table), which helps with the names a summary copies from the chat. The
    target tokenizer adds `[START]` and `[END]`; its length is one more than
    the decoder's, for the shift of teacher forcing. Dialogues longer than
    `--source-length` tokens are truncated (their beginning is kept).
    """
    if args.shared_vocabulary:
        source_vocabulary = target_vocabulary = _vocabulary(
            os.path.join(args.output_dir, "vocabulary.txt"),
            train_sources + train_targets,
            args,
            lower_case=True,
        )
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
            lower_case=True,
        )
    source_tokenizer = WordPieceTokenizer(
        source_vocabulary,
        sequence_length=args.source_length,
        lower_case=True,
        name="source_tokenizer",
    )
    target_tokenizer = WordPieceTokenizer(
        target_vocabulary,
        sequence_length=args.target_length + 1,
        lower_case=True,
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
                _learning_rate(args, len(train_sources)),
                beta_2=0.98,
                global_clipnorm=1.0,
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

    """## An end-to-end summarizer: raw strings in, strings out

    `TextGenerator` tokenizes, decodes with the key/value-cached greedy (or
    beam) search and detokenizes, all in one graph; traced once with a
    string signature, it decodes the test set batch by batch.
    """
    # An uncompiled copy: the `.keras` file then holds the weights only,
    # not the optimizer's state (three times the size with Adam).
    inference_model = Seq2SeqTransformer.from_config(seq2seq.get_config())
    inference_model.build()
    inference_model.set_weights(seq2seq.get_weights())
    summarizer = TextGenerator(
        source_tokenizer,
        target_tokenizer,
        inference_model,
        max_length=args.target_length,
        method=args.decoding,
        beam_width=args.beam_width,
        length_penalty=args.length_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        name="summarizer",
    )
    generate_ids = tf.function(
        summarizer.generate_ids,
        input_signature=[tf.TensorSpec((None,), tf.string)],
        autograph=False,  # graph-ready already: keras.ops loops
    )
    test_sources, test_targets = splits["test"]
    start = time.time()
    hypotheses, ended = [], 0
    for i in range(0, len(test_sources), args.batch_size):
        batch = tf.constant(test_sources[i : i + args.batch_size])
        ids = generate_ids(batch)
        # Rows that emitted the end token before the length limit.
        ended += int((ids.numpy() == target_tokenizer.end_id).any(1).sum())
        hypotheses += [
            s.decode("utf-8") for s in summarizer.detokenize(ids).numpy()
        ]
    decode_seconds = time.time() - start

    """## ROUGE on the test split

    rouge-score's ROUGE-1/2/L/Lsum F1 of the generated summaries against the
    reference summaries, with one sentence per line for ROUGE-Lsum.
    """
    scores = rouge(
        [sentence_per_line(h) for h in hypotheses],
        [sentence_per_line(r) for r in test_targets],
    )
    print(
        "test ROUGE-1/2/L/Lsum: "
        + " / ".join(f"{scores[k]:.2f}" for k in ROUGE_KEYS)
    )
    for source, hypothesis, reference in list(
        zip(test_sources, hypotheses, test_targets, strict=True)
    )[:3]:
        print(f"  dialogue: {source[:300]!r}")
        print(f"  out: {hypothesis}\n  ref: {reference}")

    """## Where does the decoder look?

    The last decoder block's cross-attention for one test dialogue, with the
    generated tokens as the decoder's input (teacher forcing on its own
    output): row `t` is where it looked when choosing token `t + 1`.
    """
    attention_png = plot_cross_attention(
        summarizer,
        test_sources[0] if test_sources else "",
        os.path.join(args.output_dir, "attention.png"),
        max_source_tokens=48,
    )

    """## Save and reload the end-to-end model"""
    samples = list(test_sources[:3]) + [""]
    outputs = summarizer(tf.constant(samples)).numpy().tolist()
    model_path = os.path.join(args.output_dir, "summarizer.keras")
    keras.saving.save_model(summarizer, model_path)
    reloaded = keras.saving.load_model(model_path)
    again = reloaded(tf.constant(samples)).numpy().tolist()
    if again != outputs:
        raise RuntimeError(f"reloaded model differs: {again} != {outputs}")
    # TF Serving layout, <output-dir>/serving/<version>/: `text` in, `text`
    # out, decoding inside the graph.
    export_dir = keras_selfattn.export.export_text_generator(
        summarizer, os.path.join(args.output_dir, "serving")
    )
    exported = tf.saved_model.load(export_dir)
    answer = exported.signatures["serving_default"](text=tf.constant(samples))
    if answer["text"].numpy().tolist() != outputs:
        raise RuntimeError("the exported model answers differently")
    print(f"saved {model_path}, exported {export_dir}")

    metrics = {
        **{key: float(scores[key]) for key in ROUGE_KEYS},
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


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def sentence_per_line(text):
    """One sentence per line, as ROUGE-Lsum expects."""
    return re.sub(r"([.!?])\s+", "\\1\n", text.strip())


def plot_cross_attention(generator, text, path, max_source_tokens=None):
    """Plot the last decoder block's cross-attention for one input (its
    first `max_source_tokens` source tokens, so the labels stay legible)."""
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
    if max_source_tokens is not None:
        scores = scores[..., :max_source_tokens]
        source_ids = source_ids[:, :max_source_tokens]

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
