"""LiteRT (TFLite) export of models built with our layers.

Needs TensorFlow (the converter); the file runs in the `ai-edge-litert`
interpreter, which needs neither TensorFlow nor Keras (a model with a
`WordPieceTokenizer` also needs TF-Text's LiteRT kernels registered).
"""

import contextlib
import os

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
