"""The recipes' options, their defaults, and the command-line flags for them.

Each option of a recipe has its default in one place: a field of
`TrainingOptions` (how `fit` runs) or of `Seq2SeqOptions` (the seq2seq
recipe: data, vocabularies, model, training and decoding) or of
`LanguageModelOptions` (the language-model recipe). The flags that
`add_training_arguments`, `add_seq2seq_arguments` and
`add_language_model_arguments` add take their defaults from those
fields; an example overrides a default by naming it
(`add_training_arguments(parser, epochs=3)`), once, in its own file. The
flags are named like the fields, so `vars(parser.parse_args())` holds
keyword arguments of the recipe. `require_modules` checks the optional
packages up front. The module imports no TensorFlow.
"""

import argparse
import dataclasses
import importlib.util

from keras_selfattn.layers import _validation
from keras_selfattn.recipes.fitting import SCHEDULES
from keras_selfattn.recipes.fitting import STRATEGIES

# What `pip install` brings every example's optional dependencies.
EXAMPLES_INSTALL = 'pip install "keras-selfattn[examples]"'
DECODINGS = ("greedy", "beam")
# The random samplers the language-model recipe draws its samples with (a
# greedy continuation is always printed too).
LM_SAMPLERS = ("top_p", "top_k", "random")
# The language-model recipe's tokenizers.
LM_TOKENIZERS = ("sentencepiece", "wordpiece")
# SentencePiece's reserved pieces: 4 special tokens and 256 byte pieces.
_SENTENCEPIECE_RESERVED = 260
# The samplers hash their seed as an int32.
_MAX_SAMPLER_SEED = 2**31 - 1

