"""A `CausalLM` as a TF Serving text generator: prompts in, text out.

Needs TensorFlow, imported with this module (which `keras_selfattn.export`
loads on first access to one of its names).
"""

import keras
import tensorflow as tf

from keras_selfattn.export import _guards
from keras_selfattn.export.saved_model import _check_limit
from keras_selfattn.export.saved_model import _publish
from keras_selfattn.layers import _validation
from keras_selfattn.models import samplers as samplers_lib
from keras_selfattn.models.causal_lm import CausalLM
from keras_selfattn.models.causal_lm import left_align
from keras_selfattn.models.samplers import ConfigurableSampler

# The seed is held in an int32 by the samplers' hash.
_MAX_SEED = 2**31 - 1


def _prompt_tokenizer(tokenizer):
    """The tokenizer for prompts: `tokenizer`, or, when its config pads or
    truncates to a `sequence_length` or appends an end token, a copy
    without (the prompt's last tokens are kept here, and a prompt is
    continued, not ended)."""
    get_config = getattr(tokenizer, "get_config", None)
    config = get_config() if callable(get_config) else {}
    changes = {}
    if config.get("sequence_length") is not None:
        changes["sequence_length"] = None
    if config.get("add_end_token"):
        changes["add_end_token"] = False
    if not changes:
        return tokenizer
    return type(tokenizer).from_config({**config, **changes})


def _check_tokenizer(tokenizer, causal_lm):
    if not callable(tokenizer) or not callable(
        getattr(tokenizer, "detokenize", None)
    ):
        raise _validation.invalid(
            "tokenizer",
            "a layer mapping strings to ids, with `detokenize(ids)`",
            type(tokenizer).__name__,
            TypeError,
        )
    pad_id = getattr(tokenizer, "pad_id", causal_lm.pad_id)
    if pad_id != causal_lm.pad_id:
        raise _validation.invalid(
            "tokenizer",
            f"a tokenizer whose pad_id is the model's ({causal_lm.pad_id})",
            f"pad_id={pad_id}",
        )
    size = getattr(tokenizer, "vocabulary_size", None)
    if size is not None and size > causal_lm.vocab_size:
        raise _validation.invalid(
            "tokenizer",
            f"at most vocab_size={causal_lm.vocab_size} tokens (the model's)",
            f"vocabulary_size={size}",
        )
    return pad_id


