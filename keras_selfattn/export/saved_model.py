"""SavedModels for TensorFlow Serving: versioned, atomic, clearly signed.

Needs TensorFlow, imported with this module (which `keras_selfattn.export`
loads on first access to one of its names).
"""

import datetime
import json
import os
import shutil
import uuid

import keras
import tensorflow as tf

from keras_selfattn.export import _guards
from keras_selfattn.layers import _validation
from keras_selfattn.version import __version__

# Each published version's record, next to its SavedModel. TF Serving
# ignores `assets.extra/` (but for warm-up requests it may hold).
METADATA_PATH = os.path.join("assets.extra", "metadata.json")


def _next_version(export_dir):
    versions = [
        int(name)
        for name in os.listdir(export_dir)
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    ]
    return max(versions, default=0) + 1


def _check_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _validation.invalid(
            "metadata",
            "a dict (JSON-serializable) or None",
            metadata,
            TypeError,
        )
    try:
        # allow_nan=False: NaN is not JSON, and a metric that is NaN must
        # be seen, not written as an invalid file.
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise _validation.invalid(
            "metadata",
            f"a JSON-serializable dict with finite numbers ({error})",
            metadata,
            TypeError,
        ) from None
    return dict(metadata)


def _check_limit(name, value):
    return _validation.positive_int(name, value, allow_none=True)


def _publish(write, export_dir, version, overwrite, metadata, exported):
    """Write a SavedModel with `write(path)` into `<export_dir>/<version>`,
    with its record (`exported`: the exporter's own facts, such as its
    `signatures`, then the caller's `metadata`) in
    `<version>/assets.extra/metadata.json`.

    The model is written to a hidden temporary folder next to its final
    place and renamed into place at the end, so a server polling
    `export_dir` never sees a half-written version, nor one without its
    record.
    """
    metadata = _check_metadata(metadata)
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
        record = {
            "version": version,
            "exported_at": datetime.datetime.now(
                datetime.timezone.utc
            ).isoformat(timespec="seconds"),
            "keras_selfattn_version": __version__,
            **exported,
            **metadata,
        }
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, METADATA_PATH), "w") as f:
            json.dump(record, f, indent=2)
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


def _any_shape(specs):
    """The signature's inputs, declared with any shape.

    The shapes a signature declares are not checked when TF Serving (or
    any C API client) feeds it, yet Grappler optimizes the graph as if they
    held (it removes a "redundant" reshape, folds a rank), which would
    defeat the in-graph checks of `_guards`. Declared with an unknown shape,
    the input is what the request sent until the checks have passed; the
    model then sees the checked tensor with its static shape.
    """
    return [tf.TensorSpec(None, spec.dtype, name=spec.name) for spec in specs]


