"""The language-model recipe: text in; a trained causal LM, its test
perplexity and sample continuations out.

The pipeline of `examples/text_generation.py`, as steps that each take the
`LanguageModelOptions` and can be called on their own:

1. `read_language_model_data`: the `train`, `validation` and `test` texts
   and a SentencePiece (or WordPiece) tokenizer learned from the training
   texts (`LanguageModelData`), whose `windows` cut the tokenized documents
   into next-token training windows.
2. `build_language_model`: a `CausalLM`, compiled by
   `compile_language_model`.
3. `fit_language_model`: training that survives an interruption
   (`fit_resumable`), on windows whose padding the loss ignores.
4. `evaluate_perplexity`: the exact perplexity of a split, over its real
   target tokens; `sample_continuations`: greedy and sampled continuations
   of prompts.
5. `publish_language_model`: the `.keras` file, checked against the model,
   and the next TF Serving version, `serving/<version>` (prompts in,
   generated text out).
6. `load_language_model_run`: a finished run's model, tokenizer and
   metrics, for a fine-tuning to start from (`LanguageModelRun`).

`train_language_model` is the driver that calls them, after looking at the
output folder (`prepare_output_dir`), and writes `metrics.json` last.

Needs TensorFlow and tensorflow-text (TensorFlow is imported with this
module, which `keras_selfattn.recipes` loads on first access to one of its
names).
"""

import dataclasses
import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from keras_selfattn.export.causal_lm import export_causal_lm
from keras_selfattn.layers import _validation
from keras_selfattn.models import samplers
from keras_selfattn.models.causal_lm import CausalLM
from keras_selfattn.models.causal_lm import next_token_batch
from keras_selfattn.models.text_generator import tidy_spacing
from keras_selfattn.recipes.args import LanguageModelOptions
from keras_selfattn.recipes.fitting import fit_resumable
from keras_selfattn.recipes.fitting import learning_rate_schedule
from keras_selfattn.recipes.runs import METRICS_FILE
from keras_selfattn.recipes.runs import compare_with_published
from keras_selfattn.recipes.runs import start_run
from keras_selfattn.text.files import find_split
from keras_selfattn.text.files import read_columns
from keras_selfattn.text.sentencepiece import SentencePieceTokenizer
from keras_selfattn.text.sentencepiece import learn_sentencepiece_model
from keras_selfattn.text.wordpiece import WordPieceTokenizer
from keras_selfattn.text.wordpiece import learn_wordpiece_vocabulary

SPLITS = ("train", "validation", "test")
# The metrics a finished run reports and a new version is compared on:
# the perplexity per token, and the bits per character, which compare
# across tokenizers too.
KEY_METRICS = ("test_perplexity", "test_bits_per_character")
# The learned tokenizer, saved for a resumed run: a WordPiece vocabulary
# or a SentencePiece model.
VOCABULARY_FILE = "vocabulary.txt"
SENTENCEPIECE_FILE = "tokenizer.model"
# Documents are tokenized this many at a time.
_TOKENIZE_BATCH = 512

__all__ = [
    "LanguageModelData",
    "LanguageModelRun",
    "build_language_model",
    "compile_language_model",
    "evaluate_perplexity",
    "fit_language_model",
    "load_language_model_run",
    "publish_language_model",
    "read_language_model_data",
    "sample_continuations",
    "train_language_model",
]


@dataclasses.dataclass(frozen=True)
class LanguageModelData:
    """The texts of each split and the tokenizer learned from them.

    What `read_language_model_data` returns and the other steps take.

    Args:
        splits: dict, `{"train": texts, "validation": ..., "test": ...}`,
            lists of str.
        tokenizer: a `SentencePieceTokenizer` or `WordPieceTokenizer`
            that adds the start and end tokens and neither pads nor
            truncates.
    """

    splits: dict
    tokenizer: keras.layers.Layer

    def token_ids(self, texts):
        """Each text's ids, start and end tokens included: a list of int32
        NumPy arrays."""
        ids = []
        for i in range(0, len(texts), _TOKENIZE_BATCH):
            ragged = self.tokenizer.tokenize_ragged(
                tf.constant(texts[i : i + _TOKENIZE_BATCH], tf.string)
            )
            values = ragged.flat_values.numpy()
            splits = ragged.row_splits.numpy()
            ids += np.split(values, splits[1:-1])
        return ids

    def windows(self, split, sequence_length, limit=None):
        """The documents of `split` cut into next-token windows.

        A document of `n` ids (start and end tokens included) gives
        `ceil((n - 1) / sequence_length)` windows of `sequence_length + 1`
        ids that overlap by one, the last padded with 0: each id but the
        first is a target exactly once (`next_token_batch`).

        Args:
            split: str, `"train"`, `"validation"` or `"test"`.
            sequence_length: int, the targets per window.
            limit: int or `None`, only the first documents. Defaults to
                `None`.

        Returns:
            int32 `(num_windows, sequence_length + 1)`.
        """
        texts = self.splits[split][:limit]
        rows = []
        for ids in self.token_ids(texts):
            for start in range(0, max(len(ids) - 1, 1), sequence_length):
                rows.append(ids[start : start + sequence_length + 1])
        windows = np.zeros((len(rows), sequence_length + 1), dtype="int32")
        for i, row in enumerate(rows):
            windows[i, : len(row)] = row
        return windows


