"""LiteRT (TFLite) export of models built with our layers.

Needs TensorFlow (the converter); the file runs in the `ai-edge-litert`
interpreter, which needs neither TensorFlow nor Keras (a model with a
`WordPieceTokenizer` also needs TF-Text's LiteRT kernels registered).
"""

import contextlib
import os

import keras

from keras_selfattn.layers import _kernels
from keras_selfattn.layers import _validation

# Full-integer int8 (activations too) is not offered: calibrated on a
# representative dataset, a TransformerBlock's outputs were off by 18-60 %
# of their range and a two-block classifier's logits collapsed to zeros
# (LayerNorm and the masked softmax do not survive int8 activations).
QUANTIZATIONS = (None, "dynamic_range")


def export_litert(
    model,
    filepath,
    *,
    input_signature=None,
    quantization=None,
    verbose=False,
):
    """Export `model` as a LiteRT flatbuffer: builtin ops, plus TF-Text's
    tokenizer kernels when the model takes raw strings.

    The file keeps the model's dynamic axes (batch and sequence length, as
    its inputs declare them), and our layers' masking: padding given as id
    0 to a `TokenAndPositionEmbedding` (or a mask carried by the inputs)
    masks the same positions on device. Every attention is traced with its
    dense kernel, whatever its `attention_impl` (the same maths; the
    chunked kernel's block loop has no LiteRT builtins), so attention
    memory on device grows with the square of the sequence length. It is
    `model.export(filepath, format="litert")` with builtin ops only (no
    Flex ops, which the pip `ai-edge-litert` interpreter cannot run) and
    the quantization below.

    Raw strings in: a model that contains a `WordPieceTokenizer` (a
    `TextClassifier`, or a functional model on `keras.Input(dtype=
    "string")`) is exported with strings `(batch_size,)` in, and the file
    holds two custom ops besides the builtins,
    `FastWordpieceTokenizeWithOffsets` and `RaggedTensorToTensor`, whose
    kernels ship with tensorflow-text (register them in the interpreter,
    see `docs/deployment.md`). The ids equal Keras' for valid UTF-8 text.
    The tokenizer must have `lower_case=False` and `strip_accents=False`:
    case folding and accent stripping are TensorFlow ops with no LiteRT
    kernel, and the export refuses them (`WordPieceTokenizer.
    litert_blockers`) rather than give different ids on device. It
    refuses a `SentencePieceTokenizer` too: its ops have no LiteRT kernels
    (TF-Text's `FastSentencepieceTokenizer` has, but it gives other ids
    for byte-fallback pieces).

    Needs TensorFlow (imported on first use).

    Args:
        model: a built Keras model (functional, Sequential or subclassed).
        filepath: str, the `.tflite` file to write.
        input_signature: optional list of `keras.InputSpec` /
            `tf.TensorSpec`, as for `model.export`. Defaults to `None`
            (the model's input shapes and dtypes; strings `(batch_size,)`
            named `text` for a `TextClassifier`).
        quantization: `None` (float32) or `"dynamic_range"` (int8
            weights, float activations: the weight matrices shrink about
            4x, no data needed). Full-integer int8 (activations too) is not
            offered: LayerNorm and the masked softmax lose too much in int8
            activations (see `docs/deployment.md`). Defaults to `None`.
        verbose: bool, print Keras' export message. Defaults to `False`.

    Returns:
        `filepath`.

    Example:

    >>> import os, tempfile
    >>> import keras, numpy as np
    >>> import keras_selfattn as ksa
    >>> from keras_selfattn.export.litert import export_litert
    >>> inputs = keras.Input((None,), dtype="int32")
    >>> x = ksa.TokenAndPositionEmbedding(50, 32, 8)(inputs)
    >>> x = ksa.TransformerBlock(num_heads=2, ff_dim=16)(x)
    >>> x = ksa.SequencePooling("mean")(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(x))
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> export_litert(model, path) == path
    True
    """
    filepath = os.fspath(filepath)
    if not filepath.endswith(".tflite"):
        raise _validation.invalid(
            "filepath", "a path ending in '.tflite'", filepath
        )
    quantization = _validation.one_of(
        "quantization", quantization, QUANTIZATIONS
    )
    if not model.built:
        raise _validation.invalid(
            "model", "a built model (call it once, or build it)", model.name
        )
    import tensorflow as tf

    from keras_selfattn.text import sentencepiece
    from keras_selfattn.text import wordpiece

    # Keras' own walk over every nested layer (sub-models, layers held by
    # layers), as `Model.quantize` does.
    tokenizers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(
            layer,
            (
                wordpiece.WordPieceTokenizer,
                sentencepiece.SentencePieceTokenizer,
            ),
        )
    ]
    blockers = [r for t in tokenizers for r in t.litert_blockers()]
    if blockers:
        raise _validation.invalid(
            "model",
            "a model whose tokenizer LiteRT can run (a WordPieceTokenizer "
            "with lower_case=False, strip_accents=False): "
            + "; ".join(blockers),
            model.name,
        )
    supported = [tf.lite.OpsSet.TFLITE_BUILTINS]
    options = {}
    if quantization is not None:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    tokenize = contextlib.nullcontext()
    if tokenizers:
        # Without it, the converter refuses TF-Text's ops; with it, it
        # would accept any TF op as a custom op, hence the check below.
        options["allow_custom_ops"] = True
        tokenize = wordpiece.litert_mode()
        if input_signature is None and not getattr(model, "inputs", None):
            # A subclassed model (`TextClassifier`) has no `keras.Input`.
            input_signature = [tf.TensorSpec((None,), tf.string, name="text")]
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    with _kernels.dense_kernels(), tokenize:
        model.export(
            filepath,
            format="litert",
            input_signature=input_signature,
            verbose=verbose,
            target_spec={"supported_ops": supported},
            **options,
        )
    if tokenizers:
        _check_custom_ops(filepath, wordpiece.LITERT_CUSTOM_OPS, model.name)
    return filepath