__all__ = [
    "LanguageModelOptions",
    "Seq2SeqOptions",
    "TrainingOptions",
    "add_language_model_arguments",
    "add_seq2seq_arguments",
    "add_training_arguments",
    "require_modules",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """How a recipe trains: the defaults of the training flags.

    Every value is checked when the options are made, so a bad one fails
    before any data is read, not after hours of training.

    Args:
        epochs: int, the number of epochs (`fit_resumable`). Defaults to
            `10`.
        max_steps: int or `None`, stop after this many optimizer steps in
            all (`StopAtStep`). Defaults to `None`.
        time_budget_minutes: float or `None`, stop after this much training
            time in all, across interruptions (`TimeBudget`). Defaults to
            `None`.
        batch_size: int, for training and evaluation. Defaults to `64`.
        learning_rate: float, the constant rate or the cosine schedule's
            peak (`learning_rate_schedule`). Defaults to `5e-4`.
        lr_schedule: `"constant"` or `"cosine"` (linear warm-up, then a
            cosine decay to 0 at the end of the last epoch). Defaults to
            `"constant"`.
        warmup_steps: int, the cosine schedule's warm-up steps. Defaults
            to `0`.
        seed: int, seeds Keras and the shuffle. Defaults to `42`.
        strategy: `"default"`, `"mirrored"` or `"multiworker"`
            (`make_strategy`). Defaults to `"default"`.
        verbose: 0, 1 or 2, `fit`'s verbosity. Defaults to `1`.
        overwrite: bool, train a fresh run in an output folder that holds
            one (`prepare_output_dir`). Defaults to `False`.

    Example:

    >>> from keras_selfattn.recipes import TrainingOptions
    >>> options = TrainingOptions(epochs=3, lr_schedule="cosine")
    >>> options.epochs, options.batch_size, options.lr_schedule
    (3, 64, 'cosine')
    >>> try:
    ...     TrainingOptions(epochs=0)
    ... except ValueError as error:
    ...     print(error)
    Received an invalid value for argument `epochs`, expected a positive
    integer. Received: epochs=0
    """

    epochs: int = 10
    max_steps: int | None = None
    time_budget_minutes: float | None = None
    batch_size: int = 64
    learning_rate: float = 5e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    seed: int = 42
    strategy: str = "default"
    verbose: int = 1
    overwrite: bool = False

    def __post_init__(self):
        _validation.positive_int("epochs", self.epochs)
        _validation.positive_int("max_steps", self.max_steps, allow_none=True)
        if self.time_budget_minutes is not None:
            _validation.non_negative_float(
                "time_budget_minutes", self.time_budget_minutes
            )
        _validation.positive_int("batch_size", self.batch_size)
        _validation.positive_float(
            "learning_rate", self.learning_rate, finite=True
        )
        _validation.one_of("lr_schedule", self.lr_schedule, SCHEDULES)
        _validation.non_negative_int("warmup_steps", self.warmup_steps)
        _validation.non_negative_int("seed", self.seed)
        _validation.one_of("strategy", self.strategy, STRATEGIES)
        _validation.one_of("verbose", self.verbose, (0, 1, 2))
        _validation.boolean("overwrite", self.overwrite)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Seq2SeqOptions(TrainingOptions):
    """The seq2seq recipe's options (`train_seq2seq`), training included.

    The fields of `TrainingOptions`, then these.

    Args:
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
        decoding: `"greedy"` or `"beam"`. Defaults to `"greedy"`.
        beam_width: int, as in `TextGenerator`. Defaults to `4`.
        length_penalty: float, as in `TextGenerator`. Defaults to `0.6`.
        no_repeat_ngram_size: int, as in `TextGenerator`. Defaults to `0`.
        attention_source_tokens: int or `None`, plot only the first source
            tokens (legible labels for long sources). Defaults to `None`.

    Example:

    >>> from keras_selfattn.recipes import Seq2SeqOptions
    >>> options = Seq2SeqOptions(embed_dim=64, decoding="beam")
    >>> options.embed_dim, options.num_heads, options.epochs
    (64, 8, 10)
    >>> try:
    ...     Seq2SeqOptions(copy_attention=True)
    ... except ValueError as error:
    ...     print(error)
    Received an invalid value for argument `copy_attention`, expected False
    unless shared_vocabulary=True (copying needs one vocabulary for source
    and target). Received: copy_attention=True
    """

    name: str = "generator"
    source_column: str = "source"
    target_column: str = "target"
    max_train_rows: int | None = None
    max_validation_rows: int | None = None
    max_eval_rows: int | None = None
    vocabulary_size: int = 8000
    shared_vocabulary: bool = False
    source_lower_case: bool = True
    target_lower_case: bool = True
    source_length: int = 32
    target_length: int = 32
    embed_dim: int = 256
    num_heads: int = 8
    ff_dim: int = 1024
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dropout: float = 0.1
    copy_attention: bool = False
    decoding: str = "greedy"
    beam_width: int = 4
    length_penalty: float = 0.6
    no_repeat_ngram_size: int = 0
    attention_source_tokens: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.name, str) or not self.name:
            raise _validation.invalid("name", "a non-empty string", self.name)
        for name in ("max_train_rows", "max_validation_rows", "max_eval_rows"):
            _validation.positive_int(name, getattr(self, name), allow_none=True)
        _validation.positive_int("vocabulary_size", self.vocabulary_size)
        for name in (
            "shared_vocabulary",
            "source_lower_case",
            "target_lower_case",
            "copy_attention",
        ):
            _validation.boolean(name, getattr(self, name))
        _validation.positive_int("source_length", self.source_length)
        _validation.positive_int("target_length", self.target_length)
        _validation.one_of("decoding", self.decoding, DECODINGS)
        _validation.positive_int("beam_width", self.beam_width)
        _validation.non_negative_float("length_penalty", self.length_penalty)
        _validation.non_negative_int(
            "no_repeat_ngram_size", self.no_repeat_ngram_size
        )
        _validation.positive_int(
            "attention_source_tokens",
            self.attention_source_tokens,
            allow_none=True,
        )
        if self.copy_attention and not self.shared_vocabulary:
            # Copied source ids must index the target vocabulary: with two
            # vocabularies of equal size this would train silently on
            # nonsense.
            raise _validation.invalid(
                "copy_attention",
                "False unless shared_vocabulary=True (copying needs one "
                "vocabulary for source and target)",
                self.copy_attention,
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LanguageModelOptions(TrainingOptions):
    """The language-model recipe's options (`train_language_model`),
    training included.

    The fields of `TrainingOptions`, then these.

    Args:
        name: str, the model's name and the `.keras` file's stem. Defaults
            to `"language_model"`.
        text_column: str, the text column (TSV header or JSON key).
            Defaults to `"text"`.
        max_train_rows: int or `None`, read at most this many training
            rows. Defaults to `None` (all).
        max_validation_rows: int or `None`, likewise for validation.
            Defaults to `None`.
        max_eval_rows: int or `None`, measure the perplexity on the first
            rows of the test split only. Defaults to `None` (all).
        tokenizer: `"sentencepiece"` or `"wordpiece"`, the sub-word
            tokenizer learned from the training texts. SentencePiece
            (unigram, with byte fallback) detokenizes exactly, so prompts
            and samples read as written, and learns in seconds where
            WordPiece takes minutes; WordPiece splits words at spaces and
            punctuation and its outputs get `tidy_spacing`. Defaults to
            `"sentencepiece"`.
        vocabulary_size: int, the most tokens; above 260 for
            SentencePiece (its 4 special tokens and 256 byte pieces), which
            may learn fewer from a small text. Defaults to `8000`.
        vocabulary_rows: int or `None`, learn the vocabulary from the
            first training rows only (the WordPiece learner is slow:
            minutes for a few thousand reviews on 2 cores). Defaults to
            `None` (all).
        lower_case: bool, lower-case the text (and so the generated text;
            with SentencePiece, an NFKC normalization with case folding
            compiled into its model). Defaults to `False`.
        sequence_length: int, the tokens a training window predicts:
            documents are cut into windows of `sequence_length + 1` tokens
            that overlap by one, so every token but a document's first is
            a target exactly once. Defaults to `128`.
        steps_per_epoch: int or `None`, the optimizer steps between two
            backups, validations and TensorBoard points (the training
            windows repeat, reshuffled). Defaults to `None`: one pass over
            the windows.
        num_layers: int, as in `CausalLM`. Defaults to `2`.
        hidden_dim: int, as in `CausalLM`. Defaults to `128`.
        num_heads: int, as in `CausalLM`. Defaults to `4`.
        ff_dim: int, as in `CausalLM`. Defaults to `512`.
        dropout: float, as in `CausalLM`. Defaults to `0.1`.
        sampler: `"top_p"`, `"top_k"` or `"random"`: the random sampler of
            the sample continuations (a greedy one is made too), seeded
            with `seed`. Defaults to `"top_p"`.
        top_p: float in (0, 1], the nucleus of `"top_p"`. Defaults to
            `0.9`.
        top_k: int, the candidates of `"top_k"`. Defaults to `40`.
        temperature: float > 0, of the random sampler. Defaults to `1.0`.
        prompts: tuple of str, the prompts to continue. Defaults to `()`:
            the first `prompt_words` words of the first `num_samples` test
            rows.
        num_samples: int, test rows to take prompts from. Defaults to `3`.
        prompt_words: int, the words of a test row that make its prompt.
            Defaults to `8`.
        max_new_tokens: int, the most tokens a continuation adds (also the
            most a request to the TF Serving export may ask for). Defaults
            to `40`.
        max_prompt_length: int, the prompt tokens the TF Serving export
            feeds the model (a longer prompt keeps its last ones). Defaults
            to `64`.

    Example:

    >>> from keras_selfattn.recipes import LanguageModelOptions
    >>> options = LanguageModelOptions(hidden_dim=64, sampler="top_k")
    >>> options.hidden_dim, options.num_layers, options.lower_case
    (64, 2, False)
    >>> try:
    ...     LanguageModelOptions(top_p=1.5)
    ... except ValueError as error:
    ...     print(error)
    Received an invalid value for argument `top_p`, expected a float in
    (0, 1]. Received: top_p=1.5
    """

    name: str = "language_model"
    text_column: str = "text"
    max_train_rows: int | None = None
    max_validation_rows: int | None = None
    max_eval_rows: int | None = None
    tokenizer: str = "sentencepiece"
    vocabulary_size: int = 8000
    vocabulary_rows: int | None = None
    lower_case: bool = False
    sequence_length: int = 128
    steps_per_epoch: int | None = None
    num_layers: int = 2
    hidden_dim: int = 128
    num_heads: int = 4
    ff_dim: int = 512
    dropout: float = 0.1
    sampler: str = "top_p"
    top_p: float = 0.9
    top_k: int = 40
    temperature: float = 1.0
    prompts: tuple = ()
    num_samples: int = 3
    prompt_words: int = 8
    max_new_tokens: int = 40
    max_prompt_length: int = 64

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.name, str) or not self.name:
            raise _validation.invalid("name", "a non-empty string", self.name)
        if not isinstance(self.text_column, str) or not self.text_column:
            raise _validation.invalid(
                "text_column", "a non-empty string", self.text_column
            )
        for name in (
            "max_train_rows",
            "max_validation_rows",
            "max_eval_rows",
            "vocabulary_rows",
            "steps_per_epoch",
        ):
            _validation.positive_int(name, getattr(self, name), allow_none=True)
        for name in (
            "vocabulary_size",
            "sequence_length",
            "num_layers",
            "hidden_dim",
            "num_heads",
            "ff_dim",
            "top_k",
            "prompt_words",
            "max_new_tokens",
            "max_prompt_length",
        ):
            _validation.positive_int(name, getattr(self, name))
        _validation.one_of("tokenizer", self.tokenizer, LM_TOKENIZERS)
        if (
            self.tokenizer == "sentencepiece"
            and self.vocabulary_size <= _SENTENCEPIECE_RESERVED
        ):
            raise _validation.invalid(
                "vocabulary_size",
                f"an integer greater than {_SENTENCEPIECE_RESERVED} with "
                'tokenizer="sentencepiece" (4 special tokens and 256 byte '
                "pieces)",
                self.vocabulary_size,
            )
        if self.seed > _MAX_SAMPLER_SEED:
            raise _validation.invalid(
                "seed",
                f"an integer in [0, {_MAX_SAMPLER_SEED}] (the samplers')",
                self.seed,
            )
        _validation.boolean("lower_case", self.lower_case)
        _validation.rate("dropout", self.dropout)
        _validation.one_of("sampler", self.sampler, LM_SAMPLERS)
        if (
            isinstance(self.top_p, bool)
            or not isinstance(self.top_p, (int, float))
            or not 0.0 < self.top_p <= 1.0
        ):
            raise _validation.invalid("top_p", "a float in (0, 1]", self.top_p)
        _validation.positive_float("temperature", self.temperature, finite=True)
        if isinstance(self.prompts, str) or not all(
            isinstance(p, str) for p in self.prompts
        ):
            raise _validation.invalid(
                "prompts", "a sequence of strings", self.prompts
            )
        # Frozen: a list given (e.g. by argparse) is stored as a tuple.
        object.__setattr__(self, "prompts", tuple(self.prompts))
        _validation.non_negative_int("num_samples", self.num_samples)