def read_language_model_data(
    data_dir, output_dir, options, preprocess=None, reuse_vocabulary=False
):
    """Step 1: read the texts and learn the tokenizer.

    Reads `train`, `validation` and `test` files (`.tsv(.gz)` or
    `.jsonl(.gz)`) from `data_dir`, one text column, and learns the
    `options.tokenizer` from the training split (its first
    `vocabulary_rows` texts): a SentencePiece model
    (`learn_sentencepiece_model`: unigram, byte fallback, no
    normalization unless `lower_case`), saved to
    `<output_dir>/tokenizer.model`, or a WordPiece vocabulary, saved to
    `<output_dir>/vocabulary.txt`.

    Args:
        data_dir: str, the folder of the split files.
        output_dir: str, where the vocabulary is saved (created).
        options: `LanguageModelOptions`: the column, the row limits, the
            tokenizer, the vocabulary size, rows and casing.
        preprocess: callable `str -> str` or `None`, applied to every text
            first (e.g. to drop markup). Defaults to `None`.
        reuse_vocabulary: bool, read the tokenizer saved in `output_dir`
            (if there) instead of learning it: a resumed run's checkpoint
            needs the ids it was trained with. Defaults to `False`.

    Returns:
        A `LanguageModelData`.

    Raises:
        ValueError: with `reuse_vocabulary`, `output_dir` holds the other
            tokenizer's file only (the run was trained with it).
    """
    if preprocess is not None and not callable(preprocess):
        raise _validation.invalid(
            "preprocess", "a callable or None", preprocess, error=TypeError
        )
    limits = {
        "train": options.max_train_rows,
        "validation": options.max_validation_rows,
        # Only the first test rows are scored and prompt the samples.
        "test": options.max_eval_rows,
    }
    splits = {}
    for split in SPLITS:
        rows = read_columns(
            find_split(data_dir, split),
            [options.text_column],
            limit=limits.get(split),
        )
        texts = rows[options.text_column]
        if preprocess is not None:
            texts = [preprocess(text) for text in texts]
        splits[split] = texts
        print(f"{split}: {len(texts)} texts")
    os.makedirs(output_dir, exist_ok=True)
    if reuse_vocabulary:
        _check_saved_tokenizer(output_dir, options.tokenizer)
    learn_from = splits["train"][: options.vocabulary_rows]
    if options.tokenizer == "sentencepiece":
        tokenizer = _sentencepiece_tokenizer(
            learn_from, output_dir, options, reuse_vocabulary
        )
    else:
        tokenizer = _wordpiece_tokenizer(
            learn_from, output_dir, options, reuse_vocabulary
        )
    print(f"vocabulary: {tokenizer.vocabulary_size} {options.tokenizer} tokens")
    return LanguageModelData(splits=splits, tokenizer=tokenizer)


def _check_saved_tokenizer(output_dir, tokenizer):
    """A resumed run must use the tokenizer it was trained with."""
    files = {"sentencepiece": SENTENCEPIECE_FILE, "wordpiece": VOCABULARY_FILE}
    if os.path.exists(os.path.join(output_dir, files[tokenizer])):
        return
    for other, name in files.items():
        if os.path.exists(os.path.join(output_dir, name)):
            raise _validation.invalid(
                "tokenizer",
                f'"{other}", the tokenizer of the interrupted run in '
                f"{output_dir} (its {name}); or pass --overwrite to train "
                "afresh",
                tokenizer,
            )


def _run_tokenizer(kind, source, lower_case, sequence_length=None):
    """The recipe's tokenizer over a learned or saved model (`source`):
    with start and end tokens, as the documents are tokenized."""
    common = {
        "sequence_length": sequence_length,
        "add_start_token": True,
        "add_end_token": True,
        "name": "tokenizer",
    }
    if kind == "sentencepiece":
        # Case folding is compiled into a SentencePiece model.
        return SentencePieceTokenizer(source, **common)
    return WordPieceTokenizer(source, lower_case=lower_case, **common)


