"""What every tokenizer layer does around its sub-word model: check the
string batch, frame ragged ids with start/end tokens within a length, and
strip those tokens again before detokenizing."""

import keras
import tensorflow as tf

from keras_selfattn.layers import _validation


def check_sequence_length(sequence_length, add_start_token, add_end_token):
    """A fixed `sequence_length` must leave room for a token besides the
    start and end tokens; raises the `ValueError` of `_validation`."""
    specials = int(add_start_token) + int(add_end_token)
    if sequence_length is not None and sequence_length <= specials:
        raise _validation.invalid(
            "sequence_length",
            f"an integer greater than {specials} (the start/end tokens)",
            sequence_length,
        )


def set_up_string_layer(layer):
    """What a tokenizer layer sets after `Layer.__init__`: strings in (not
    converted to floats, no XLA), the sub-word op made at first use, and
    built at once unless a subclass defines `build`."""
    # String ops cannot be compiled by XLA.
    layer.supports_jit = False
    layer._convert_input_args = False
    layer._allow_non_tensor_positional_args = True
    layer._tokenizer = None
    # No weights, nothing shape-dependent: usable (and exportable with
    # `ExportArchive.track`) before its first call. Not for a subclass
    # that defines `build`: Keras would never call it.
    layer.built = type(layer).build is keras.layers.Layer.build


def string_batch(inputs):
    """A rank-1 string tensor from `(batch_size,)` or `(batch_size, 1)`."""
    strings = tf.convert_to_tensor(inputs, dtype=tf.string)
    if strings.shape.rank == 2:
        strings = tf.squeeze(strings, axis=1)
    if strings.shape.rank != 1:
        raise ValueError(
            "Received an invalid value for argument `inputs`, expected a "
            "string tensor of shape (batch_size,) or (batch_size, 1). "
            f"Received: inputs.shape={strings.shape}"
        )
    return strings


def frame(ids, sequence_length, start_id=None, end_id=None):
    """Ragged ids `(batch_size, None)` truncated so that, with the start
    token (when `start_id` is not `None`) prepended and the end token
    appended, each row fits in `sequence_length` (`None`: no limit); the
    end token survives truncation."""
    if sequence_length is not None:
        room = sequence_length - int(start_id is not None)
        room -= int(end_id is not None)
        ids = ids[:, :room]
    batch = tf.shape(ids.row_splits)[:1] - 1
    if start_id is not None:
        start = tf.fill(tf.concat([batch, [1]], 0), start_id)
        ids = tf.concat([start, ids], axis=1)
    if end_id is not None:
        end = tf.fill(tf.concat([batch, [1]], 0), end_id)
        ids = tf.concat([ids, end], axis=1)
    return ids


def content(ids, pad_id, start_id, end_id):
    """Ids `(batch_size, seq_len)` to ragged ids without padding, start
    tokens, the first end token and everything after it."""
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
    # Everything from the first end token on is dropped.
    is_end = tf.cast(tf.equal(ids, end_id), tf.int32)
    before_end = tf.equal(tf.cumsum(is_end, axis=1), 0)
    keep = tf.logical_and(before_end, tf.not_equal(ids, pad_id))
    keep = tf.logical_and(keep, tf.not_equal(ids, start_id))
    return tf.ragged.boolean_mask(ids, keep)
