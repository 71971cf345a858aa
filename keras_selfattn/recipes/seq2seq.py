"""The seq2seq recipe: text pairs in; a trained, scored, exported generator out.

The pipeline of `examples/translation.py` and `examples/summarization.py`,
as steps that each take the `Seq2SeqOptions` and can be called on their
own:

1. `read_seq2seq_data`: the `train`, `validation` and `test` text pairs
   and the two WordPiece tokenizers (`Seq2SeqData`).
2. `build_seq2seq`: a compiled `Seq2SeqTransformer`.
3. `fit_seq2seq`: training that survives an interruption
   (`fit_resumable`).
4. `make_text_generator` and `evaluate_seq2seq`: the end-to-end
   `TextGenerator`, the decoded test split and its scores;
   `plot_cross_attention` draws where the decoder looked.
5. `export_seq2seq`: the `.keras` file and the next TF Serving version,
   each checked against the original.

`train_seq2seq` is the driver that calls them, after looking at the output
folder (`prepare_output_dir`), and writes `metrics.json` last.

Needs TensorFlow and tensorflow-text (TensorFlow is imported with this
module, which `keras_selfattn.recipes` loads on first access to one of its
names).
"""

import dataclasses
import json
import math
import numbers
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_selfattn.export.saved_model import export_text_generator
from keras_selfattn.layers import _validation
from keras_selfattn.models.seq2seq import Seq2SeqTransformer
from keras_selfattn.models.text_generator import TextGenerator
from keras_selfattn.models.text_generator import cross_attention_scores
from keras_selfattn.models.text_generator import make_seq2seq_dataset
from keras_selfattn.plotting import plot_attention
from keras_selfattn.recipes.args import Seq2SeqOptions
from keras_selfattn.recipes.fitting import fit_resumable
from keras_selfattn.recipes.fitting import learning_rate_schedule
from keras_selfattn.recipes.runs import METRICS_FILE
from keras_selfattn.recipes.runs import compare_with_published
from keras_selfattn.recipes.runs import start_run
from keras_selfattn.text.files import find_split
from keras_selfattn.text.files import read_columns
from keras_selfattn.text.wordpiece import WordPieceTokenizer
from keras_selfattn.text.wordpiece import learn_wordpiece_vocabulary

SPLITS = ("train", "validation", "test")

__all__ = [
    "Seq2SeqData",
    "build_seq2seq",
    "evaluate_seq2seq",
    "export_seq2seq",
    "fit_seq2seq",
    "make_text_generator",
    "plot_cross_attention",
    "read_seq2seq_data",
    "train_seq2seq",
]


@dataclasses.dataclass(frozen=True)
class Seq2SeqData:
    """The text pairs of each split and the tokenizers learned from them.

    What `read_seq2seq_data` returns and the other steps take.

    Args:
        splits: dict, `{"train": (sources, targets), "validation": ...,
            "test": ...}`, lists of str.
        source_tokenizer: a `WordPieceTokenizer` for the sources.
        target_tokenizer: a `WordPieceTokenizer` for the targets, with
            start and end tokens and one token more than the decoder takes
            (inputs and labels are shifted by one).
    """

    splits: dict
    source_tokenizer: WordPieceTokenizer
    target_tokenizer: WordPieceTokenizer

    def dataset(self, split, batch_size, shuffle=False, seed=None):
        """`make_seq2seq_dataset` of one split: `({"encoder_ids",
        "decoder_ids"}, labels)` batches."""
        sources, targets = self.splits[split]
        return make_seq2seq_dataset(
            sources,
            targets,
            self.source_tokenizer,
            self.target_tokenizer,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
        )