def _read_saved_tokenizer(path):
    """A saved tokenizer file's content: a SentencePiece model's bytes or a
    WordPiece vocabulary's tokens."""
    if path.endswith(SENTENCEPIECE_FILE):
        with open(path, "rb") as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _sentencepiece_tokenizer(texts, output_dir, options, reuse):
    path = os.path.join(output_dir, SENTENCEPIECE_FILE)
    if reuse and os.path.exists(path):
        proto = _read_saved_tokenizer(path)
    else:
        proto = learn_sentencepiece_model(
            texts,
            vocabulary_size=options.vocabulary_size,
            # Case folding has to be compiled into the model, which only
            # the NFKC normalizations allow.
            normalization="nfkc_cf" if options.lower_case else "identity",
        )
        with open(path, "wb") as f:
            f.write(proto)
    return _run_tokenizer("sentencepiece", proto, options.lower_case)


def _wordpiece_tokenizer(texts, output_dir, options, reuse):
    path = os.path.join(output_dir, VOCABULARY_FILE)
    if reuse and os.path.exists(path):
        vocabulary = _read_saved_tokenizer(path)
    else:
        vocabulary = learn_wordpiece_vocabulary(
            tf.data.Dataset.from_tensor_slices(texts),
            vocabulary_size=options.vocabulary_size,
            lower_case=options.lower_case,
        )
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(token + "\n" for token in vocabulary)
    return _run_tokenizer("wordpiece", vocabulary, options.lower_case)


def _tidy(tokenizer):
    """Whether the tokenizer's text needs `tidy_spacing`: WordPiece puts
    spaces around punctuation; SentencePiece detokenizes exactly."""
    return isinstance(tokenizer, WordPieceTokenizer)


def _dataset(windows, batch_size, shuffle=False, seed=None, repeat=False):
    """`(inputs, targets, sample_weight)` batches of `windows`: the loss
    is averaged over the real target tokens only (weight 0 on padding)."""
    ds = tf.data.Dataset.from_tensor_slices(windows)
    if shuffle:
        ds = ds.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size).map(
        next_token_batch, num_parallel_calls=tf.data.AUTOTUNE
    )
    options = tf.data.Options()
    # In-memory data: shard by element, not by file, across workers.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _steps_per_epoch(num_windows, options):
    if options.steps_per_epoch is not None:
        return options.steps_per_epoch
    return max(1, math.ceil(num_windows / options.batch_size))


