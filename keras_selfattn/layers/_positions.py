"""Relative positions inside attention: rotary embeddings and ALiBi slopes.

Both depend only on the distance `i - j` between a query and a key, so a
sequence padded on the left (the pads masked) attends exactly as the
unpadded one, and a cached decoding step at position `p` equals the full
call's row `p`.
"""

import math

import numpy as np
from keras import ops


def rotary_dim(head_dim, fraction):
    """The even number of leading features of a head that rotate."""
    return int(head_dim * fraction) // 2 * 2


def apply_rotary(x, positions, max_wavelength, scaling_factor, dim=None):
    """Rotate feature pairs `(k, k + d/2)` of `x` by `position * theta_k`.

    RoFormer's rotary embedding in the half-split layout of GPT-NeoX, Llama
    and KerasHub's `RotaryEmbedding`: `theta_k = max_wavelength^(-2k/d) /
    scaling_factor` for `k < d/2`. Computed in float32.

    Args:
        x: `(B, N, T, H)`.
        positions: int or float `(B|1, T)`, each step's absolute position.
        max_wavelength: float, the longest wavelength.
        scaling_factor: float, divides the frequencies (linear position
            interpolation for longer contexts).
        dim: int or `None`: rotate only the first `dim` (even) features
            of each head, pass the rest (partial rotary); `None`: all.

    Returns:
        `x` rotated, in `x`'s dtype.
    """
    head_dim = x.shape[-1]
    dim = head_dim if dim is None else dim
    inverse_freq = ops.power(
        float(max_wavelength),
        -ops.arange(0, dim, 2, dtype="float32") / float(dim),
    ) / float(scaling_factor)  # (d/2,)
    angles = ops.cast(positions, "float32")[..., None] * inverse_freq
    angles = ops.concatenate([angles, angles], axis=-1)[:, None]  # (B,1,T,d)
    cos, sin = ops.cos(angles), ops.sin(angles)
    rotated = ops.cast(x[..., :dim], "float32")
    first, second = ops.split(rotated, 2, axis=-1)
    half_turn = ops.concatenate([-second, first], axis=-1)
    rotated = ops.cast(rotated * cos + half_turn * sin, x.dtype)
    if dim == head_dim:
        return rotated
    return ops.concatenate([rotated, x[..., dim:]], axis=-1)


def alibi_slopes(num_heads):
    """Press et al.'s per-head ALiBi slopes, float32 `(num_heads,)`.

    For `n` a power of two, the geometric sequence `2^(-8/n), 2^(-16/n),
    ...`; otherwise the slopes of the closest smaller power of two `m`,
    then every other slope of `2m`, as in the paper's code.
    """

    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        extra = power_of_two(2 * closest)[0::2][: num_heads - closest]
        slopes = power_of_two(closest) + extra
    return np.asarray(slopes, dtype="float32")