def _defaults(options_class, overrides):
    """The field defaults of `options_class`, with `overrides` (checked by
    making the options, so a bad default fails when the parser is built)."""
    fields = {f.name: f.default for f in dataclasses.fields(options_class)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(
            f"Received unknown defaults {unknown}; expected names among the "
            f"fields of {options_class.__name__}"
        )
    options_class(**overrides)
    return {**fields, **overrides}


def _flag_adder(default):
    """`flag(group, name, **kwargs)`: adds `--name-with-dashes` for the field
    `name_with_dashes`, its default from `default` (a bool field becomes
    `--name`/`--no-name`)."""

    def flag(group, name, **kwargs):
        dashed = "--" + name.replace("_", "-")
        if isinstance(default[name], bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        group.add_argument(dashed, default=default[name], **kwargs)

    return flag


def add_training_arguments(parser, **defaults):
    """Add the training flags to an `argparse` parser.

    The flags, as a `training` argument group: `--epochs`, `--max-steps`
    (`StopAtStep`), `--time-budget-minutes` (`TimeBudget`), `--batch-size`,
    `--learning-rate`, `--lr-schedule {constant,cosine}` and
    `--warmup-steps` (`learning_rate_schedule`), `--seed`, `--strategy
    {default,mirrored,multiworker}` (`make_strategy`), `--verbose
    {0,1,2}` (`fit`'s verbosity) and `--overwrite` (`prepare_output_dir`:
    train a fresh run in an `--output-dir` that holds one, and publish the
    next serving version; without it a finished run is reported, not
    trained again, and an interrupted one resumes).

    Args:
        parser: an `argparse.ArgumentParser`.
        **defaults: the example's own defaults, by `TrainingOptions` field
            name (e.g. `epochs=3`); the others are the fields' defaults.

    Returns:
        The argument group, to add more training flags to.

    Raises:
        TypeError: a default names no `TrainingOptions` field.

    Example:

    >>> import argparse
    >>> from keras_selfattn.recipes import add_training_arguments
    >>> parser = argparse.ArgumentParser()
    >>> group = add_training_arguments(parser, epochs=3, learning_rate=1e-3)
    >>> args = parser.parse_args(["--lr-schedule", "cosine",
    ...                           "--warmup-steps", "10"])
    >>> args.epochs, args.batch_size, args.lr_schedule, args.warmup_steps
    (3, 64, 'cosine', 10)
    >>> args.learning_rate, args.max_steps, args.strategy, args.verbose
    (0.001, None, 'default', 1)
    >>> args.overwrite, parser.parse_args(["--overwrite"]).overwrite
    (False, True)
    """
    default = _defaults(TrainingOptions, defaults)
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=default["epochs"])
    train.add_argument("--max-steps", type=int, default=default["max_steps"])
    train.add_argument(
        "--time-budget-minutes",
        type=float,
        default=default["time_budget_minutes"],
        help="stop after this many minutes of training in all (a resumed "
        "run counts the minutes trained before the interruption)",
    )
    train.add_argument("--batch-size", type=int, default=default["batch_size"])
    train.add_argument(
        "--learning-rate", type=float, default=default["learning_rate"]
    )
    train.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default=default["lr_schedule"],
        help="cosine: linear warm-up over --warmup-steps, then cosine decay "
        "to zero at the end of the last epoch",
    )
    train.add_argument(
        "--warmup-steps", type=int, default=default["warmup_steps"]
    )
    train.add_argument("--seed", type=int, default=default["seed"])
    train.add_argument(
        "--strategy", choices=STRATEGIES, default=default["strategy"]
    )
    train.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=default["verbose"],
        help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line",
    )
    train.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=default["overwrite"],
        help="start a fresh run in an --output-dir that holds one (a "
        "finished run is otherwise reported, not trained again): train from "
        "scratch, replace the model files and metrics.json, publish the "
        "next serving version (existing ones are kept)",
    )
    return train