def _check_custom_ops(filepath, allowed, model_name):
    """Raise (and remove the file) if it holds a custom op outside
    `allowed`: a TensorFlow op that no LiteRT interpreter can run."""
    from tensorflow.lite.tools import flatbuffer_utils

    codes = flatbuffer_utils.read_model(filepath).operatorCodes
    custom = {c.customCode.decode() for c in codes if c.customCode}
    unknown = sorted(custom - set(allowed))
    if unknown:
        os.remove(filepath)
        raise _validation.invalid(
            "model",
            "a model whose ops have LiteRT kernels (builtins, or the "
            f"tokenizer's {', '.join(allowed)}); these TensorFlow ops have "
            f"none: {', '.join(unknown)}",
            model_name,
        )


# The names of a block's cache tensors, in the LiteRT signature's order.
CACHE_PARTS = ("key", "value", "key_mask")


def cache_input_name(block_index, part):
    """The LiteRT input (and output) name of one cache tensor."""
    return f"cache_{block_index}_{part}"


class _CachedStep(keras.layers.Layer):
    """`CausalLM.call_with_cache` on flat tensors (the one forward path of
    generation), as a layer that tracks the model's weights for export."""

    def __init__(self, causal_lm, **kwargs):
        super().__init__(**kwargs)
        self.causal_lm = causal_lm

    def call(self, token_ids, padding_mask, positions, index, *flat):
        parts = len(CACHE_PARTS)
        caches = [
            dict(zip(CACHE_PARTS, flat[i : i + parts], strict=True))
            for i in range(0, len(flat), parts)
        ]
        logits, caches = self.causal_lm.call_with_cache(
            token_ids,
            caches,
            index[0],
            padding_mask=padding_mask,
            positions=positions,
        )  # (B, T, V)
        # Only the last position's logits: the next token (all a decoding
        # step needs; the prefill's others are never read).
        outputs = {"logits": logits[:, -1, :]}  # (B, V)
        for i, cache in enumerate(caches):
            for part in CACHE_PARTS:
                outputs[cache_input_name(i, part)] = cache[part]
        return outputs


