"""SavedModels for TensorFlow Serving: versioned, atomic, clearly signed."""

import os
import shutil
import uuid

import keras
import tensorflow as tf

from keras_selfattn.layers import _validation


def _next_version(export_dir):
    versions = [
        int(name)
        for name in os.listdir(export_dir)
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    ]
    return max(versions, default=0) + 1


def _publish(write, export_dir, version, overwrite):
    """Write a SavedModel with `write(path)` into `<export_dir>/<version>`.

    The model is written to a hidden temporary folder next to its final
    place and renamed into place at the end, so a server polling
    `export_dir` never sees a half-written version.
    """
    export_dir = os.fspath(export_dir)
    os.makedirs(export_dir, exist_ok=True)
    if version is None:
        version = _next_version(export_dir)
    elif isinstance(version, bool) or not isinstance(version, int):
        raise _validation.invalid(
            "version", "a positive integer or None", version, TypeError
        )
    elif version < 1:
        raise _validation.invalid(
            "version", "a positive integer or None", version
        )
    final = os.path.join(export_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists in {export_dir!r}; pass "
            "overwrite=True to replace it, or version=None for the next one."
        )
    # Hidden (TF Serving ignores non-numeric names) and on the same
    # filesystem, so the final rename is atomic.
    staging = os.path.join(export_dir, f".staging-{version}-{uuid.uuid4().hex}")
    try:
        write(staging)
        if os.path.exists(final):
            retired = os.path.join(export_dir, f".retired-{uuid.uuid4().hex}")
            os.rename(final, retired)
            os.rename(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, final)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _float32(x):
    # TF Serving's REST API cannot write float16/bfloat16 tensors.
    if x.dtype in (tf.float16, tf.bfloat16):
        return tf.cast(x, tf.float32)
    return x


def _input_specs(model):
    specs = []
    for i, tensor in enumerate(model.inputs):
        name = getattr(tensor, "name", None) or f"input_{i}"
        dtype = tf.as_dtype(keras.backend.standardize_dtype(tensor.dtype))
        specs.append(tf.TensorSpec(tuple(tensor.shape), dtype, name=name))
    return specs


def _output_names(model):
    names = list(getattr(model, "output_names", None) or [])
    count = len(model.outputs)
    if len(names) != count or len(set(names)) != count:
        names = [f"output_{i}" for i in range(count)]
    return names