def add_seq2seq_arguments(parser, **defaults):
    """Add the seq2seq recipe's data, model and decoding flags to a parser.

    Three argument groups, named like `Seq2SeqOptions`' fields. `data`:
    `--source-column`, `--target-column`, `--max-train-rows`,
    `--max-validation-rows`, `--max-eval-rows`. `model`:
    `--vocabulary-size`, `--shared-vocabulary`, `--source-length`,
    `--target-length`, `--embed-dim`, `--num-heads`, `--ff-dim`,
    `--num-encoder-layers`, `--num-decoder-layers`, `--dropout`,
    `--copy-attention`. `decoding`: `--decoding {greedy,beam}`,
    `--beam-width`, `--length-penalty`, `--no-repeat-ngram-size`. The
    training flags come from `add_training_arguments`.

    Args:
        parser: an `argparse.ArgumentParser`.
        **defaults: the example's own defaults, by `Seq2SeqOptions` field
            name (e.g. `source_length=192`); the others are the fields'
            defaults.

    Returns:
        dict, the `"data"`, `"model"` and `"decoding"` argument groups, to
        add more flags to.

    Raises:
        TypeError: a default names no `Seq2SeqOptions` field.

    Example:

    >>> import argparse
    >>> from keras_selfattn.recipes import add_seq2seq_arguments
    >>> parser = argparse.ArgumentParser()
    >>> groups = add_seq2seq_arguments(parser, source_column="en",
    ...                                target_length=24)
    >>> args = parser.parse_args(["--copy-attention", "--shared-vocabulary",
    ...                           "--decoding", "beam"])
    >>> args.source_column, args.target_length, args.copy_attention
    ('en', 24, True)
    >>> args.decoding, args.no_repeat_ngram_size, args.beam_width
    ('beam', 0, 4)
    """
    flag = _flag_adder(_defaults(Seq2SeqOptions, defaults))
    data = parser.add_argument_group("data")
    flag(data, "source_column", help="TSV header name or JSON key")
    flag(data, "target_column")
    flag(data, "max_train_rows", type=int)
    flag(data, "max_validation_rows", type=int)
    flag(
        data,
        "max_eval_rows",
        type=int,
        help="decode and score only the first rows of the test split",
    )
    model = parser.add_argument_group("model")
    flag(model, "vocabulary_size", type=int)
    flag(
        model,
        "shared_vocabulary",
        help="one vocabulary (and embedding table) for sources and targets",
    )
    flag(model, "source_length", type=int)
    flag(model, "target_length", type=int)
    flag(model, "embed_dim", type=int)
    flag(model, "num_heads", type=int)
    flag(model, "ff_dim", type=int)
    flag(model, "num_encoder_layers", type=int)
    flag(model, "num_decoder_layers", type=int)
    flag(model, "dropout", type=float)
    flag(
        model,
        "copy_attention",
        help="pointer-generator output that can copy source tokens "
        "(needs --shared-vocabulary)",
    )
    decoding = parser.add_argument_group("decoding")
    flag(decoding, "decoding", choices=DECODINGS)
    flag(decoding, "beam_width", type=int)
    flag(decoding, "length_penalty", type=float)
    flag(
        decoding,
        "no_repeat_ngram_size",
        type=int,
        help="never generate the same n-gram twice in an output (0: off)",
    )
    return {"data": data, "model": model, "decoding": decoding}


