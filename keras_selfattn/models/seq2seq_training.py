"""Text pairs in; a trained, scored, saved and exported `TextGenerator` out.

`train_seq2seq` is the pipeline of `examples/translation.py` and
`examples/summarization.py`: WordPiece vocabularies learned from the
training split, a `Seq2SeqTransformer` trained with teacher forcing and
checkpoints that survive an interruption, cached greedy or beam decoding of
the test split scored by a metric function of the caller's, a
cross-attention plot, and an end-to-end `TextGenerator` (raw strings in,
strings out) saved as `.keras` and exported for TF Serving, with its test
scores in the version's record. Re-running it on a finished run reports that
run instead of training (`training.prepare_output_dir`).

Needs TensorFlow and tensorflow-text (TensorFlow is imported with this
module, which `keras_selfattn.models` loads on first access to
`train_seq2seq` or `add_seq2seq_arguments`).
"""

import json
import math
import numbers
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_selfattn import training
from keras_selfattn.export.saved_model import export_text_generator
from keras_selfattn.layers import _validation
from keras_selfattn.models.seq2seq import Seq2SeqTransformer
from keras_selfattn.models.text_generator import TextGenerator
from keras_selfattn.models.text_generator import cross_attention_scores
from keras_selfattn.models.text_generator import make_seq2seq_dataset
from keras_selfattn.plotting import plot_attention
from keras_selfattn.text.files import find_split
from keras_selfattn.text.files import read_columns
from keras_selfattn.text.wordpiece import WordPieceTokenizer
from keras_selfattn.text.wordpiece import learn_wordpiece_vocabulary

SPLITS = ("train", "validation", "test")


