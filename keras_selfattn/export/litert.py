"""LiteRT (TFLite) export of models built with our layers.

Needs TensorFlow (the converter); the file runs in the `ai-edge-litert`
interpreter, which needs neither TensorFlow nor Keras.
"""

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
    """Export `model` as a LiteRT flatbuffer with builtin ops only.

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

    Needs TensorFlow (imported on first use).

    Args:
        model: a built Keras model (functional, Sequential or subclassed).
        filepath: str, the `.tflite` file to write.
        input_signature: optional list of `keras.InputSpec` /
            `tf.TensorSpec`, as for `model.export`. Defaults to `None`
            (the model's input shapes and dtypes).
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

    supported = [tf.lite.OpsSet.TFLITE_BUILTINS]
    options = {}
    if quantization is not None:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    with _kernels.dense_kernels():
        model.export(
            filepath,
            format="litert",
            input_signature=input_signature,
            verbose=verbose,
            target_spec={"supported_ops": supported},
            **options,
        )
    return filepath