def read_seq2seq_data(data_dir, output_dir, options, reuse_vocabulary=False):
    """Step 1: read the text pairs and learn the WordPiece tokenizers.

    Reads `train`, `validation` and `test` files (`.tsv(.gz)` or
    `.jsonl(.gz)`) from `data_dir`, one source and one target column, and
    learns the vocabularies from the training split, saved to
    `output_dir` (`vocabulary.txt`, or `source_vocabulary.txt` and
    `target_vocabulary.txt`).

    Args:
        data_dir: str, the folder of the split files.
        output_dir: str, where the vocabularies are saved (created).
        options: `Seq2SeqOptions`: the columns, the row limits, the
            vocabulary size and casing, the lengths.
        reuse_vocabulary: bool, read the vocabularies saved in
            `output_dir` instead of learning them: a resumed run's
            checkpoint needs the ids it was trained with. Defaults to
            `False`.

    Returns:
        A `Seq2SeqData`.
    """
    splits = {}
    limits = {
        "train": options.max_train_rows,
        "validation": options.max_validation_rows,
    }
    columns = [options.source_column, options.target_column]
    for split in SPLITS:
        rows = read_columns(
            find_split(data_dir, split), columns, limit=limits.get(split)
        )
        splits[split] = (rows[columns[0]], rows[columns[1]])
        print(f"{split}: {len(splits[split][0])} pairs")
    train_sources, train_targets = splits["train"]
    os.makedirs(output_dir, exist_ok=True)

    def vocabulary(file_name, texts, lower_case):
        return _vocabulary(
            os.path.join(output_dir, file_name),
            texts,
            options.vocabulary_size,
            lower_case=lower_case,
            reuse=reuse_vocabulary,
        )

    source_lower_case = options.source_lower_case
    if options.shared_vocabulary:
        source_vocabulary = target_vocabulary = vocabulary(
            "vocabulary.txt",
            train_sources + train_targets,
            options.target_lower_case,
        )
        source_lower_case = options.target_lower_case
    else:
        source_vocabulary = vocabulary(
            "source_vocabulary.txt", train_sources, source_lower_case
        )
        target_vocabulary = vocabulary(
            "target_vocabulary.txt",
            train_targets,
            options.target_lower_case,
        )
    print(
        f"vocabularies: {len(source_vocabulary)} source, "
        f"{len(target_vocabulary)} target WordPiece tokens"
    )
    return Seq2SeqData(
        splits=splits,
        source_tokenizer=WordPieceTokenizer(
            source_vocabulary,
            sequence_length=options.source_length,
            lower_case=source_lower_case,
            name="source_tokenizer",
        ),
        # One token longer than the decoder: inputs and labels are shifted.
        target_tokenizer=WordPieceTokenizer(
            target_vocabulary,
            sequence_length=options.target_length + 1,
            lower_case=options.target_lower_case,
            add_start_token=True,
            add_end_token=True,
            name="target_tokenizer",
        ),
    )


def _steps_per_epoch(data, options):
    return math.ceil(len(data.splits["train"][0]) / options.batch_size)