def export_causal_lm(
    causal_lm,
    tokenizer,
    export_dir,
    max_prompt_length,
    max_new_tokens,
    temperature=1.0,
    top_k=0,
    top_p=0.9,
    seed=0,
    stop_token_ids=None,
    tidy=True,
    version=None,
    overwrite=False,
    metadata=None,
    max_batch_size=_guards.DEFAULT_MAX_BATCH_SIZE,
    max_text_bytes=_guards.DEFAULT_MAX_TEXT_BYTES,
):
    """Export a `CausalLM` for TF Serving: raw prompts in, generated text
    out, with the sampling options as optional request inputs.

    Signatures (both output `text`, string `(batch_size,)`: the new text
    of each prompt, the stop token and what follows it removed):

    - `serving_default`: `text` (string `(batch_size,)`) alone; every
      option is its export default. A REST client sends
      `{"instances": ["Once upon a time", ...]}`.
    - `generate`: `text` plus `temperature` (float32, > 0), `top_k`
      (int32, >= 0; `0`: off), `top_p` (float32, in (0, 1]; `1`: off),
      `seed` (int32, in [0, 2**31 - 1]) and `max_new_tokens` (int32, in
      [1, the exported `max_new_tokens`]). Each option is a scalar (the
      whole request), one value per row `(batch_size,)` (what TF Serving's
      row format `{"instances": [{"text": ..., "top_p": 0.8, ...}]}`
      sends), or an empty list (its export default). TF Serving's REST
      API needs every input of a signature in each request (its gRPC API
      would take `SignatureDef` defaults, which Keras' `ExportArchive`
      does not write): so the defaults are a signature of their own, and
      an empty list stands for "the default" in `generate`.

    Inside the graph, each request is checked first (the `text` batch as
    for `export_text_generator`; each option's shape and range), and a
    malformed one fails with `INVALID_ARGUMENT` and a message naming the
    input and what it expects (`Received an invalid value for input
    `top_p`, expected a float in (0, 1]. Received: top_p=1.500000`), never
    with a crash. Then the prompts are tokenized, left-aligned to a static
    `max_prompt_length` (a longer prompt keeps its **last**
    `max_prompt_length` tokens: the model continues the end of the text;
    the record says so), decoded with the key/value cache by a
    `ConfigurableSampler` (temperature, then top-k, then top-p, with the
    samplers' stateless hash: the same seed gives the same text here, in
    Python and through the C API), and detokenized. A row stops at a stop
    token or after its `max_new_tokens`; the output always has room for
    the exported `max_new_tokens`, the static size of the cache.

    Args:
        causal_lm: the `keras_selfattn.models.CausalLM`.
        tokenizer: the tokenizer it was trained with: a layer mapping a
            string batch to int ids `(batch_size, length)` padded with the
            model's `pad_id`, with `detokenize(ids)` (e.g.
            `keras_selfattn.text.WordPieceTokenizer`). Prompts are
            tokenized by a copy without its `sequence_length` and end
            token, if its config has them (a start token stays).
        export_dir: str, the base folder (versions go in sub-folders).
        max_prompt_length: int >= 1, the prompt tokens the model sees.
        max_new_tokens: int >= 1, the most tokens a request may ask for.
        temperature: float > 0, the default temperature. Defaults to
            `1.0`.
        top_k: int >= 0, the default top-k (`0`: off). Defaults to `0`.
        top_p: float in (0, 1], the default nucleus mass (`1`: off).
            Defaults to `0.9`.
        seed: int in [0, 2**31 - 1], the default seed: a request without
            one always gets the same text for the same prompt. Defaults to
            `0`.
        stop_token_ids: `None`, an int or a sequence of ints (e.g. the
            tokenizer's `end_id`): a row ends after one of them. Defaults
            to `None`.
        tidy: bool, remove the spaces detokenization leaves around
            punctuation (`keras_selfattn.models.tidy_spacing`). Defaults
            to `True`.
        version: int or `None`. Defaults to the next version number.
        overwrite: bool, replace an existing version. Defaults to `False`.
        metadata: dict or `None`, JSON-serializable facts about this
            version, written with the export's own record (`signatures`
            with each option's default and range, `prompt`,
            `stop_token_ids`) to `<version>/assets.extra/metadata.json`
            (see `export_model`). Defaults to `None`.
        max_batch_size: int or `None`, the most rows one request may hold
            (`None`: no limit). Defaults to `1024`.
        max_text_bytes: int or `None`, the longest prompt (UTF-8 bytes) a
            request may hold (`None`: no limit). Defaults to `100000`.

    Returns:
        The path of the written version.

    Example:

    >>> import tempfile
    >>> import tensorflow as tf
    >>> from keras_selfattn.export import export_causal_lm
    >>> from keras_selfattn.models import CausalLM
    >>> from keras_selfattn.text import WordPieceTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "the", "cat", "sat"]
    >>> tokenizer = WordPieceTokenizer(vocab, add_start_token=True)
    >>> lm = CausalLM(len(vocab), num_layers=1, hidden_dim=8, num_heads=2,
    ...               ff_dim=16)
    >>> path = export_causal_lm(lm, tokenizer, tempfile.mkdtemp(),
    ...                         max_prompt_length=6, max_new_tokens=4,
    ...                         stop_token_ids=tokenizer.end_id)
    >>> loaded = tf.saved_model.load(path)
    >>> out = loaded.signatures["generate"](
    ...     text=tf.constant(["the cat", "sat"]), temperature=tf.constant(0.7),
    ...     top_k=tf.constant(0), top_p=tf.constant([0.8, 1.0]),
    ...     seed=tf.constant(3), max_new_tokens=tf.constant([], tf.int32))
    >>> out["text"].shape
    TensorShape([2])
    >>> try:
    ...     loaded.signatures["generate"](
    ...         text=tf.constant(["the cat"]), temperature=tf.constant(1.0),
    ...         top_k=tf.constant(0), top_p=tf.constant(1.5),
    ...         seed=tf.constant(3), max_new_tokens=tf.constant(2))
    ... except tf.errors.InvalidArgumentError as error:
    ...     message = error.message
    >>> "input `top_p`, expected a float in (0, 1]" in message
    True
    """
    if not isinstance(causal_lm, CausalLM):
        raise _validation.invalid(
            "causal_lm",
            "a keras_selfattn.models.CausalLM",
            type(causal_lm).__name__,
            TypeError,
        )
    pad_id = _check_tokenizer(tokenizer, causal_lm)
    max_prompt_length = _validation.positive_int(
        "max_prompt_length", max_prompt_length
    )
    max_new_tokens = _validation.positive_int("max_new_tokens", max_new_tokens)
    temperature = _validation.positive_float(
        "temperature", temperature, finite=True
    )
    top_k = _validation.non_negative_int("top_k", top_k)
    if (
        isinstance(top_p, bool)
        or not isinstance(top_p, (int, float))
        or not 0.0 < top_p <= 1.0
    ):
        raise _validation.invalid("top_p", "a float in (0, 1]", top_p)
    top_p = float(top_p)
    seed = _validation.non_negative_int("seed", seed)
    if seed > _MAX_SEED:
        raise _validation.invalid("seed", "an integer in [0, 2**31 - 1]", seed)
    stop = samplers_lib.check_stop_token_ids(stop_token_ids)
    for value in stop:
        if value >= causal_lm.vocab_size:
            raise _validation.invalid(
                "stop_token_ids",
                f"ids below vocab_size={causal_lm.vocab_size}",
                stop_token_ids,
            )
    tidy = _validation.boolean("tidy", tidy)
    max_batch_size = _check_limit("max_batch_size", max_batch_size)
    max_text_bytes = _check_limit("max_text_bytes", max_text_bytes)
    prompt_tokenizer = _prompt_tokenizer(tokenizer)
    if tidy:
        from keras_selfattn.models.text_generator import tidy_spacing

    # (name, dtype, default, valid(values), expected): the order of the
    # `generate` signature's options.
    options = [
        (
            "temperature",
            tf.float32,
            temperature,
            lambda v: tf.logical_and(v > 0, tf.math.is_finite(v)),
            "a finite float > 0",
        ),
        ("top_k", tf.int32, top_k, lambda v: v >= 0, "an integer >= 0"),
        (
            "top_p",
            tf.float32,
            top_p,
            lambda v: tf.logical_and(v > 0, v <= 1),
            "a float in (0, 1]",
        ),
        (
            "seed",
            tf.int32,
            seed,
            lambda v: v >= 0,
            f"an integer in [0, {_MAX_SEED}]",
        ),
        (
            "max_new_tokens",
            tf.int32,
            max_new_tokens,
            lambda v: tf.logical_and(v >= 1, v <= max_new_tokens),
            f"an integer in [1, {max_new_tokens}] (the exported maximum)",
        ),
    ]

    def prompts(text):
        """The last `max_prompt_length` tokens of each prompt, left-padded:
        `(ids, mask)`, `(batch_size, max_prompt_length)`."""
        ids = tf.cast(prompt_tokenizer(text), tf.int32)  # (B, L)
        batch = tf.shape(ids)[0]
        room = tf.fill([batch, max_prompt_length], pad_id)
        ids = tf.concat([room, ids], axis=1)  # (B, P + L)
        mask = tf.not_equal(ids, pad_id)
        ids, mask = left_align(ids, mask, pad_id)  # real tokens last
        shape = [None, max_prompt_length]
        ids = tf.ensure_shape(ids[:, -max_prompt_length:], shape)
        return ids, tf.ensure_shape(mask[:, -max_prompt_length:], shape)

    def generate(text, *values):
        text = _guards.check_strings(
            text, "text", max_batch_size, max_text_bytes
        )
        batch = tf.shape(text)[0]
        checked = {
            name: _guards.check_option(
                tf.cast(value, dtype), name, batch, default, valid, expected
            )
            for value, (name, dtype, default, valid, expected) in zip(
                values, options, strict=True
            )
        }
        ids, mask = prompts(text)
        sampler = ConfigurableSampler(
            temperature=checked["temperature"],
            k=checked["top_k"],
            p=checked["top_p"],
            token_limit=checked["max_new_tokens"],
        )
        tokens = causal_lm.generate(
            ids,
            max_new_tokens,
            sampler=sampler,
            stop_token_ids=stop,
            seed=checked["seed"],
            padding_mask=mask,
        )  # (B, max_new_tokens)
        if stop:
            # The stop token ends the text; it is not part of it.
            is_stop = tf.reduce_any(
                tf.equal(tokens[:, :, None], tf.constant(stop, tf.int32)),
                axis=-1,
            )
            tokens = tf.where(is_stop, causal_lm.pad_id, tokens)
        strings = tokenizer.detokenize(tokens)
        return {"text": tidy_spacing(strings) if tidy else strings}

    text_spec = tf.TensorSpec(None, tf.string, name="text")
    option_specs = [
        tf.TensorSpec(None, dtype, name=name) for name, dtype, *_ in options
    ]
    # Traced once: `serving_default` calls this graph with the defaults
    # (the decoding loop is not traced twice).
    generate = tf.function(
        generate, input_signature=[text_spec, *option_specs], autograph=False
    )

    def with_defaults(text):
        return generate(
            text,
            *[
                tf.constant(default, dtype)
                for _, dtype, default, _, _ in options
            ],
        )

    def write(path):
        archive = keras.export.ExportArchive()
        archive.track(causal_lm)
        archive.track(tokenizer)
        if prompt_tokenizer is not tokenizer:
            archive.track(prompt_tokenizer)
        archive.add_endpoint(
            "serving_default", with_defaults, input_signature=[text_spec]
        )
        archive.add_endpoint(
            "generate", generate, input_signature=[text_spec, *option_specs]
        )
        archive.write_out(path, verbose=False)

    limits = {
        "max_batch_size": max_batch_size,
        "max_text_bytes": max_text_bytes,
    }
    expected = {name: text for name, _, _, _, text in options}
    signatures = {
        "serving_default": {
            "inputs": {"text": "string (batch_size,)"},
            **limits,
        },
        "generate": {
            "inputs": {
                "text": "string (batch_size,)",
                **{
                    name: f"{dtype.name} (), (batch_size,) or (0,) for the "
                    "default"
                    for name, dtype, *_ in options
                },
            },
            "defaults": {name: default for name, _, default, _, _ in options},
            "expected": expected,
            **limits,
        },
    }
    exported = {
        "signatures": signatures,
        "prompt": {
            "max_prompt_length": max_prompt_length,
            "longer_prompts": "keep their last max_prompt_length tokens",
        },
        "max_new_tokens": max_new_tokens,
        "stop_token_ids": list(stop),
        "sampler": "ConfigurableSampler (temperature, top-k, top-p)",
    }
    return _publish(write, export_dir, version, overwrite, metadata, exported)
