"""Rotary position embedding (RoPE) as a layer."""

import keras
from keras import ops

from keras_selfattn.layers import _positions
from keras_selfattn.layers import _validation


@keras.saving.register_keras_serializable(package="keras_selfattn")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding: rotate feature pairs by their position.

    For a feature vector `x` at position `p`, each pair `(x_k, x_{k+d/2})`
    (`d` the feature size, `k < d/2`) is rotated by the angle `p * theta_k`,
    `theta_k = max_wavelength^(-2k/d) / scaling_factor` (RoFormer; the
    half-split layout of Llama and KerasHub's `RotaryEmbedding`, with which
    it agrees on the same tensors). The dot product of a rotated query at
    position `i` and a rotated key at `j` then depends on `i - j` only.

    `MultiHeadSelfAttention(position_embedding="rotary")` applies the same
    rotation to its queries and keys, per head and with its cache; use this
    layer for attention code of your own.

    Args:
        max_wavelength: float, the longest wavelength. Defaults to `10000`.
        scaling_factor: float, divides the frequencies (linear position
            interpolation, to stretch a model to longer contexts). Defaults
            to `1.0`.
        sequence_axis: int, the axis of positions. Defaults to `1`.
        feature_axis: int, the axis of features (even size). Defaults to
            `-1`.

    Call arguments:
        inputs: a tensor with a sequence and a feature axis, e.g.
            `(batch_size, seq_len, num_heads, head_dim)`.
        start_index: int or scalar tensor, the position of the first step
            (decoding after a prefix). Defaults to `0`.
        positions: optional int `(seq_len,)` or `(batch_size, seq_len)`,
            explicit positions (overrides `start_index`).
        mask: optional bool `(batch_size, seq_len)`; passed through.

    Returns:
        `inputs` rotated, same shape and dtype.

    Masking:
        Element-wise per position: a Keras mask passes through unchanged.

    Example:

    >>> import numpy as np
    >>> rope = RotaryEmbedding()
    >>> q = np.random.rand(1, 6, 2, 8).astype("float32")
    >>> k = np.random.rand(1, 6, 2, 8).astype("float32")
    >>> def score(i, j, shift):
    ...     qr = rope(q, start_index=shift)
    ...     kr = rope(k, start_index=shift)
    ...     return float(np.sum(np.asarray(qr)[0, i] * np.asarray(kr)[0, j]))
    >>> bool(np.isclose(score(4, 1, 0), score(4, 1, 7), atol=1e-4))
    True

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864)
    """

    def __init__(
        self,
        max_wavelength=10000,
        scaling_factor=1.0,
        sequence_axis=1,
        feature_axis=-1,
        **kwargs,
    ):
        max_wavelength = _validation.positive_float(
            "max_wavelength", max_wavelength, finite=True
        )
        scaling_factor = _validation.positive_float(
            "scaling_factor", scaling_factor, finite=True
        )
        for name, value in (
            ("sequence_axis", sequence_axis),
            ("feature_axis", feature_axis),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise _validation.invalid(name, "an integer axis", value)
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.scaling_factor = scaling_factor
        self.sequence_axis = sequence_axis
        self.feature_axis = feature_axis
        self.supports_masking = True
        self.built = True

    def call(self, inputs, start_index=0, positions=None, mask=None):
        del mask  # element-wise per position: the Keras mask passes through
        rank = len(inputs.shape)
        sequence_axis = self.sequence_axis % rank
        feature_axis = self.feature_axis % rank
        if rank < 2 or sequence_axis == feature_axis:
            raise ValueError(
                "Received an invalid value for argument `inputs`, expected a "
                "tensor with distinct `sequence_axis` and `feature_axis` "
                f"(here {self.sequence_axis} and {self.feature_axis}). "
                f"Received: inputs.shape={inputs.shape}"
            )
        dim = inputs.shape[feature_axis]
        if dim is not None and dim % 2:
            raise ValueError(
                "Received an invalid value for argument `inputs`, expected an "
                "even size along `feature_axis` (features rotate in pairs). "
                f"Received: inputs.shape={inputs.shape}"
            )
        # (..., T, ..., F) -> (B, 1, T, F) layout: other axes go in front.
        x = ops.moveaxis(inputs, (sequence_axis, feature_axis), (-2, -1))
        shape = ops.shape(x)
        x = ops.reshape(x, (-1, 1, shape[-2], shape[-1]))
        seq_len = ops.shape(x)[2]
        if positions is None:
            positions = ops.arange(seq_len, dtype="float32")[None] + ops.cast(
                start_index, "float32"
            )
        else:
            positions = ops.cast(positions, "float32")
            if len(positions.shape) == 1:
                positions = positions[None]
            else:
                # (B, T): one row per batch element, repeated over the other
                # leading axes (moved to the batch axis above).
                repeats = ops.shape(x)[0] // ops.shape(positions)[0]
                positions = ops.repeat(positions, repeats, axis=0)
        y = _positions.apply_rotary(
            x, positions, self.max_wavelength, self.scaling_factor
        )
        y = ops.reshape(y, shape)
        return ops.moveaxis(y, (-2, -1), (sequence_axis, feature_axis))

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        return {
            **super().get_config(),
            "max_wavelength": self.max_wavelength,
            "scaling_factor": self.scaling_factor,
            "sequence_axis": self.sequence_axis,
            "feature_axis": self.feature_axis,
        }