def train_seq2seq(
    data_dir,
    output_dir,
    evaluate,
    name="generator",
    source_column="source",
    target_column="target",
    max_train_rows=None,
    max_validation_rows=None,
    max_eval_rows=None,
    vocabulary_size=8000,
    shared_vocabulary=False,
    source_lower_case=True,
    target_lower_case=True,
    source_length=32,
    target_length=32,
    embed_dim=256,
    num_heads=8,
    ff_dim=1024,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dropout=0.1,
    copy_attention=False,
    epochs=10,
    max_steps=None,
    time_budget_minutes=None,
    batch_size=64,
    learning_rate=5e-4,
    lr_schedule="constant",
    warmup_steps=0,
    seed=42,
    strategy="default",
    verbose=1,
    decoding="greedy",
    beam_width=4,
    length_penalty=0.6,
    no_repeat_ngram_size=0,
    attention_source_tokens=None,
    callbacks=(),
    config=None,
    overwrite=False,
):
    """Train, decode, score, save and export an encoder-decoder Transformer.

    First it looks at `output_dir` (`training.prepare_output_dir`): a
    finished run (its `metrics.json`) is reported and its metrics returned,
    with no training and no export; an interrupted run (`backup/`)
    resumes; any other used folder is refused unless `overwrite`, which
    trains a fresh run (new vocabularies too) and publishes the next
    version. Then the steps, each printing a line or two:

    1. Read `train`, `validation` and `test` files (`.tsv(.gz)` or
       `.jsonl(.gz)`) from `data_dir`: one source and one target column.
    2. Learn WordPiece vocabularies from the training split (or reuse the
       ones saved in `output_dir` by an interrupted run: its checkpoint
       needs the same ids). The target tokenizer adds `[START]` and
       `[END]`; its length is `target_length + 1`, for the shift of teacher
       forcing.
    3. Build and compile a `Seq2SeqTransformer` under the `strategy`'s
       scope: Adam (`beta_2=0.98`, global norm clipping at 1) with
       `training.learning_rate_schedule`, a cross-entropy that ignores the
       padding id 0, no XLA (batches have different lengths).
    4. Train with `training.fit_resumable`: re-running the same call after
       a crash continues with the next epoch; TensorBoard logs go to
       `<output_dir>/logs`.
    5. Decode the test split (its first `max_eval_rows` rows) with the
       end-to-end `TextGenerator`, traced once with a string signature, and
       score it: `evaluate(sources, hypotheses, references)` returns the
       scores (and may print them).
    6. Plot the last decoder block's cross-attention for the first test
       source (`attention.png`), save the generator as `<name>.keras`,
       reload it, print how its numeric scores compare with the latest
       published version (`training.compare_with_published`), export it
       for TF Serving to the next `<output_dir>/serving/<n>/` (`text` in,
       `text` out; the scores, steps, data folder and row counts in its
       record, `assets.extra/metadata.json`) and check that both answer as
       the original.
    7. Write `metrics.json` (last: it marks the run finished).

    Call it before any other TensorFlow work when `strategy` is
    `"multiworker"`.

    Args:
        data_dir: str, the folder of the split files.
        output_dir: str, where everything is written (created); under
            `"multiworker"` only the chief writes there, the other workers
            write to `training.worker_output_dir`'s sub-folders.
        evaluate: callable `(sources, hypotheses, references)` (lists of
            str, the decoded test rows) returning a dict of JSON-ready
            scores, which open the metrics.
        name: str, the generator's layer name and the `.keras` file's
            stem. Defaults to `"generator"`.
        source_column: str, the source column (TSV header or JSON key).
            Defaults to `"source"`.
        target_column: str, the target column. Defaults to `"target"`.
        max_train_rows: int or `None`, read at most this many training
            rows. Defaults to `None` (all).
        max_validation_rows: int or `None`, likewise for validation.
            Defaults to `None`.
        max_eval_rows: int or `None`, decode and score only the first rows
            of the test split. Defaults to `None`.
        vocabulary_size: int, the most WordPiece tokens per vocabulary.
            Defaults to `8000`.
        shared_vocabulary: bool, one vocabulary (and embedding table) for
            sources and targets, cased as `target_lower_case` says.
            Defaults to `False`.
        source_lower_case: bool, lower-case the sources (separate
            vocabularies only). Defaults to `True`.
        target_lower_case: bool, lower-case the targets, and so the
            outputs. Defaults to `True`.
        source_length: int, the most source tokens (longer sources are
            truncated, their beginning kept). Defaults to `32`.
        target_length: int, the most target tokens, end token included.
            Defaults to `32`.
        embed_dim: int, as in `Seq2SeqTransformer`. Defaults to `256`.
        num_heads: int, as in `Seq2SeqTransformer`. Defaults to `8`.
        ff_dim: int, as in `Seq2SeqTransformer`. Defaults to `1024`.
        num_encoder_layers: int, as in `Seq2SeqTransformer`. Defaults to
            `2`.
        num_decoder_layers: int, as in `Seq2SeqTransformer`. Defaults to
            `2`.
        dropout: float, as in `Seq2SeqTransformer`. Defaults to `0.1`.
        copy_attention: bool, a pointer-generator output that can copy
            source tokens (needs `shared_vocabulary`). Defaults to `False`.
        epochs: int, as in `training.fit_resumable`. Defaults to `10`.
        max_steps: int or `None`, as in `training.fit_resumable`. Defaults
            to `None`.
        time_budget_minutes: float or `None`, as in
            `training.fit_resumable`. Defaults to `None`.
        batch_size: int, for training and decoding. Defaults to `64`.
        learning_rate: float, as in `training.learning_rate_schedule`.
            Defaults to `5e-4`.
        lr_schedule: `"constant"` or `"cosine"` (decaying to 0 at the end
            of the last epoch). Defaults to `"constant"`.
        warmup_steps: int, the cosine schedule's linear warm-up. Defaults
            to `0`.
        seed: int, seeds Keras and the shuffle. Defaults to `42`.
        strategy: str, as in `training.make_strategy`. Defaults to
            `"default"`.
        verbose: 0, 1 or 2, `fit`'s verbosity. Defaults to `1`.
        decoding: `"greedy"` or `"beam"`. Defaults to `"greedy"`.
        beam_width: int, as in `TextGenerator`. Defaults to `4`.
        length_penalty: float, as in `TextGenerator`. Defaults to `0.6`.
        no_repeat_ngram_size: int, as in `TextGenerator`. Defaults to `0`.
        attention_source_tokens: int or `None`, plot only the first source
            tokens (legible labels for long sources). Defaults to `None`.
        callbacks: more Keras callbacks for `fit`. Defaults to `()`.
        config: dict or `None`, recorded as the metrics' `config` (e.g. the
            command-line flags). Defaults to `None`: the arguments above
            except `evaluate` and `callbacks`.
        overwrite: bool, train a fresh run in an `output_dir` that holds
            one (finished, interrupted or failed), as in
            `training.prepare_output_dir`. Defaults to `False`.

    Returns:
        The metrics, also written to `<output_dir>/metrics.json` (or, for a
        finished run, read from it): the `evaluate` scores, `key_metrics`
        (the names of its numeric scores), then those of
        `training.fit_resumable`,
        `decode_seconds`, `steps_per_epoch`, `train_rows`, `eval_rows`,
        `ended_fraction` (decoded rows that emitted the end token),
        `source_vocabulary_size`, `target_vocabulary_size`,
        `num_parameters`, `decoding`, `samples` with `sample_outputs`,
        `hypotheses` (the first 20), `export_dir`, `attention_png`,
        `model_path` and `config`.

    Example:

    >>> import os
    >>> import tempfile
    >>> from keras_selfattn.models import train_seq2seq
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
    >>> 0.0 <= metrics["exact_match"] <= 1.0, metrics["steps"]
    (True, 2)
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
    # Every argument so far, for `metrics.json` (before any other name).
    options = dict(locals())
    if config is None:
        config = {
            k: v
            for k, v in options.items()
            if k not in ("evaluate", "callbacks", "config")
        }
    if not callable(evaluate):
        raise _validation.invalid(
            "evaluate", "a callable", evaluate, error=TypeError
        )
    if not isinstance(name, str) or not name:
        raise _validation.invalid("name", "a non-empty string", name)
    # Checked now, not after hours of training.
    _validation.one_of("decoding", decoding, ("greedy", "beam"))
    _validation.positive_int("beam_width", beam_width)
    _validation.non_negative_float("length_penalty", length_penalty)
    _validation.non_negative_int("no_repeat_ngram_size", no_repeat_ngram_size)
    _validation.positive_int("max_eval_rows", max_eval_rows, allow_none=True)
    _validation.positive_int(
        "attention_source_tokens", attention_source_tokens, allow_none=True
    )
    _validation.positive_int("batch_size", batch_size)
    _validation.positive_int("epochs", epochs)
    _validation.positive_int("max_steps", max_steps, allow_none=True)
    if time_budget_minutes is not None:
        _validation.non_negative_float(
            "time_budget_minutes", time_budget_minutes
        )
    _validation.positive_float("learning_rate", learning_rate, finite=True)
    _validation.one_of("lr_schedule", lr_schedule, training.SCHEDULES)
    _validation.non_negative_int("warmup_steps", warmup_steps)
    _validation.one_of("strategy", strategy, training.STRATEGIES)
    _validation.boolean("overwrite", overwrite)
    if copy_attention and not shared_vocabulary:
        # Copied source ids must index the target vocabulary: with two
        # vocabularies of equal size this would train silently on nonsense.
        raise _validation.invalid(
            "copy_attention",
            "False unless shared_vocabulary=True (copying needs one "
            "vocabulary for source and target)",
            copy_attention,
        )
    # Before any other TensorFlow work: multi-worker set-up must come first.
    distribution = training.make_strategy(strategy)
    # A finished run is reported, not trained nor published again.
    run = training.prepare_output_dir(output_dir, overwrite, distribution)
    if run == "finished":
        return training.report_finished_run(output_dir)
    # Only the chief writes to `output_dir` (other workers: a sub-folder).
    output_dir = training.worker_output_dir(output_dir, distribution)
    keras.utils.set_random_seed(seed)
    splits = _read_splits(
        data_dir,
        source_column,
        target_column,
        {"train": max_train_rows, "validation": max_validation_rows},
    )
    for split, (sources, _) in splits.items():
        print(f"{split}: {len(sources)} pairs")
    train_sources, train_targets = splits["train"]
    os.makedirs(output_dir, exist_ok=True)

    # WordPiece vocabularies and tokenizers inside the graph. Only a resumed
    # run reuses the saved ones: a fresh run learns them from its data.
    reuse = run == "resume"
    if shared_vocabulary:
        source_vocabulary = target_vocabulary = _vocabulary(
            os.path.join(output_dir, "vocabulary.txt"),
            train_sources + train_targets,
            vocabulary_size,
            lower_case=target_lower_case,
            reuse=reuse,
        )
        source_lower_case = target_lower_case
    else:
        source_vocabulary = _vocabulary(
            os.path.join(output_dir, "source_vocabulary.txt"),
            train_sources,
            vocabulary_size,
            lower_case=source_lower_case,
            reuse=reuse,
        )
        target_vocabulary = _vocabulary(
            os.path.join(output_dir, "target_vocabulary.txt"),
            train_targets,
            vocabulary_size,
            lower_case=target_lower_case,
            reuse=reuse,
        )
    source_tokenizer = WordPieceTokenizer(
        source_vocabulary,
        sequence_length=source_length,
        lower_case=source_lower_case,
        name="source_tokenizer",
    )
    # One token longer than the decoder: inputs and labels are shifted.
    target_tokenizer = WordPieceTokenizer(
        target_vocabulary,
        sequence_length=target_length + 1,
        lower_case=target_lower_case,
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
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
        )

    # The encoder-decoder Transformer: token id 0 is padding, so the
    # encoder skips padded sources, the decoder is causal and its
    # cross-attention skips source padding; the loss skips target padding.
    steps_per_epoch = math.ceil(len(train_sources) / batch_size)
    with distribution.scope():
        seq2seq = Seq2SeqTransformer(
            source_vocabulary_size=len(source_vocabulary),
            target_vocabulary_size=len(target_vocabulary),
            source_length=source_length,
            target_length=target_length,
            embed_dim=embed_dim,
            num_heads=num_heads,
            ff_dim=ff_dim,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            dropout=dropout,
            share_embeddings=shared_vocabulary,
            copy_attention=copy_attention,
            name="seq2seq",
        )
        seq2seq.build()
        seq2seq.compile(
            optimizer=keras.optimizers.Adam(
                training.learning_rate_schedule(
                    learning_rate,
                    lr_schedule,
                    total_steps=epochs * steps_per_epoch,
                    warmup_steps=warmup_steps,
                ),
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

    history, record = training.fit_resumable(
        seq2seq,
        dataset("train", shuffle=True),
        output_dir,
        validation_data=dataset("validation"),
        epochs=epochs,
        max_steps=max_steps,
        time_budget_minutes=time_budget_minutes,
        callbacks=callbacks,
        verbose=verbose,
    )
    print(f"trained {record['steps']} steps in {record['train_seconds']:.0f} s")

    # An uncompiled copy: the `.keras` file then holds the weights only,
    # not the optimizer's state (three times the size with Adam).
    inference_model = Seq2SeqTransformer.from_config(seq2seq.get_config())
    inference_model.build()
    inference_model.set_weights(seq2seq.get_weights())
    generator = TextGenerator(
        source_tokenizer,
        target_tokenizer,
        inference_model,
        max_length=target_length,
        method=decoding,
        beam_width=beam_width,
        length_penalty=length_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        name=name,
    )
    test_sources, test_targets = splits["test"]
    if max_eval_rows is not None:
        test_sources = test_sources[:max_eval_rows]
        test_targets = test_targets[:max_eval_rows]
    start = time.time()
    hypotheses, ended = _decode(generator, test_sources, batch_size)
    decode_seconds = time.time() - start
    scores = evaluate(test_sources, hypotheses, test_targets)
    if not isinstance(scores, dict):
        raise _validation.invalid(
            "evaluate", "a callable returning a dict", scores, error=TypeError
        )

    attention_png = _plot_cross_attention(
        generator,
        test_sources[0] if test_sources else "",
        os.path.join(output_dir, "attention.png"),
        max_source_tokens=attention_source_tokens,
    )
    samples = list(test_sources[:3]) + [""]
    # The scores an operator compares versions on: the numbers.
    key_metrics = [
        key
        for key, value in scores.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool)
    ]
    metadata = {
        **scores,
        "steps": record["steps"],
        "epochs": record["epochs"],
        "train_rows": len(train_sources),
        "eval_rows": len(test_sources),
        "decoding": decoding,
        "data_dir": os.path.abspath(os.fspath(data_dir)),
    }
    outputs, model_path, export_dir = _save_and_export(
        generator,
        samples,
        os.path.join(output_dir, f"{name}.keras"),
        metadata,
        key_metrics,
    )

    metrics = {
        **scores,
        "key_metrics": key_metrics,
        **record,
        "decode_seconds": round(decode_seconds, 1),
        "steps_per_epoch": steps_per_epoch,
        "train_rows": len(train_sources),
        "eval_rows": len(test_sources),
        "ended_fraction": ended / max(len(test_sources), 1),
        "source_vocabulary_size": len(source_vocabulary),
        "target_vocabulary_size": len(target_vocabulary),
        "num_parameters": int(seq2seq.count_params()),
        "decoding": decoding,
        "samples": samples,
        "export_dir": export_dir,
        "sample_outputs": [o.decode("utf-8") for o in outputs],
        "hypotheses": hypotheses[:20],
        "attention_png": attention_png,
        "model_path": model_path,
        "config": config,
    }
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
    return metrics


def _read_splits(data_dir, source_column, target_column, limits):
    """`{split: (sources, targets)}`, at most `limits[split]` rows each."""
    columns = [source_column, target_column]
    splits = {}
    for split in SPLITS:
        rows = read_columns(
            find_split(data_dir, split), columns, limit=limits.get(split)
        )
        splits[split] = (rows[source_column], rows[target_column])
    return splits


def _vocabulary(path, texts, vocabulary_size, lower_case, reuse):
    """Learn a WordPiece vocabulary and save it to `path`, or, with `reuse`,
    read the one saved there (a resumed run must keep the ids its
    checkpoint was trained with)."""
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


def _plot_cross_attention(generator, text, path, max_source_tokens=None):
    """Plot the last decoder block's cross-attention for one input (its
    first `max_source_tokens` source tokens, so the labels stay legible).

    The generated tokens are the decoder's input (teacher forcing on its
    own output): row `t` is where it looked when choosing token `t + 1`.
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