def build_seq2seq(data, options, strategy=None):
    """Step 2: a compiled `Seq2SeqTransformer` for `data`'s vocabularies.

    Token id 0 is padding, so the encoder skips padded sources, the decoder
    is causal and its cross-attention skips source padding; the loss (a
    cross-entropy on logits) skips target padding. Adam with `beta_2=0.98`
    and global norm clipping at 1, on `learning_rate_schedule`; no XLA
    (batches have different lengths).

    Args:
        data: `Seq2SeqData`, for the vocabulary sizes and the steps per
            epoch.
        options: `Seq2SeqOptions`, the model's sizes and the learning rate.
        strategy: a `tf.distribute.Strategy` whose scope holds the model,
            or `None` (the default strategy). Defaults to `None`.

    Returns:
        The compiled, built `Seq2SeqTransformer`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = Seq2SeqTransformer(
            source_vocabulary_size=data.source_tokenizer.vocabulary_size,
            target_vocabulary_size=data.target_tokenizer.vocabulary_size,
            source_length=options.source_length,
            target_length=options.target_length,
            embed_dim=options.embed_dim,
            num_heads=options.num_heads,
            ff_dim=options.ff_dim,
            num_encoder_layers=options.num_encoder_layers,
            num_decoder_layers=options.num_decoder_layers,
            dropout=options.dropout,
            share_embeddings=options.shared_vocabulary,
            copy_attention=options.copy_attention,
            name="seq2seq",
        )
        model.build()
        schedule = learning_rate_schedule(
            options.learning_rate,
            options.lr_schedule,
            total_steps=options.epochs * _steps_per_epoch(data, options),
            warmup_steps=options.warmup_steps,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(
                schedule, beta_2=0.98, global_clipnorm=1.0
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=0
            ),
            # Batches have different lengths: no XLA recompilation per shape.
            jit_compile=False,
        )
    print(f"parameters: {model.count_params():,}")
    return model


def fit_seq2seq(model, data, output_dir, options, callbacks=()):
    """Step 3: train with teacher forcing, resumably.

    `fit_resumable` on the shuffled training pairs, validated on the
    validation pairs: re-running after a crash continues with the next
    epoch; TensorBoard logs go to `<output_dir>/logs`.

    Args:
        model: the compiled `Seq2SeqTransformer`.
        data: `Seq2SeqData`.
        output_dir: str, the folder of `backup/` and `logs/`.
        options: `Seq2SeqOptions`: epochs, step cap, time budget, batch
            size, seed, verbosity.
        callbacks: more Keras callbacks for `fit`. Defaults to `()`.

    Returns:
        `fit_resumable`'s `(history, record)`, the record with
        `steps_per_epoch` added.
    """
    history, record = fit_resumable(
        model,
        data.dataset(
            "train", options.batch_size, shuffle=True, seed=options.seed
        ),
        output_dir,
        validation_data=data.dataset("validation", options.batch_size),
        epochs=options.epochs,
        max_steps=options.max_steps,
        time_budget_minutes=options.time_budget_minutes,
        callbacks=callbacks,
        verbose=options.verbose,
    )
    record["steps_per_epoch"] = _steps_per_epoch(data, options)
    print(f"trained {record['steps']} steps in {record['train_seconds']:.0f} s")
    return history, record


def make_text_generator(model, data, options):
    """Step 4a: the end-to-end `TextGenerator`, raw strings in and out.

    The generator holds an uncompiled copy of `model`, so its `.keras`
    file holds the weights only, not the optimizer's state (three times
    the size with Adam).

    Args:
        model: the trained `Seq2SeqTransformer`.
        data: `Seq2SeqData`, for the tokenizers.
        options: `Seq2SeqOptions`: the name, the target length and the
            decoding.

    Returns:
        A `TextGenerator`.
    """
    inference_model = Seq2SeqTransformer.from_config(model.get_config())
    inference_model.build()
    inference_model.set_weights(model.get_weights())
    return TextGenerator(
        data.source_tokenizer,
        data.target_tokenizer,
        inference_model,
        max_length=options.target_length,
        method=options.decoding,
        beam_width=options.beam_width,
        length_penalty=options.length_penalty,
        no_repeat_ngram_size=options.no_repeat_ngram_size,
        name=options.name,
    )


def evaluate_seq2seq(generator, data, evaluate, options):
    """Step 4b: decode the test split and score it.

    The first `options.max_eval_rows` test sources are decoded in batches
    with `generator.generate_ids`, traced once with a string signature.

    Args:
        generator: the `TextGenerator`.
        data: `Seq2SeqData`.
        evaluate: callable `(sources, hypotheses, references)` (lists of
            str) returning a dict of JSON-ready scores.
        options: `Seq2SeqOptions`: `max_eval_rows` and `batch_size`.

    Returns:
        dict: `scores` (`evaluate`'s dict), `sources`, `hypotheses`,
        `ended_fraction` (the decoded rows that emitted the end token) and
        `decode_seconds`.

    Raises:
        TypeError: `evaluate` returned something other than a dict.
    """
    sources, references = data.splits["test"]
    if options.max_eval_rows is not None:
        sources = sources[: options.max_eval_rows]
        references = references[: options.max_eval_rows]
    start = time.time()
    hypotheses, ended = _decode(generator, sources, options.batch_size)
    decode_seconds = time.time() - start
    scores = evaluate(sources, hypotheses, references)
    if not isinstance(scores, dict):
        raise _validation.invalid(
            "evaluate", "a callable returning a dict", scores, error=TypeError
        )
    return {
        "scores": scores,
        "sources": sources,
        "hypotheses": hypotheses,
        "ended_fraction": ended / max(len(sources), 1),
        "decode_seconds": decode_seconds,
    }


def _decode(generator, texts, batch_size):
    """The generator's outputs for `texts`, and how many emitted the end
    token before the length limit."""
    # Traced once for any batch size; graph-ready already (keras.ops
    # loops), so no AutoGraph.
    generate_ids = tf.function(
        generator.generate_ids,
        input_signature=[tf.TensorSpec((None,), tf.string)],
        autograph=False,
    )
    end_id = generator.target_tokenizer.end_id
    hypotheses, ended = [], 0
    for i in range(0, len(texts), batch_size):
        ids = generate_ids(tf.constant(texts[i : i + batch_size]))
        ended += int((ids.numpy() == end_id).any(1).sum())
        hypotheses += [
            s.decode("utf-8") for s in generator.detokenize(ids).numpy()
        ]
    return hypotheses, ended


def plot_cross_attention(generator, text, path, max_source_tokens=None):
    """Plot the last decoder block's cross-attention for one input.

    The generated tokens are the decoder's input (teacher forcing on its
    own output): row `t` is where it looked when choosing token `t + 1`.

    Args:
        generator: the `TextGenerator`.
        text: str, the source to decode and plot.
        path: str, the PNG file to write.
        max_source_tokens: int or `None`, plot only the first source
            tokens, so the labels stay legible. Defaults to `None`.

    Returns:
        str, `path`.
    """
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


def export_seq2seq(generator, model_path, samples, metadata, key_metrics):
    """Step 5: save, reload and export the generator; check both copies.

    Saves `model_path` (`.keras`) and reloads it; prints how `key_metrics`
    compare with the latest published version (`compare_with_published`);
    exports the next TF Serving version to `serving/` next to
    `model_path` (`text` in, `text` out, decoding inside the graph;
    `metadata` in the version's record) and loads it. Both copies must
    answer `samples` as `generator` does.

    Args:
        generator: the `TextGenerator`.
        model_path: str, the `.keras` file to write.
        samples: list of str, the inputs the copies are checked on.
        metadata: dict, JSON-ready, recorded with the version.
        key_metrics: list of str, the metrics to compare with the latest
            published version.

    Returns:
        A tuple `(outputs, export_dir)`: the generator's answers to
        `samples` (bytes) and the exported version's folder.

    Raises:
        RuntimeError: a copy answers differently.
    """
    outputs = generator(tf.constant(samples)).numpy().tolist()
    keras.saving.save_model(generator, model_path)
    reloaded = keras.saving.load_model(model_path)
    again = reloaded(tf.constant(samples)).numpy().tolist()
    if again != outputs:
        raise RuntimeError(f"reloaded model differs: {again} != {outputs}")
    # TF Serving serves the highest version: first say how this one
    # compares with the one it replaces.
    serving_dir = os.path.join(os.path.dirname(model_path), "serving")
    compare_with_published(serving_dir, metadata, key_metrics)
    export_dir = export_text_generator(
        generator,
        serving_dir,
        metadata={**metadata, "model_path": os.path.abspath(model_path)},
    )
    # Keep the loaded object alive while calling it: its variables live there.
    exported = tf.saved_model.load(export_dir)
    answer = exported.signatures["serving_default"](text=tf.constant(samples))
    if answer["text"].numpy().tolist() != outputs:
        raise RuntimeError("the exported model answers differently")
    print(f"saved {model_path}, exported {export_dir}")
    return outputs, export_dir


def train_seq2seq(
    data_dir,
    output_dir,
    evaluate,
    options=None,
    *,
    callbacks=(),
    config=None,
    **overrides,
):
    """Train, decode, score, save and export an encoder-decoder Transformer.

    The driver of the steps above. First it looks at `output_dir`
    (`prepare_output_dir`): a finished run (its `metrics.json`) is reported
    and its metrics returned, with no training and no export; an
    interrupted run (`backup/`) resumes with its saved vocabularies; any
    other used folder is refused unless `overwrite`, which trains a fresh
    run (new vocabularies too) and publishes the next version. Then
    `read_seq2seq_data`, `build_seq2seq` (under the strategy's scope),
    `fit_seq2seq`, `make_text_generator`, `evaluate_seq2seq`,
    `plot_cross_attention` (`attention.png`, the first test source) and
    `export_seq2seq` (`<name>.keras` and the next `serving/<n>/`, the
    scores, steps, data folder and row counts in the version's record),
    each printing a line or two; `metrics.json` is written last (it marks
    the run finished).

    Call it before any other TensorFlow work when the strategy is
    `"multiworker"`.

    Args:
        data_dir: str, the folder of the split files.
        output_dir: str, where everything is written (created); under
            `"multiworker"` only the chief writes there, the other workers
            write to `worker_output_dir`'s sub-folders.
        evaluate: callable `(sources, hypotheses, references)` (lists of
            str, the decoded test rows) returning a dict of JSON-ready
            scores, which open the metrics.
        options: `Seq2SeqOptions` or `None` (its defaults). Defaults to
            `None`.
        callbacks: more Keras callbacks for `fit`. Defaults to `()`.
        config: dict or `None`, recorded as the metrics' `config` (e.g. the
            command-line flags). Defaults to `None`: `data_dir`,
            `output_dir` and the options.
        **overrides: `Seq2SeqOptions` fields that replace those of
            `options` (e.g. `epochs=3`), so the flags of
            `add_seq2seq_arguments` and `add_training_arguments` can be
            passed as they are (`**vars(args)`).

    Returns:
        The metrics, also written to `<output_dir>/metrics.json` (or, for a
        finished run, read from it): the `evaluate` scores, `key_metrics`
        (the names of its numeric scores), then those of `fit_resumable`,
        `decode_seconds`, `steps_per_epoch`, `train_rows`, `eval_rows`,
        `ended_fraction` (decoded rows that emitted the end token),
        `source_vocabulary_size`, `target_vocabulary_size`,
        `num_parameters`, `decoding`, `samples` with `sample_outputs`,
        `hypotheses` (the first 20), `export_dir`, `attention_png`,
        `model_path` and `config`.

    Raises:
        TypeError: `evaluate` is not callable, or an override names no
            `Seq2SeqOptions` field.
        ValueError: an option is invalid (before any data is read).

    Example:

    >>> import os
    >>> import tempfile
    >>> from keras_selfattn.recipes import train_seq2seq
    >>> data = tempfile.mkdtemp()
    >>> rows = "source\\ttarget\\n" + "a b\\tx y\\nb a\\ty x\\n" * 4
    >>> for split in ("train", "validation", "test"):
    ...     with open(os.path.join(data, f"{split}.tsv"), "w") as f:
    ...         _ = f.write(rows)
    >>> def exact_match(sources, hypotheses, references):
    ...     hits = [h == r for h, r in zip(hypotheses, references)]
    ...     return {"exact_match": sum(hits) / len(hits)}
    >>> metrics = train_seq2seq(
    ...     data, tempfile.mkdtemp(), exact_match, name="toy",
    ...     vocabulary_size=12, source_length=4, target_length=4,
    ...     embed_dim=8, num_heads=2, ff_dim=8, num_encoder_layers=1,
    ...     num_decoder_layers=1, epochs=1, batch_size=4, verbose=0)
    train: 8 pairs
    ...
    >>> metrics["steps"], metrics["eval_rows"], metrics["key_metrics"]
    (2, 8, ['exact_match'])
    >>> os.path.basename(metrics["model_path"]), len(metrics["hypotheses"])
    ('toy.keras', 8)
    >>> again = train_seq2seq(data, os.path.dirname(metrics["model_path"]),
    ...                       exact_match, name="toy")
    The run in ... is finished: exact_match ..., steps 2; exported to
    .../serving/1. Nothing trained or published; pass --overwrite to train
    again (it publishes the next serving version).
    >>> again == metrics
    True
    """
    if options is None:
        options = Seq2SeqOptions()
    # Every option is checked here, before any data is read.
    options = dataclasses.replace(options, **overrides)
    if not callable(evaluate):
        raise _validation.invalid(
            "evaluate", "a callable", evaluate, error=TypeError
        )
    run = start_run(data_dir, output_dir, options, config)
    if run.finished_metrics is not None:
        return run.finished_metrics
    output_dir, strategy, config = run.output_dir, run.strategy, run.config

    # Only a resumed run reuses the saved vocabularies: its checkpoint
    # needs the same ids; a fresh run learns them from its data.
    data = read_seq2seq_data(
        data_dir, output_dir, options, reuse_vocabulary=run.state == "resume"
    )
    model = build_seq2seq(data, options, strategy)
    _, record = fit_seq2seq(model, data, output_dir, options, callbacks)
    generator = make_text_generator(model, data, options)
    evaluation = evaluate_seq2seq(generator, data, evaluate, options)
    scores, sources = evaluation["scores"], evaluation["sources"]
    attention_png = plot_cross_attention(
        generator,
        sources[0] if sources else "",
        os.path.join(output_dir, "attention.png"),
        max_source_tokens=options.attention_source_tokens,
    )
    # The scores an operator compares versions on: the numbers.
    key_metrics = [
        key
        for key, value in scores.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool)
    ]
    train_rows = len(data.splits["train"][0])
    samples = list(sources[:3]) + [""]
    model_path = os.path.join(output_dir, f"{options.name}.keras")
    outputs, export_dir = export_seq2seq(
        generator,
        model_path,
        samples,
        {
            **scores,
            "steps": record["steps"],
            "epochs": record["epochs"],
            "train_rows": train_rows,
            "eval_rows": len(sources),
            "decoding": options.decoding,
            "data_dir": os.path.abspath(os.fspath(data_dir)),
        },
        key_metrics,
    )
    metrics = {
        **scores,
        "key_metrics": key_metrics,
        **record,
        "decode_seconds": round(evaluation["decode_seconds"], 1),
        "train_rows": train_rows,
        "eval_rows": len(sources),
        "ended_fraction": evaluation["ended_fraction"],
        "source_vocabulary_size": data.source_tokenizer.vocabulary_size,
        "target_vocabulary_size": data.target_tokenizer.vocabulary_size,
        "num_parameters": int(model.count_params()),
        "decoding": options.decoding,
        "samples": samples,
        "export_dir": export_dir,
        "sample_outputs": [o.decode("utf-8") for o in outputs],
        "hypotheses": evaluation["hypotheses"][:20],
        "attention_png": attention_png,
        "model_path": model_path,
        "config": config,
    }
    with open(os.path.join(output_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
    return metrics


def _vocabulary(path, texts, vocabulary_size, lower_case, reuse):
    """Learn a WordPiece vocabulary and save it to `path`, or, with `reuse`,
    read the one saved there."""
    if reuse and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    vocabulary = learn_wordpiece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts),
        vocabulary_size=vocabulary_size,
        lower_case=lower_case,
    )
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token in vocabulary)
    return vocabulary