def add_language_model_arguments(parser, **defaults):
    """Add the language-model recipe's data, model and sampling flags.

    Three argument groups, named like `LanguageModelOptions`' fields.
    `data`: `--text-column`, `--max-train-rows`, `--max-validation-rows`,
    `--max-eval-rows`. `model`: `--tokenizer {sentencepiece,wordpiece}`,
    `--vocabulary-size`, `--vocabulary-rows`, `--lower-case`,
    `--sequence-length`, `--steps-per-epoch`, `--num-layers`,
    `--hidden-dim`, `--num-heads`, `--ff-dim`, `--dropout`. `sampling`:
    `--sampler {top_p,top_k,random}`, `--top-p`, `--top-k`,
    `--temperature`, `--prompt` (repeat it for several prompts; stored as
    `prompts`), `--num-samples`, `--prompt-words`, `--max-new-tokens`,
    `--max-prompt-length`. The
    training flags come from `add_training_arguments`.

    Args:
        parser: an `argparse.ArgumentParser`.
        **defaults: the example's own defaults, by `LanguageModelOptions`
            field name (e.g. `sequence_length=64`); the others are the
            fields' defaults.

    Returns:
        dict, the `"data"`, `"model"` and `"sampling"` argument groups, to
        add more flags to.

    Raises:
        TypeError: a default names no `LanguageModelOptions` field.

    Example:

    >>> import argparse
    >>> from keras_selfattn.recipes import add_language_model_arguments
    >>> parser = argparse.ArgumentParser()
    >>> groups = add_language_model_arguments(parser, sequence_length=64)
    >>> args = parser.parse_args(["--prompt", "The film", "--prompt", "I",
    ...                           "--lower-case", "--top-p", "0.8"])
    >>> args.prompts, args.sequence_length, args.lower_case, args.top_p
    (['The film', 'I'], 64, True, 0.8)
    >>> parser.parse_args([]).prompts
    []
    """
    default = _defaults(LanguageModelOptions, defaults)
    flag = _flag_adder(default)
    data = parser.add_argument_group("data")
    flag(data, "text_column", help="TSV header name or JSON key")
    flag(data, "max_train_rows", type=int)
    flag(data, "max_validation_rows", type=int)
    flag(
        data,
        "max_eval_rows",
        type=int,
        help="measure the perplexity on the first rows of the test split",
    )
    model = parser.add_argument_group("model")
    flag(
        model,
        "tokenizer",
        choices=LM_TOKENIZERS,
        help="the sub-word tokenizer learned from the training texts",
    )
    flag(model, "vocabulary_size", type=int)
    flag(
        model,
        "vocabulary_rows",
        type=int,
        help="learn the vocabulary from the first training rows only",
    )
    flag(model, "lower_case", help="lower-case the text (and the samples)")
    flag(
        model,
        "sequence_length",
        type=int,
        help="tokens per training window (documents are cut into windows)",
    )
    flag(
        model,
        "steps_per_epoch",
        type=int,
        help="steps between backups, validations and TensorBoard points "
        "(default: one pass over the training windows)",
    )
    flag(model, "num_layers", type=int)
    flag(model, "hidden_dim", type=int)
    flag(model, "num_heads", type=int)
    flag(model, "ff_dim", type=int)
    flag(model, "dropout", type=float)
    sampling = parser.add_argument_group("sampling")
    flag(
        sampling,
        "sampler",
        choices=LM_SAMPLERS,
        help="the random sampler of the samples (a greedy one is made too)",
    )
    flag(sampling, "top_p", type=float)
    flag(sampling, "top_k", type=int)
    flag(sampling, "temperature", type=float)
    sampling.add_argument(
        "--prompt",
        dest="prompts",
        action="append",
        # A list: argparse appends to a copy of it.
        default=list(default["prompts"]),
        help="a prompt to continue (repeat the flag for more); default: "
        "the first --prompt-words words of --num-samples test rows",
    )
    flag(sampling, "num_samples", type=int)
    flag(sampling, "prompt_words", type=int)
    flag(sampling, "max_new_tokens", type=int)
    flag(
        sampling,
        "max_prompt_length",
        type=int,
        help="the prompt tokens the TF Serving export keeps (the last ones)",
    )
    return {"data": data, "model": model, "sampling": sampling}


