"""Mask-aware pooling of a sequence to one vector per example."""

import keras
import numpy as np
from keras import ops

from keras_selfattn.layers import _masking
from keras_selfattn.layers import _validation

_MODES = ("mean", "max", "first", "last")


@keras.saving.register_keras_serializable(package="keras_selfattn")
class SequencePooling(keras.layers.Layer):
    """Pools `(batch, seq_len, features)` to `(batch, features)`, honouring
    the padding mask.

    - `mode="mean"`: the average over valid positions,
      `sum_t m_t x_t / sum_t m_t`.
    - `mode="max"`: the element-wise maximum over valid positions.
    - `mode="first"`: the first valid position (a `[CLS]`-style token).
    - `mode="last"`: the last valid position (for causal models).

    `keras.layers.GlobalAveragePooling1D` divides by the number of valid
    positions, so a fully padded row (an empty input string) gives NaN; this
    layer gives zeros for such a row in every mode, with finite gradients.

    Args:
        mode: str, one of `"mean"`, `"max"`, `"first"`, `"last"`. Defaults to
            `"mean"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(batch_size, seq_len, features)`.
        mask: optional bool tensor of shape `(batch_size, seq_len)`, `True`
            for real tokens. Defaults to the Keras mask carried by `inputs`;
            with no mask every position is valid.

    Returns:
        A tensor of shape `(batch_size, features)`.

    Masking:
        Consumes the padding mask and emits no mask (the time axis is gone).
        A row with no valid position gives zeros.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn import SequencePooling
    >>> x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    >>> mask = np.array([[True, True, False], [False, False, False]])
    >>> mean = ops.convert_to_numpy(SequencePooling("mean")(x, mask=mask))
    >>> bool(np.allclose(mean[0], x[0, :2].mean(axis=0)))
    True
    >>> bool(np.all(mean[1] == 0))  # an empty row: zeros, not NaN
    True
    >>> last = ops.convert_to_numpy(SequencePooling("last")(x, mask=mask))
    >>> bool(np.all(last[0] == x[0, 1]))
    True

    References:
        - [`keras.layers.GlobalAveragePooling1D`](
          https://keras.io/api/layers/pooling_layers/global_average_pooling1d/),
          whose masked mean divides by zero on an empty row.
    """

    def __init__(self, mode="mean", **kwargs):
        mode = _validation.one_of("mode", mode, _MODES)
        super().__init__(**kwargs)
        self.mode = mode
        self.supports_masking = True
        # No weights: built now, as Keras' stateless layers (`Dropout`), so
        # no `build` runs and the shape checks live in `call` and
        # `compute_output_shape`. Not for a subclass that defines `build`:
        # Keras would never call it.
        self.built = type(self).build is keras.layers.Layer.build

    def call(self, inputs, mask=None):
        _validation.sequence_shape("inputs", inputs.shape, self.name)
        mask = _masking.check_padding_mask(
            "mask", _masking.resolve_mask(inputs, mask), inputs
        )
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        valid = ops.expand_dims(mask, 2)  # (B, T, 1)
        zeros = ops.zeros_like(inputs)
        has_any = ops.any(mask, axis=1, keepdims=True)  # (B, 1)
        if self.mode == "mean":
            weights = ops.cast(valid, inputs.dtype)
            total = ops.sum(inputs * weights, axis=1)  # (B, D)
            count = ops.sum(weights, axis=1)  # (B, 1)
            # Divide by max(count, 1): an empty row is 0 / 1 = 0, not NaN.
            return total / ops.maximum(count, ops.ones_like(count))
        if self.mode == "max":
            # Select padded values away (not -inf: its gradient is NaN).
            lowest = ops.full_like(inputs, _lowest(inputs.dtype))
            pooled = ops.max(ops.where(valid, inputs, lowest), axis=1)
            return ops.where(has_any, pooled, ops.zeros_like(pooled))
        positions = ops.arange(ops.shape(inputs)[1], dtype="int32")[None, :]
        if self.mode == "first":
            # argmax returns the first maximum: the first valid position.
            target = ops.argmax(ops.cast(mask, "int32"), axis=1)
        else:
            # The largest valid position index (-1 marks padding).
            target = ops.argmax(ops.where(mask, positions, -1), axis=1)
        picked = ops.equal(positions, ops.cast(target, "int32")[:, None])
        # AND with the mask: an empty row picks nothing and sums to zeros.
        picked = ops.logical_and(picked, mask)[:, :, None]  # (B, T, 1)
        return ops.sum(ops.where(picked, inputs, zeros), axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        # Functional models infer shapes here, without running `call`.
        _validation.sequence_shape("inputs", input_shape, self.name)
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _lowest(dtype):
    """The most negative finite value of a float dtype."""
    name = keras.backend.standardize_dtype(dtype)
    if name == "bfloat16":
        return -3.3895313892515355e38
    return float(np.finfo(name).min)