def export_causal_lm_litert(
    causal_lm,
    filepath,
    max_length,
    *,
    quantization=None,
    verbose=False,
):
    """Export a `CausalLM`'s cached forward step as a LiteRT file, for
    on-device generation (`litert_generate` drives it with NumPy).

    One signature, `serving_default`, does both halves of generation: the
    prefill (all prompt tokens at once) and each decoding step (one token),
    since its token axis is dynamic:

    - inputs: `token_ids` int32 `(batch_size, length)`, `padding_mask`
      bool `(batch_size, length)` (`True` for real tokens), `positions`
      int32 `(batch_size, length)` (each token's position, counted from
      its row's first real token), `index` int32 `(1,)` (the cache slot of
      the first token), and the key/value cache of each block `i`:
      `cache_{i}_key`, `cache_{i}_value` (float, `(batch_size, heads,
      max_length, head_dim)`) and `cache_{i}_key_mask` (bool,
      `(batch_size, max_length)`), all zeros (`False`) to start;
    - outputs: `logits` float32 `(batch_size, vocab_size)` (the next
      token's, after the last input token) and the updated caches, under
      the same names, to feed to the next call. Any batch size, the same
      in every call of one generation.

    It is `CausalLM.call_with_cache` converted with builtin ops only and
    the dense attention kernel (see `export_litert`); the cache length is
    fixed in the file, the batch and token axes are not (the interpreter
    resizes its tensors when a call's shapes change).

    Args:
        causal_lm: the `keras_selfattn.models.CausalLM`.
        filepath: str, the `.tflite` file to write.
        max_length: int >= 2, the cache length: prompt plus new tokens.
        quantization: `None` or `"dynamic_range"`, as for `export_litert`.
            Defaults to `None`.
        verbose: bool, print Keras' export message. Defaults to `False`.

    Returns:
        `filepath`.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> from keras_selfattn.export import export_causal_lm_litert
    >>> from keras_selfattn.export import litert_generate
    >>> from keras_selfattn.models import CausalLM
    >>> lm = CausalLM(20, num_layers=1, hidden_dim=8, num_heads=2, ff_dim=16)
    >>> path = export_causal_lm_litert(
    ...     lm, os.path.join(tempfile.mkdtemp(), "lm.tflite"), max_length=10)
    >>> prompt = np.array([[1, 5, 6]])
    >>> tokens = litert_generate(path, prompt, max_new_tokens=4)
    >>> bool((tokens == np.asarray(lm.generate(prompt, 4))).all())
    True
    """
    from keras_selfattn.models.causal_lm import CausalLM

    if not isinstance(causal_lm, CausalLM):
        raise _validation.invalid(
            "causal_lm",
            "a keras_selfattn.models.CausalLM",
            type(causal_lm).__name__,
            TypeError,
        )
    max_length = _validation.positive_int("max_length", max_length)
    if max_length < 2:
        raise _validation.invalid(
            "max_length", "an integer >= 2 (a prompt and a token)", max_length
        )
    if causal_lm.position_embedding == "learned" and (
        max_length > causal_lm.max_length
    ):
        raise _validation.invalid(
            "max_length",
            f"at most the learned position table's {causal_lm.max_length} rows",
            max_length,
        )
    caches = causal_lm.init_cache(1, max_length)
    inputs = [
        keras.Input((None,), dtype="int32", name="token_ids"),
        keras.Input((None,), dtype="bool", name="padding_mask"),
        keras.Input((None,), dtype="int32", name="positions"),
        keras.Input((), batch_size=1, dtype="int32", name="index"),
    ]
    for i, cache in enumerate(caches):
        for part in CACHE_PARTS:
            tensor = cache[part]
            inputs.append(
                keras.Input(
                    tuple(tensor.shape[1:]),
                    dtype=keras.backend.standardize_dtype(tensor.dtype),
                    name=cache_input_name(i, part),
                )
            )
    step = _CachedStep(causal_lm, name="cached_step")
    model = keras.Model(inputs, step(*inputs), name="causal_lm_step")
    return export_litert(
        model, filepath, quantization=quantization, verbose=verbose
    )