def build_language_model(vocabulary_size, options, total_steps, strategy=None):
    """Step 2: a compiled `CausalLM` (rotary positions, pre-norm blocks,
    tied input and output embeddings).

    Adam with `beta_2=0.98` and global norm clipping at 1, on
    `learning_rate_schedule`; a cross-entropy on the logits, weighted by
    `next_token_batch`'s weights (0 on padding).

    Args:
        vocabulary_size: int, the tokenizer's vocabulary size.
        options: `LanguageModelOptions`, the model's sizes and the learning
            rate.
        total_steps: int, the training steps in all (the cosine schedule's
            length).
        strategy: a `tf.distribute.Strategy` whose scope holds the model,
            or `None` (the default strategy). Defaults to `None`.

    Returns:
        The compiled `CausalLM`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = CausalLM(
            vocab_size=vocabulary_size,
            num_layers=options.num_layers,
            hidden_dim=options.hidden_dim,
            num_heads=options.num_heads,
            ff_dim=options.ff_dim,
            position_embedding="rotary",
            dropout=options.dropout,
            name=options.name,
        )
        compile_language_model(model, options, total_steps)
    print(f"parameters: {model.count_params():,}")
    return model


def compile_language_model(model, options, total_steps):
    """Compile `model` for next-token training as `build_language_model`
    does: Adam with `beta_2=0.98` and global norm clipping at 1, on
    `learning_rate_schedule`, and a cross-entropy on the logits (weighted
    by `next_token_batch`'s weights, 0 on padding).

    Any model that maps token ids `(batch_size, seq_len)` to logits
    `(batch_size, seq_len, vocab_size)` can be trained this way (the
    benchmarks compile a KerasHub model with it, to compare like with
    like). Call it under the strategy's scope, as the model was built.

    Args:
        model: a `keras.Model`, token ids in, logits out.
        options: `LanguageModelOptions`: the learning rate, its schedule
            and warm-up steps.
        total_steps: int, the training steps in all (the cosine schedule's
            length).

    Returns:
        `model`, compiled.
    """
    schedule = learning_rate_schedule(
        options.learning_rate,
        options.lr_schedule,
        total_steps=total_steps,
        warmup_steps=options.warmup_steps,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(
            schedule, beta_2=0.98, global_clipnorm=1.0
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def fit_language_model(
    model, data, output_dir, options, callbacks=(), train_windows=None
):
    """Step 3: train on next-token windows, resumably.

    `fit_resumable` on the shuffled training windows (repeated, in epochs
    of `steps_per_epoch` steps), validated on the validation windows:
    re-running after a crash continues with the next epoch; TensorBoard
    logs go to `<output_dir>/logs`.

    Args:
        model: the compiled `CausalLM`.
        data: `LanguageModelData`.
        output_dir: str, the folder of `backup/` and `logs/`.
        options: `LanguageModelOptions`: epochs, steps per epoch, step cap,
            time budget, batch size, sequence length, seed, verbosity.
        callbacks: more Keras callbacks for `fit`. Defaults to `()`.
        train_windows: int array or `None`, the training windows if they
            were cut already. Defaults to `None`:
            `data.windows("train", options.sequence_length)`.

    Returns:
        `fit_resumable`'s `(history, record)`, the record with
        `steps_per_epoch` and `train_windows` added.
    """
    train = train_windows
    if train is None:
        train = data.windows("train", options.sequence_length)
    validation = data.windows("validation", options.sequence_length)
    steps_per_epoch = _steps_per_epoch(len(train), options)
    history, record = fit_resumable(
        model,
        _dataset(
            train,
            options.batch_size,
            shuffle=True,
            seed=options.seed,
            repeat=True,
        ),
        output_dir,
        validation_data=_dataset(validation, options.batch_size),
        epochs=options.epochs,
        steps_per_epoch=steps_per_epoch,
        max_steps=options.max_steps,
        time_budget_minutes=options.time_budget_minutes,
        callbacks=callbacks,
        verbose=options.verbose,
    )
    record["steps_per_epoch"] = steps_per_epoch
    record["train_windows"] = len(train)
    print(f"trained {record['steps']} steps in {record['train_seconds']:.0f} s")
    return history, record


def evaluate_perplexity(model, windows, batch_size):
    """Step 4a: the perplexity of `model` on `windows`, exactly.

    `exp(sum of the target tokens' cross-entropies / their count)` over
    every real (non-padding) target token of every window, summed in
    float64: not a mean of per-batch means, which would weigh the tokens
    of a short last batch or of padded windows more.

    Args:
        model: a `CausalLM`.
        windows: int `(num_windows, sequence_length + 1)`, e.g.
            `LanguageModelData.windows("test", ...)`.
        batch_size: int, windows per forward pass.

    Returns:
        dict: `perplexity`, `loss` (mean nats per target token) and
        `tokens` (the real target tokens counted).

    Example:

    >>> import numpy as np
    >>> from keras_selfattn.models import CausalLM
    >>> from keras_selfattn.recipes.language_model import (
    ...     evaluate_perplexity)
    >>> model = CausalLM(vocab_size=10, num_layers=1, hidden_dim=8,
    ...                  num_heads=2, ff_dim=8)
    >>> windows = np.array([[2, 5, 6, 3], [2, 7, 3, 0]])
    >>> scores = evaluate_perplexity(model, windows, batch_size=1)
    >>> scores["tokens"], 1 < scores["perplexity"] < 20
    (5, True)
    """

    @tf.function(reduce_retracing=True)
    def batch_sums(inputs, targets, weights):
        logits = model(inputs, training=False)  # (B, T, V) float32
        nll = keras.losses.sparse_categorical_crossentropy(
            targets, logits, from_logits=True
        )  # (B, T)
        return tf.reduce_sum(nll * weights), tf.reduce_sum(weights)

    total, count = 0.0, 0.0
    for inputs, targets, weights in _dataset(windows, batch_size):
        nll_sum, weight_sum = batch_sums(inputs, targets, weights)
        total += float(nll_sum)
        count += float(weight_sum)
    loss = total / count if count else float("nan")
    return {
        "perplexity": math.exp(loss) if count else float("nan"),
        "loss": loss,
        "tokens": int(count),
    }


def _prompts(data, options):
    """The prompts to continue: `options.prompts`, else the first words of
    the first test texts."""
    if options.prompts:
        return list(options.prompts)
    texts = data.splits["test"][: options.num_samples]
    return [" ".join(text.split()[: options.prompt_words]) for text in texts]


def _random_sampler(options):
    common = {"temperature": options.temperature}
    if options.sampler == "top_p":
        return samplers.TopPSampler(p=options.top_p, **common)
    if options.sampler == "top_k":
        return samplers.TopKSampler(k=options.top_k, **common)
    return samplers.RandomSampler(**common)


def sample_continuations(model, tokenizer, prompts, options):
    """Step 4b: continue each prompt greedily and with the random sampler.

    Each prompt is tokenized with the start token (and no end token),
    padded, and continued by `model.generate` (key/value cache, stop at
    the end token) with `GreedySampler` and with `options.sampler` seeded
    with `options.seed`, so a re-run draws the same text. The outputs are
    the prompt and its continuation detokenized together (sub-words join
    across the seam): exactly, with SentencePiece (the prompt is a prefix
    of the output); with WordPiece, the spaces around punctuation removed
    (`tidy_spacing`).

    Args:
        model: a `CausalLM`.
        tokenizer: the `SentencePieceTokenizer` or `WordPieceTokenizer`
            (start and end tokens).
        prompts: list of str.
        options: `LanguageModelOptions`: the sampler, `top_p`, `top_k`,
            `temperature`, `seed` and `max_new_tokens`.

    Returns:
        list of dicts `{"prompt", "greedy", <options.sampler>}`.
    """
    if not prompts:
        return []
    ids = tokenizer.tokenize_ragged(tf.constant(prompts, tf.string))
    ids = ids[:, :-1]  # drop the end token: the text goes on
    prompt_ids = ids.to_tensor(default_value=tokenizer.pad_id).numpy()
    outputs = {}
    for key, sampler in (
        ("greedy", samplers.GreedySampler()),
        (options.sampler, _random_sampler(options)),
    ):
        new_ids = keras.ops.convert_to_numpy(
            model.generate(
                prompt_ids,
                max_new_tokens=options.max_new_tokens,
                sampler=sampler,
                stop_token_ids=tokenizer.end_id,
                seed=options.seed,
            )
        )
        # Prompt padding (0) is dropped by `detokenize`, wherever it is.
        joined = np.concatenate([prompt_ids, new_ids], axis=1)
        texts = tokenizer.detokenize(joined)
        if _tidy(tokenizer):
            texts = tidy_spacing(texts)
        texts = texts.numpy()
        outputs[key] = [t.decode("utf-8") for t in texts]
    return [
        {"prompt": prompt, **{key: texts[i] for key, texts in outputs.items()}}
        for i, prompt in enumerate(prompts)
    ]


def publish_language_model(model, tokenizer, output_dir, options, metadata):
    """Step 5: save the model for inference, check the saved copy, and
    export the next TF Serving version.

    Saves `<output_dir>/<name>.keras`, an uncompiled copy of `model` (the
    weights without the optimizer's state, a third of the size with Adam),
    and reloads it: its logits must equal the model's. The tokenizer is in
    `<output_dir>/tokenizer.model` or `vocabulary.txt` (step 1). Then
    prints how `KEY_METRICS` compare with the latest published version
    (`compare_with_published`) and exports the next version,
    `<output_dir>/serving/<version>` (`export_causal_lm`: raw prompts in,
    generated text out, the tokenizer inside; `metadata` and the `.keras`
    path in the version's record). The export keeps a prompt's last
    `options.max_prompt_length` tokens, adds at most
    `options.max_new_tokens`, stops at the end token, and samples by
    default as the run's `options.sampler` does (its `temperature`, and
    its `top_p` or `top_k`, the other off; seeded with `options.seed`);
    WordPiece text gets `tidy_spacing`, SentencePiece text is exact.

    Args:
        model: the trained `CausalLM`.
        tokenizer: the run's tokenizer (`SentencePieceTokenizer` or
            `WordPieceTokenizer`, start and end tokens).
        output_dir: str, the run's folder.
        options: `LanguageModelOptions`: the name, the prompt and
            continuation lengths and the sampling defaults.
        metadata: dict, JSON-ready: this run's scores and counts, for the
            published version's record.

    Returns:
        dict: `model_path` and `export_dir` (the version's folder).

    Raises:
        RuntimeError: the reloaded model's logits differ.
    """
    inference = CausalLM.from_config(model.get_config())
    inference.set_weights(model.get_weights())
    model_path = os.path.join(output_dir, f"{options.name}.keras")
    keras.saving.save_model(inference, model_path)
    reloaded = keras.saving.load_model(model_path)
    check_ids = tokenizer.tokenize_ragged(
        tf.constant(["The film was", ""], tf.string)
    ).to_tensor()
    expected = keras.ops.convert_to_numpy(inference(check_ids))
    again = keras.ops.convert_to_numpy(reloaded(check_ids))
    if not np.allclose(again, expected, atol=1e-5):
        raise RuntimeError("the reloaded model's logits differ")
    # TF Serving serves the highest version: first say how this one
    # compares with the one it replaces.
    serving_dir = os.path.join(output_dir, "serving")
    compare_with_published(serving_dir, metadata, KEY_METRICS)
    export_dir = export_causal_lm(
        inference,
        tokenizer,
        serving_dir,
        max_prompt_length=options.max_prompt_length,
        max_new_tokens=options.max_new_tokens,
        # The run's random sampler, as the export's default request.
        temperature=options.temperature,
        top_k=options.top_k if options.sampler == "top_k" else 0,
        top_p=options.top_p if options.sampler == "top_p" else 1.0,
        seed=options.seed,
        stop_token_ids=tokenizer.end_id,
        tidy=_tidy(tokenizer),
        metadata={**metadata, "model_path": os.path.abspath(model_path)},
    )
    print(f"saved {model_path}, exported {export_dir}")
    return {"model_path": model_path, "export_dir": export_dir}


def train_language_model(
    data_dir,
    output_dir,
    options=None,
    *,
    preprocess=None,
    callbacks=(),
    config=None,
    restart_unfinished=False,
    **overrides,
):
    """Train, score, sample and save a causal language model from text.

    The driver of the steps above. First it looks at `output_dir`
    (`prepare_output_dir`): a finished run (its `metrics.json`) is reported
    and its metrics returned, with no training; an interrupted run
    (`backup/`) resumes with its saved tokenizer; any other used folder is
    refused unless `overwrite`, which trains a fresh run (new tokenizer
    too) and publishes the next serving version, or `restart_unfinished`
    (see below). Then
    `read_language_model_data`, `build_language_model` (under the
    strategy's scope), `fit_language_model`, `evaluate_perplexity` on the
    test split (its first `max_eval_rows` texts), `sample_continuations`
    and `publish_language_model` (`<name>.keras` and the next
    `serving/<version>`, the scores, steps, data folder, row counts and
    tokenizer in the version's record), each printing a line or two;
    `metrics.json` is written last (it marks the run finished).

    Call it before any other TensorFlow work when the strategy is
    `"multiworker"`.

    Args:
        data_dir: str, the folder of the split files.
        output_dir: str, where everything is written (created); under
            `"multiworker"` only the chief writes there, the other workers
            write to `worker_output_dir`'s sub-folders.
        options: `LanguageModelOptions` or `None` (its defaults). Defaults
            to `None`.
        preprocess: callable `str -> str` or `None`, applied to every text
            first. Defaults to `None`.
        callbacks: more Keras callbacks for `fit`. Defaults to `()`.
        config: dict or `None`, recorded as the metrics' `config` (e.g. the
            command-line flags). Defaults to `None`: `data_dir`,
            `output_dir` and the options.
        restart_unfinished: bool, train afresh in an `output_dir` that
            holds neither a finished nor an interrupted run, instead of
            refusing it (`prepare_output_dir`): for a folder only this
            run writes to, e.g. one nested in another run's. Defaults to
            `False`.
        **overrides: `LanguageModelOptions` fields that replace those of
            `options` (e.g. `epochs=3`), so the flags of
            `add_language_model_arguments` and `add_training_arguments` can
            be passed as they are (`**vars(args)`).

    Returns:
        The metrics, also written to `<output_dir>/metrics.json` (or, for a
        finished run, read from it): `test_perplexity`, `test_loss` (nats
        per token), `test_tokens`, `test_bits_per_character` (the summed
        loss in bits over the characters of the scored texts, each text's
        end token included: unlike the perplexity, it compares runs with
        different tokenizers), `test_characters`, `key_metrics`, then
        those of
        `fit_resumable`, `steps_per_epoch`, `train_windows`, `train_rows`,
        `eval_rows`, `vocabulary_size`, `num_parameters`, `samples` (the
        prompts and their continuations), `model_path`, `export_dir` and
        `config`.

    Raises:
        TypeError: an override names no `LanguageModelOptions` field.
        ValueError: an option is invalid (before any data is read).

    Example:

    >>> import os
    >>> import tempfile
    >>> from keras_selfattn.recipes import train_language_model
    >>> data = tempfile.mkdtemp()
    >>> rows = "text\\n" + "the cat sat .\\nthe dog ran .\\n" * 8
    >>> for split in ("train", "validation", "test"):
    ...     with open(os.path.join(data, f"{split}.tsv"), "w") as f:
    ...         _ = f.write(rows)
    >>> metrics = train_language_model(
    ...     data, tempfile.mkdtemp(), name="toy", tokenizer="wordpiece",
    ...     vocabulary_size=30,
    ...     sequence_length=8, hidden_dim=8, num_heads=2, ff_dim=8,
    ...     num_layers=1, epochs=1, batch_size=4, max_new_tokens=4,
    ...     num_samples=1, verbose=0)
    train: 16 texts
    ...
    >>> metrics["eval_rows"], metrics["key_metrics"]
    (16, ['test_perplexity', 'test_bits_per_character'])
    >>> metrics["steps"] == metrics["steps_per_epoch"]  # one epoch
    True
    >>> metrics["test_tokens"] >= 16 * 5  # 4 words and [END] per text
    True
    >>> os.path.basename(metrics["model_path"]), metrics["samples"][0]["prompt"]
    ('toy.keras', 'the cat sat .')
    >>> metrics["export_dir"].endswith(os.path.join("serving", "1"))
    True
    >>> metrics["test_characters"]  # "the cat sat ." and "the dog ran ."
    208
    """
    if options is None:
        options = LanguageModelOptions()
    # Every option is checked here, before any data is read.
    options = dataclasses.replace(options, **overrides)
    run = start_run(
        data_dir,
        output_dir,
        options,
        config,
        restart_unfinished=restart_unfinished,
    )
    if run.finished_metrics is not None:
        return run.finished_metrics
    output_dir, strategy, config = run.output_dir, run.strategy, run.config

    # Only a resumed run reuses the saved tokenizer: its checkpoint needs
    # the same ids; a fresh run learns it from its data.
    data = read_language_model_data(
        data_dir,
        output_dir,
        options,
        preprocess=preprocess,
        reuse_vocabulary=run.state == "resume",
    )
    train = data.windows("train", options.sequence_length)
    model = build_language_model(
        data.tokenizer.vocabulary_size,
        options,
        # The cosine schedule's length: all the epochs' steps.
        total_steps=options.epochs * _steps_per_epoch(len(train), options),
        strategy=strategy,
    )
    _, record = fit_language_model(
        model, data, output_dir, options, callbacks, train_windows=train
    )

    test = data.windows("test", options.sequence_length, options.max_eval_rows)
    scored = data.splits["test"][: options.max_eval_rows]
    eval_rows = len(scored)
    scores = evaluate_perplexity(model, test, options.batch_size)
    # Per character, the scores of different tokenizers compare: the
    # summed loss (nats) in bits, over the scored texts' characters.
    characters = sum(len(text) for text in scored)
    bits_per_character = (
        scores["loss"] * scores["tokens"] / math.log(2) / characters
        if characters
        else float("nan")
    )
    print(
        f"test perplexity: {scores['perplexity']:.2f} ({scores['tokens']:,} "
        f"tokens of {eval_rows} texts; {record['steps']} steps), "
        f"{bits_per_character:.3f} bits per character"
    )
    samples = sample_continuations(
        model, data.tokenizer, _prompts(data, options), options
    )
    for sample in samples:
        print(f"  prompt: {sample['prompt']}")
        print(f"  greedy: {sample['greedy']}")
        print(f"  {options.sampler}: {sample[options.sampler]}")
    metrics = {
        "test_perplexity": scores["perplexity"],
        "test_loss": scores["loss"],
        "test_tokens": scores["tokens"],
        "test_bits_per_character": bits_per_character,
        "test_characters": characters,
        "key_metrics": list(KEY_METRICS),
        **record,
        "train_rows": len(data.splits["train"]),
        "eval_rows": eval_rows,
        "vocabulary_size": data.tokenizer.vocabulary_size,
        "num_parameters": int(model.count_params()),
    }
    published = publish_language_model(
        model,
        data.tokenizer,
        output_dir,
        options,
        metadata={
            key: metrics[key]
            for key in (
                *KEY_METRICS,
                "test_loss",
                "steps",
                "epochs",
                "train_rows",
                "eval_rows",
            )
        }
        | {
            "data_dir": os.path.abspath(os.fspath(data_dir)),
            "tokenizer": options.tokenizer,
        },
    )
    metrics = {**metrics, "samples": samples, **published, "config": config}
    with open(os.path.join(output_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
    return metrics


@dataclasses.dataclass(frozen=True)
class LanguageModelRun:
    """A finished language-model run, loaded (`load_language_model_run`).

    Args:
        model: the run's trained `CausalLM`.
        tokenizer: its tokenizer (`SentencePieceTokenizer` or
            `WordPieceTokenizer`), with the start and end tokens the model
            was trained with.
        metrics: dict, the run's `metrics.json`.
        run_dir: str, the run's folder.
    """

    model: CausalLM
    tokenizer: keras.layers.Layer
    metrics: dict
    run_dir: str


def load_language_model_run(run_dir, sequence_length=None, argument="run_dir"):
    """Load a finished `train_language_model` run: model, tokenizer,
    metrics.

    What a fine-tuning starts from (the classification example's
    `--from-lm`): the `.keras` model beside the run's `metrics.json` (the
    folder may have moved since it was trained) and a tokenizer over the
    run's saved SentencePiece model (`tokenizer.model`) or WordPiece
    vocabulary (`vocabulary.txt`, lower-cased as the run's `config` says),
    the one its `config` names (a folder trained again with the other
    tokenizer holds both files),
    adding the start and end tokens as the run tokenized its documents.
    Call it in a strategy's scope for the model's variables to be that
    strategy's.

    Args:
        run_dir: str, the run's `output_dir`.
        sequence_length: int or `None`, the tokenizer's output length
            (padded and truncated), e.g. a classifier's input length.
            Defaults to `None`: neither pads nor truncates.
        argument: str, the name the errors give `run_dir`, e.g. the
            command-line flag it came from. Defaults to `"run_dir"`.

    Returns:
        A `LanguageModelRun`.

    Raises:
        TypeError: `run_dir` is not a path.
        FileNotFoundError: `run_dir` is not a finished run's folder: no
            such folder, no `metrics.json` (an unfinished run), no model
            or no tokenizer file; the message says which.
        ValueError: the folder's model is no `CausalLM`, its tokenizer
            and model disagree on the vocabulary size, or
            `sequence_length` is not a positive integer or is longer than
            the model's `max_length` (learned positions).

    Example:

    >>> import os
    >>> import tempfile
    >>> from keras_selfattn.recipes import load_language_model_run
    >>> from keras_selfattn.recipes import train_language_model
    >>> data = tempfile.mkdtemp()
    >>> rows = "text\\n" + "the cat sat .\\nthe dog ran .\\n" * 8
    >>> for split in ("train", "validation", "test"):
    ...     with open(os.path.join(data, f"{split}.tsv"), "w") as f:
    ...         _ = f.write(rows)
    >>> run_dir = tempfile.mkdtemp()
    >>> _ = train_language_model(
    ...     data, run_dir, tokenizer="wordpiece", vocabulary_size=30,
    ...     sequence_length=8, hidden_dim=8, num_heads=2, ff_dim=8,
    ...     num_layers=1, epochs=1, batch_size=4, max_new_tokens=4,
    ...     num_samples=1, verbose=0)
    train: 16 texts
    ...
    >>> run = load_language_model_run(run_dir, sequence_length=6)
    >>> run.model.hidden_dim, run.metrics["steps"] > 0
    (8, True)
    >>> run.tokenizer.vocabulary_size == run.model.vocab_size
    True
    >>> run.tokenizer(["the cat"]).numpy().tolist()[0][0] > 0  # [START]
    True
    """
    if not isinstance(run_dir, (str, os.PathLike)):
        raise _validation.invalid(argument, "a path", run_dir, TypeError)
    run_dir = os.fspath(run_dir)
    _validation.positive_int("sequence_length", sequence_length, True)

    def not_a_run(why, error=FileNotFoundError):
        return error(
            f"Received an invalid value for argument `{argument}`, expected "
            "the folder "
            "of a finished language-model run (train_language_model, "
            "examples/text_generation.py: its metrics.json, <name>.keras and "
            f"{SENTENCEPIECE_FILE} or {VOCABULARY_FILE}); {why}. Received: "
            f"{argument}={run_dir!r}"
        )

    if not os.path.isdir(run_dir):
        raise not_a_run("there is no such folder")
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(metrics_path):
        raise not_a_run(
            f"it holds no {METRICS_FILE}: the run did not finish (re-run its "
            "command to finish it)"
        )
    with open(metrics_path, encoding="utf-8") as f:
        metrics = json.load(f)
    if not metrics.get("model_path"):
        raise not_a_run(f"its {METRICS_FILE} names no model_path")
    # The model beside metrics.json: the folder may have moved.
    model_path = os.path.join(run_dir, os.path.basename(metrics["model_path"]))
    if not os.path.exists(model_path):
        raise not_a_run(f"its model {model_path} is missing")
    model = keras.saving.load_model(model_path)
    if not isinstance(model, CausalLM):
        raise not_a_run(
            f"{model_path} holds a {type(model).__name__}, not a CausalLM",
            ValueError,
        )
    longest = model.max_length
    if sequence_length is not None and longest is not None:
        if sequence_length > longest:
            raise _validation.invalid(
                "sequence_length",
                f"at most {longest}, the max_length of the model in {run_dir}",
                sequence_length,
            )
    config = metrics.get("config", {})
    files = {"sentencepiece": SENTENCEPIECE_FILE, "wordpiece": VOCABULARY_FILE}
    if config.get("tokenizer") in files:
        # The tokenizer the run recorded (a folder trained again with the
        # other one holds both files).
        kind = config["tokenizer"]
        if not os.path.exists(os.path.join(run_dir, files[kind])):
            raise not_a_run(f"it holds no {files[kind]}, its {kind} model")
    else:
        found = [
            kind
            for kind, name in files.items()
            if os.path.exists(os.path.join(run_dir, name))
        ]
        if not found:
            raise not_a_run("it holds no tokenizer file")
        kind = found[0]
    path = os.path.join(run_dir, files[kind])
    tokenizer = _run_tokenizer(
        kind,
        _read_saved_tokenizer(path),
        config.get("lower_case", LanguageModelOptions.lower_case),
        sequence_length,
    )
    if tokenizer.vocabulary_size != model.vocab_size:
        raise not_a_run(
            f"its tokenizer has {tokenizer.vocabulary_size} tokens but its "
            f"model {model.vocab_size}",
            ValueError,
        )
    return LanguageModelRun(model, tokenizer, metrics, run_dir)
