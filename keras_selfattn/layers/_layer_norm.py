"""Layer normalization with a hand-written backward pass, for the blocks.

`keras.layers.LayerNormalization` differentiates its forward graph op by
op: about twenty small passes over the `(B, T, D)` activations per
normalization, forward and backward, which cost as much as a sixth of a
Transformer block's training step on a CPU. The analytic gradient

    dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),  g = dy * gamma

needs a handful, from the normalized values and `rstd` kept by the forward
pass. Same weights, the same compute dtype as Keras (float32, also under
mixed precision; float64 for float64), the same results to rounding.
"""

import keras
from keras import ops


def layer_norm(x, gamma, beta, epsilon):
    """`(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis.

    Args:
        x: float `(..., D)` (float32 or float64).
        gamma: `(D,)` tensor of `x`'s dtype (not a variable).
        beta: `(D,)` tensor of `x`'s dtype (not a variable).
        epsilon: float, added to the variance.

    Returns:
        `(..., D)`, in `x`'s dtype.
    """

    @ops.custom_gradient
    def normalize(x, gamma, beta):
        mean = ops.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        rstd = ops.rsqrt(variance + epsilon)
        normalized = centered * rstd
        y = normalized * gamma + beta

        def grad(*args, upstream=None):
            if upstream is None:
                upstream = args[0]
            g = upstream * gamma
            d_x = rstd * (
                g
                - ops.mean(g, axis=-1, keepdims=True)
                - normalized * ops.mean(g * normalized, axis=-1, keepdims=True)
            )
            rows = ops.reshape(upstream, (-1, upstream.shape[-1]))
            d_gamma = ops.sum(
                rows * ops.reshape(normalized, ops.shape(rows)), axis=0
            )
            d_beta = ops.sum(rows, axis=0)
            return d_x, d_gamma, d_beta

        return y, grad

    return normalize(x, gamma, beta)


class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis (with scale and
    offset, as the blocks build it) with `layer_norm`'s backward pass.

    The weights (`gamma`, `beta`) and their paths are Keras' own, so
    checkpoints are interchangeable with the stock layer; other settings
    fall back to the stock computation.
    """

    def call(self, inputs):
        axis = self.axis if isinstance(self.axis, int) else None
        if isinstance(self.axis, (list, tuple)) and len(self.axis) == 1:
            axis = self.axis[0]
        last = axis is not None and axis in (-1, len(inputs.shape) - 1)
        if not (last and self.center and self.scale) or self.rms_scaling:
            return super().call(inputs)
        # float32 for float16/bfloat16/float32 inputs, float64 for float64,
        # as Keras. Variables are read as tensors first: a custom gradient
        # may not capture them.
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        outputs = layer_norm(
            ops.cast(inputs, dtype),
            ops.cast(self.gamma, dtype),
            ops.cast(self.beta, dtype),
            self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


class RMSNormalization(keras.layers.RMSNormalization):
    """`keras.layers.RMSNormalization` (`x / sqrt(mean(x**2) + epsilon) *
    scale`, no centering, no offset) computed in float32 under mixed
    precision, as `LayerNormalization` is: a float16 `mean(x**2)` overflows
    once activations pass 256. Per position, so it passes a Keras mask on
    (Keras' own does not declare it, and warns when a masked tensor
    enters it, as in a pre-norm block)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_masking = True

    def call(self, x):
        dtype = keras.backend.result_type(x.dtype, "float32")
        outputs = ops.rms_normalization(
            ops.cast(x, dtype),
            scale=ops.cast(self.scale, dtype),
            axis=self.axis,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)