def export_model(model, export_dir, version=None, overwrite=False):
    """Export any Keras model built with our layers for TF Serving.

    `serving_default` takes the model's inputs by their `keras.Input`
    names and returns a dict of its outputs by layer name; float16 outputs
    (mixed precision) are cast to float32.

    Args:
        model: a functional or Sequential `keras.Model` (its `inputs` must be
            defined).
        export_dir: str, the model's base folder; versions go in numbered
            sub-folders, as TF Serving expects.
        version: int or `None`. Defaults to the next version number.
        overwrite: bool, replace an existing version. Defaults to `False`.

    Returns:
        The path of the written version, `<export_dir>/<version>`.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> import keras
    >>> import tensorflow as tf
    >>> import keras_selfattn
    >>> x = keras.Input((None, 8), name="features")
    >>> y = keras_selfattn.MultiHeadSelfAttention(2, name="attention")(x)
    >>> model = keras.Model(x, y)
    >>> base = tempfile.mkdtemp()
    >>> path = keras_selfattn.export.export_model(model, base)
    >>> os.path.basename(path)
    '1'
    >>> loaded = tf.saved_model.load(path)
    >>> served = loaded.signatures["serving_default"]
    >>> out = served(features=tf.zeros((2, 3, 8)))
    >>> sorted(out), tuple(out["attention"].shape)
    (['attention'], (2, 3, 8))
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise _validation.invalid(
            "model",
            "a functional or Sequential keras.Model with defined inputs",
            type(model).__name__,
            TypeError,
        )
    specs = _input_specs(model)
    names = _output_names(model)

    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0])
        if isinstance(outputs, dict):  # named by the model itself
            return {name: _float32(out) for name, out in outputs.items()}
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {
            name: _float32(out)
            for name, out in zip(names, outputs, strict=True)
        }

    def write(path):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serve, input_signature=specs)
        archive.write_out(path, verbose=False)

    return _publish(write, export_dir, version, overwrite)


def export_classifier(
    classifier,
    tokenizer,
    export_dir,
    label_names=None,
    version=None,
    overwrite=False,
):
    """Export a text classifier that takes raw strings.

    Signatures:

    - `serving_default`: `text` (string, `(batch,)`) → `label` (string),
      `label_id` (int64), `probabilities` (float32, `(batch, classes)`).
      Tokenization (tensorflow-text WordPiece) runs inside the graph; an empty
      string gives valid probabilities; text longer than the tokenizer's
      `sequence_length` is truncated (its first tokens are kept); invalid
      UTF-8 bytes are replaced, never an error.
    - `token_ids`: `token_ids` (int32, `(batch, length)`, 0 = padding) →
      the same outputs, for clients that tokenize themselves.

    Args:
        classifier: `keras.Model` from token ids to class probabilities
            (e.g. `build_text_classifier`).
        tokenizer: the `WordPieceTokenizer` the classifier was trained with.
        export_dir: str, the base folder (versions go in sub-folders).
        label_names: list of str, one per class. Defaults to the class ids
            as strings.
        version: int or `None`. Defaults to the next version number.
        overwrite: bool, replace an existing version. Defaults to `False`.

    Returns:
        The path of the written version.
    """
    num_classes = int(classifier.outputs[0].shape[-1])
    if label_names is None:
        label_names = [str(i) for i in range(num_classes)]
    label_names = [str(n) for n in label_names]
    if len(label_names) != num_classes:
        raise _validation.invalid(
            "label_names",
            f"{num_classes} names (one per class)",
            label_names,
        )

    def answer(probabilities):
        probabilities = tf.cast(probabilities, tf.float32)
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        labels = tf.gather(tf.constant(label_names), label_id)
        return {
            "label": labels,
            "label_id": label_id,
            "probabilities": probabilities,
        }

    def from_text(text):
        return answer(classifier(tokenizer(text)))

    def from_ids(token_ids):
        return answer(classifier(token_ids))

    def write(path):
        archive = keras.export.ExportArchive()
        archive.track(classifier)
        archive.track(tokenizer)
        archive.add_endpoint(
            "serving_default",
            from_text,
            input_signature=[tf.TensorSpec((None,), tf.string, name="text")],
        )
        archive.add_endpoint(
            "token_ids",
            from_ids,
            input_signature=[
                tf.TensorSpec((None, None), tf.int32, name="token_ids")
            ],
        )
        archive.write_out(path, verbose=False)

    return _publish(write, export_dir, version, overwrite)


def export_text_generator(generator, export_dir, version=None, overwrite=False):
    """Export a raw-strings-in, strings-out generator (translation,
    summarization).

    `serving_default`: `text` (string, `(batch,)`) → `text` (string,
    `(batch,)`), decoding (greedy or beam, as configured on `generator`)
    inside the graph.

    Args:
        generator: a layer or callable mapping a string batch to a string
            batch (e.g. `keras_selfattn.models.TextGenerator`).
        export_dir: str, the base folder (versions go in sub-folders).
        version: int or `None`. Defaults to the next version number.
        overwrite: bool, replace an existing version. Defaults to `False`.

    Returns:
        The path of the written version.
    """

    def generate(text):
        return {"text": generator(text)}

    def write(path):
        archive = keras.export.ExportArchive()
        archive.track(generator)
        archive.add_endpoint(
            "serving_default",
            generate,
            input_signature=[tf.TensorSpec((None,), tf.string, name="text")],
        )
        archive.write_out(path, verbose=False)

    return _publish(write, export_dir, version, overwrite)