def export_model(
    model,
    export_dir,
    version=None,
    overwrite=False,
    metadata=None,
    max_batch_size=_guards.DEFAULT_MAX_BATCH_SIZE,
):
    """Export any Keras model built with our layers for TF Serving.

    `serving_default` takes the model's inputs by their `keras.Input`
    names and returns a dict of its outputs by layer name; float16 outputs
    (mixed precision) are cast to float32.

    Every input is checked inside the graph before the model runs: its rank
    and fixed sizes (those of `keras.Input`), 1 to `max_batch_size` rows,
    and, for float inputs, finite values. A malformed request fails with
    `INVALID_ARGUMENT` and a message naming the input (TF Serving answers
    it with HTTP 400), never with a crash.

    Args:
        model: a functional or Sequential `keras.Model` (its `inputs` must be
            defined).
        export_dir: str, the model's base folder; versions go in numbered
            sub-folders, as TF Serving expects.
        version: int or `None`. Defaults to the next version number.
        overwrite: bool, replace an existing version. Defaults to `False`.
        metadata: dict or `None`, JSON-serializable facts about this version
            (test metrics, label names, the training run), written with the
            export's own record (`version`, `exported_at`,
            `keras_selfattn_version`, `signatures`) to
            `<version>/assets.extra/metadata.json` before the version
            appears, so an operator can compare versions
            (`published_versions`) before TF Serving serves the highest.
            Defaults to `None`.
        max_batch_size: int or `None`, the most rows one request may hold;
            larger requests are refused (`None`: no limit). Defaults to
            `1024`.

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
    >>> path = keras_selfattn.export.export_model(
    ...     model, base, metadata={"test_loss": 0.25})
    >>> os.path.basename(path)
    '1'
    >>> loaded = tf.saved_model.load(path)
    >>> served = loaded.signatures["serving_default"]
    >>> out = served(features=tf.zeros((2, 3, 8)))
    >>> sorted(out), tuple(out["attention"].shape)
    (['attention'], (2, 3, 8))
    >>> try:
    ...     served(features=tf.fill((1, 3, 8), float("nan")))
    ... except tf.errors.InvalidArgumentError as error:
    ...     message = error.message
    >>> "input `features`, expected finite values" in message
    True
    >>> keras_selfattn.export.published_versions(base)[0]["test_loss"]
    0.25
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise _validation.invalid(
            "model",
            "a functional or Sequential keras.Model with defined inputs",
            type(model).__name__,
            TypeError,
        )
    max_batch_size = _check_limit("max_batch_size", max_batch_size)
    specs = _input_specs(model)
    names = _output_names(model)

    def serve(*inputs):
        inputs = [
            _guards.check_tensor(x, spec.name, spec, max_batch_size)
            for x, spec in zip(inputs, specs, strict=True)
        ]
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
        archive.add_endpoint(
            "serving_default", serve, input_signature=_any_shape(specs)
        )
        archive.write_out(path, verbose=False)

    signatures = {
        "serving_default": {
            "inputs": {
                s.name: f"{s.dtype.name} {_guards.describe_shape(s.shape)}"
                for s in specs
            },
            "max_batch_size": max_batch_size,
        }
    }
    return _publish(
        write,
        export_dir,
        version,
        overwrite,
        metadata,
        {"signatures": signatures},
    )


def export_classifier(
    classifier,
    tokenizer,
    export_dir,
    label_names=None,
    version=None,
    overwrite=False,
    metadata=None,
    max_batch_size=_guards.DEFAULT_MAX_BATCH_SIZE,
    max_text_bytes=_guards.DEFAULT_MAX_TEXT_BYTES,
):
    """Export a text classifier that takes raw strings.

    Signatures:

    - `serving_default`: `text` (string, `(batch,)`) → `label` (string),
      `label_id` (int64), `probabilities` (float32, `(batch, classes)`).
      Tokenization (tensorflow-text WordPiece or SentencePiece) runs inside
      the graph; an empty string gives valid probabilities; text longer
      than the tokenizer's `sequence_length` is truncated (its first tokens
      are kept); invalid UTF-8 bytes are replaced, never an error.
    - `token_ids`: `token_ids` (int32, `(batch, length)`, 0 = padding,
      `1 <= length <= sequence_length`, ids below the vocabulary size) →
      the same outputs, for clients that tokenize themselves.

    Both signatures check their input inside the graph first (rank, 1 to
    `max_batch_size` rows, string length, id range): a malformed request
    (a single string instead of a batch, a batch of batches, an empty
    batch, an id outside the vocabulary) fails with `INVALID_ARGUMENT` and
    a message naming the input, never with a crash.

    Args:
        classifier: `keras.Model` from token ids to class probabilities
            (e.g. `build_text_classifier`).
        tokenizer: the `WordPieceTokenizer` or `SentencePieceTokenizer` the
            classifier was trained with.
        export_dir: str, the base folder (versions go in sub-folders).
        label_names: list of str, one per class. Defaults to the class ids
            as strings.
        version: int or `None`. Defaults to the next version number.
        overwrite: bool, replace an existing version. Defaults to `False`.
        metadata: dict or `None`, JSON-serializable facts about this version
            (test metrics, label names, the training run), written with the
            export's own record (`version`, `exported_at`,
            `keras_selfattn_version`, `signatures`) to
            `<version>/assets.extra/metadata.json` before the version
            appears, so an operator can compare versions
            (`published_versions`) before TF Serving serves the highest.
            Defaults to `None`.
        max_batch_size: int or `None`, the most rows one request may hold;
            larger requests are refused (`None`: no limit). Defaults to
            `1024`.
        max_text_bytes: int or `None`, the longest string (UTF-8 bytes) a
            request may hold (`None`: no limit). Defaults to `100000`.

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
    max_batch_size = _check_limit("max_batch_size", max_batch_size)
    max_text_bytes = _check_limit("max_text_bytes", max_text_bytes)
    vocabulary_size = int(tokenizer.vocabulary_size)
    max_length = tokenizer.sequence_length
    if max_length is None and len(classifier.inputs[0].shape) == 2:
        max_length = classifier.inputs[0].shape[1]

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
        text = _guards.check_strings(
            text, "text", max_batch_size, max_text_bytes
        )
        return answer(classifier(tokenizer(text)))

    def from_ids(token_ids):
        token_ids = _guards.check_token_ids(
            token_ids, "token_ids", max_batch_size, vocabulary_size, max_length
        )
        return answer(classifier(token_ids))

    def write(path):
        archive = keras.export.ExportArchive()
        archive.track(classifier)
        archive.track(tokenizer)
        archive.add_endpoint(
            "serving_default",
            from_text,
            input_signature=[tf.TensorSpec(None, tf.string, name="text")],
        )
        archive.add_endpoint(
            "token_ids",
            from_ids,
            input_signature=[tf.TensorSpec(None, tf.int32, name="token_ids")],
        )
        archive.write_out(path, verbose=False)

    signatures = {
        "serving_default": {
            "inputs": {"text": "string (batch_size,)"},
            "max_batch_size": max_batch_size,
            "max_text_bytes": max_text_bytes,
        },
        "token_ids": {
            "inputs": {"token_ids": "int32 (batch_size, length)"},
            "max_batch_size": max_batch_size,
            "max_length": max_length,
            "vocabulary_size": vocabulary_size,
        },
    }
    exported = {"signatures": signatures, "label_names": label_names}
    return _publish(write, export_dir, version, overwrite, metadata, exported)