def require_modules(modules, install=EXAMPLES_INSTALL):
    """Exit at once, naming them, when optional modules are not installed.

    The examples call this first, so a missing optional dependency (e.g.
    `matplotlib`, needed only for the plot at the end) stops the run
    before hours of training rather than after. Nothing is imported:
    `importlib.util.find_spec` only looks.

    Args:
        modules: list of str, the top-level module names needed.
        install: str, the command that installs them. Defaults to
            `'pip install "keras-selfattn[examples]"'`.

    Returns:
        list of str, `modules` (all found).

    Raises:
        SystemExit: some are missing; the message names them and
            `install`.

    Example:

    >>> from keras_selfattn.recipes import require_modules
    >>> require_modules(["json", "keras"])
    ['json', 'keras']
    >>> try:
    ...     require_modules(["json", "no_such_module_here"])
    ... except SystemExit as error:
    ...     message = str(error)
    >>> print(message)
    Missing optional module no_such_module_here; install it with:
    pip install "keras-selfattn[examples]"
    """
    if isinstance(modules, str):
        modules = [modules]
    modules = list(modules)
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            # A parent that fails to import, or a broken module entry.
            found = False
        if not found:
            missing.append(name)
    if missing:
        noun, it = (
            ("module", "it") if len(missing) == 1 else ("modules", "them")
        )
        raise SystemExit(
            f"Missing optional {noun} {', '.join(missing)}; install {it} "
            f"with:\n{install}"
        )
    return modules