def _save_and_export(generator, samples, model_path, metadata, key_metrics):
    """Save, reload and export `generator` (with `metadata` in the
    version's record, after a comparison of `key_metrics` with the latest
    published version); both copies must answer `samples` as it does.
    Returns its answers, the `.keras` path and the export folder."""
    outputs = generator(tf.constant(samples)).numpy().tolist()
    keras.saving.save_model(generator, model_path)
    reloaded = keras.saving.load_model(model_path)
    again = reloaded(tf.constant(samples)).numpy().tolist()
    if again != outputs:
        raise RuntimeError(f"reloaded model differs: {again} != {outputs}")
    # TF Serving layout, <output_dir>/serving/<version>/: `text` in, `text`
    # out, decoding inside the graph. TF Serving serves the highest version:
    # first say how this one compares with the one it replaces.
    serving_dir = os.path.join(os.path.dirname(model_path), "serving")
    training.compare_with_published(serving_dir, metadata, key_metrics)
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
    return outputs, model_path, export_dir


def add_seq2seq_arguments(parser, source_length, target_length):
    """Add the seq2seq examples' model and decoding flags to a parser.

    Two argument groups, named like `train_seq2seq`'s arguments. `model`:
    `--vocabulary-size`, `--shared-vocabulary`, `--source-length`,
    `--target-length`, `--embed-dim`, `--num-heads`, `--ff-dim`,
    `--num-encoder-layers`, `--num-decoder-layers`, `--dropout`,
    `--copy-attention`. `decoding`: `--decoding {greedy,beam}`,
    `--beam-width`, `--length-penalty`, `--no-repeat-ngram-size`.

    Args:
        parser: an `argparse.ArgumentParser`.
        source_length: int, the default of `--source-length`.
        target_length: int, the default of `--target-length`.

    Returns:
        The `(model, decoding)` argument groups, to add more flags to.

    Example:

    >>> import argparse
    >>> from keras_selfattn.models.seq2seq_training import (
    ...     add_seq2seq_arguments)
    >>> parser = argparse.ArgumentParser()
    >>> _ = add_seq2seq_arguments(parser, source_length=32, target_length=24)
    >>> args = parser.parse_args(["--copy-attention", "--shared-vocabulary",
    ...                           "--decoding", "beam"])
    >>> args.source_length, args.copy_attention, args.decoding
    (32, True, 'beam')
    >>> args.no_repeat_ngram_size, args.beam_width
    (0, 4)
    """
    model = parser.add_argument_group("model")
    model.add_argument("--vocabulary-size", type=int, default=8000)
    model.add_argument(
        "--shared-vocabulary",
        action="store_true",
        help="one vocabulary (and embedding table) for sources and targets",
    )
    model.add_argument("--source-length", type=int, default=source_length)
    model.add_argument("--target-length", type=int, default=target_length)
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
    decoding = parser.add_argument_group("decoding")
    decoding.add_argument(
        "--decoding", choices=("greedy", "beam"), default="greedy"
    )
    decoding.add_argument("--beam-width", type=int, default=4)
    decoding.add_argument("--length-penalty", type=float, default=0.6)
    decoding.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=0,
        help="never generate the same n-gram twice in an output (0: off)",
    )
    return model, decoding