def export_text_generator(
    generator,
    export_dir,
    version=None,
    overwrite=False,
    metadata=None,
    max_batch_size=_guards.DEFAULT_MAX_BATCH_SIZE,
    max_text_bytes=_guards.DEFAULT_MAX_TEXT_BYTES,
):
    """Export a raw-strings-in, strings-out generator (translation,
    summarization).

    `serving_default`: `text` (string, `(batch,)`) → `text` (string,
    `(batch,)`), decoding (greedy or beam, as configured on `generator`)
    inside the graph. The input is checked inside the graph first (rank 1,
    1 to `max_batch_size` rows, string length): a malformed request fails
    with `INVALID_ARGUMENT` and a message naming `text`, never with a
    crash.

    Args:
        generator: a layer or callable mapping a string batch to a string
            batch (e.g. `keras_selfattn.models.TextGenerator`).
        export_dir: str, the base folder (versions go in sub-folders).
        version: int or `None`. Defaults to the next version number.
        overwrite: bool, replace an existing version. Defaults to `False`.
        metadata: dict or `None`, JSON-serializable facts about this version
            (test metrics, label names, the training run), written with the
            export's own record (`version`, `exported_at`,
            `keras_selfattn_version`, `signatures`) to
            `<version>/assets.extra/metadata.json` before the version
            appears, so an operator can compare versions
            (`published_versions`) before TF Serving serves the highest.
            Defaults to `None`.
        max_batch_size: int or `None`, the most rows one request may hold;
            larger requests are refused (`None`: no limit). Defaults to
            `1024`.
        max_text_bytes: int or `None`, the longest string (UTF-8 bytes) a
            request may hold (`None`: no limit). Defaults to `100000`.

    Returns:
        The path of the written version.
    """
    max_batch_size = _check_limit("max_batch_size", max_batch_size)
    max_text_bytes = _check_limit("max_text_bytes", max_text_bytes)

    def generate(text):
        text = _guards.check_strings(
            text, "text", max_batch_size, max_text_bytes
        )
        return {"text": generator(text)}

    def write(path):
        archive = keras.export.ExportArchive()
        archive.track(generator)
        archive.add_endpoint(
            "serving_default",
            generate,
            input_signature=[tf.TensorSpec(None, tf.string, name="text")],
        )
        archive.write_out(path, verbose=False)

    signatures = {
        "serving_default": {
            "inputs": {"text": "string (batch_size,)"},
            "max_batch_size": max_batch_size,
            "max_text_bytes": max_text_bytes,
        }
    }
    return _publish(
        write,
        export_dir,
        version,
        overwrite,
        metadata,
        {"signatures": signatures},
    )


def published_versions(export_dir):
    """The versions published in `export_dir`, oldest first, each with its
    record.

    Read this before TF Serving picks up a new version (it serves the
    highest number): each record holds what `metadata` was given at export
    (the examples put their test metrics there) and the export's own facts.

    Args:
        export_dir: str, a base folder of `export_model`,
            `export_classifier` or `export_text_generator`.

    Returns:
        A list of dicts, one per numbered version folder: its record
        (`{}` for a version exported without one, e.g. by another tool)
        plus `version` (int) and `path`.
    """
    export_dir = os.fspath(export_dir)
    if not os.path.isdir(export_dir):
        return []
    found = []
    for name in os.listdir(export_dir):
        path = os.path.join(export_dir, name)
        if not (name.isdigit() and os.path.isdir(path)):
            continue
        record = {}
        meta = os.path.join(path, METADATA_PATH)
        if os.path.exists(meta):
            with open(meta) as f:
                record = json.load(f)
        found.append({**record, "version": int(name), "path": path})
    return sorted(found, key=lambda r: r["version"])
