"""Argument checks shared by every layer, with one error template.

Every message names the argument, the expectation and what was received:

    Received an invalid value for argument `num_heads`, expected a positive
    integer. Received: num_heads=0
"""

import math
import numbers

# The attention scorers every attention layer accepts.
ATTENTION_SCORES = ("dot_product", "additive")


def invalid(name, expected, value, error=ValueError):
    """Build the standard error for argument `name`."""
    return error(
        f"Received an invalid value for argument `{name}`, expected "
        f"{expected}. Received: {name}={value!r}"
    )


def _is_int(value):
    # `bool` is an `int` subclass; `True` heads is a bug, not a count.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name, value, allow_none=False):
    """Check that `value` is a positive integer (or `None` if allowed)."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        expected = "a positive integer"
        if allow_none:
            expected += " or None"
        raise invalid(name, expected, value)
    return int(value)


def non_negative_int(name, value):
    """Check that `value` is an integer >= 0."""
    if not _is_int(value) or value < 0:
        raise invalid(name, "a non-negative integer", value)
    return int(value)


def rate(name, value):
    """Check that `value` is a float in [0, 1) (a dropout rate)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) < 1.0
    ):
        raise invalid(name, "a float in the range [0, 1)", value)
    return float(value)


def positive_float(name, value, finite=False):
    """Check that `value` is a float > 0 (an epsilon); with `finite=True`
    also not infinite."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not float(value) > 0.0
        or (finite and not math.isfinite(value))
    ):
        raise invalid(name, "a positive float", value)
    return float(value)


def non_negative_float(name, value):
    """Check that `value` is a finite float >= 0 (a time, a penalty)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise invalid(name, "a float >= 0", value)
    return float(value)


def one_of(name, value, choices):
    """Check that `value` is one of `choices` (strings)."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise invalid(name, f"one of {options}", value)
    return value


def boolean(name, value):
    """Check that `value` is a Python bool."""
    if not isinstance(value, bool):
        raise invalid(name, "a bool", value, error=TypeError)
    return value


def sequence_shape(name, shape, layer_name):
    """Check a `(batch_size, seq_len, features)` shape with known features.

    Returns the feature size.
    """
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"rank-3 tensor of shape (batch_size, seq_len, features) for "
            f"layer '{layer_name}'. Received: {name}.shape={shape}"
        )
    if shape[-1] is None:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected the "
            f"last (feature) dimension to be known when building layer "
            f"'{layer_name}'. Received: {name}.shape={shape}"
        )
    return int(shape[-1])


def key_value_heads(num_heads, num_key_value_heads):
    """`num_key_value_heads` (grouped-query attention), defaulting to
    `num_heads`; it must divide `num_heads`."""
    if num_key_value_heads is None:
        return num_heads
    num_key_value_heads = positive_int(
        "num_key_value_heads", num_key_value_heads
    )
    if num_heads % num_key_value_heads:
        raise invalid(
            "num_key_value_heads",
            f"a divisor of num_heads={num_heads} (each key/value head serves "
            "the same number of query heads)",
            num_key_value_heads,
        )
    return num_key_value_heads


# The projections of an attention layer that LoRA adapters may target.
LORA_TARGETS = ("query", "key", "value", "output")


def lora_arguments(rank, alpha, targets):
    """Validated `(lora_rank, lora_alpha, lora_targets)`."""
    if rank is not None:
        rank = positive_int("lora_rank", rank)
    if alpha is not None:
        alpha = positive_float("lora_alpha", alpha, finite=True)
    if (
        isinstance(targets, str)
        or not targets
        or not all(t in LORA_TARGETS for t in targets)
        or len(set(targets)) != len(targets)
    ):
        raise invalid(
            "lora_targets", f"distinct names among {LORA_TARGETS}", targets
        )
    return rank, alpha, tuple(targets)


# The `position_embedding` schemes of the attention layers and blocks.
POSITION_EMBEDDINGS = (None, "rotary", "alibi", "relative")


def attention_options(
    position_embedding,
    rotary_max_wavelength,
    rotary_scaling_factor,
    rotary_fraction,
    qk_norm,
    logit_soft_cap,
    relative_num_buckets=32,
    relative_max_distance=128,
):
    """Check the position and score options of an attention layer or
    block; returns them normalized, in the same order."""
    position_embedding = one_of(
        "position_embedding", position_embedding, POSITION_EMBEDDINGS
    )
    rotary_max_wavelength = positive_float(
        "rotary_max_wavelength", rotary_max_wavelength, finite=True
    )
    rotary_scaling_factor = positive_float(
        "rotary_scaling_factor", rotary_scaling_factor, finite=True
    )
    rotary_fraction = positive_float(
        "rotary_fraction", rotary_fraction, finite=True
    )
    if rotary_fraction > 1.0:
        raise invalid("rotary_fraction", "a float in (0, 1]", rotary_fraction)
    qk_norm = boolean("qk_norm", qk_norm)
    if logit_soft_cap is not None:
        logit_soft_cap = positive_float(
            "logit_soft_cap", logit_soft_cap, finite=True
        )
    relative_num_buckets = positive_int(
        "relative_num_buckets", relative_num_buckets
    )
    if relative_num_buckets < 4:
        raise invalid(
            "relative_num_buckets", "an integer >= 4", relative_num_buckets
        )
    relative_max_distance = positive_int(
        "relative_max_distance", relative_max_distance
    )
    if relative_max_distance <= relative_num_buckets // 2:
        raise invalid(
            "relative_max_distance",
            "an integer > relative_num_buckets // 2 "
            f"({relative_num_buckets // 2})",
            relative_max_distance,
        )
    return (
        position_embedding,
        rotary_max_wavelength,
        rotary_scaling_factor,
        rotary_fraction,
        qk_norm,
        logit_soft_cap,
        relative_num_buckets,
        relative_max_distance,
    )


def shared_relative_bias(value, position_embedding):
    """Check `shared_relative_bias` against `position_embedding`."""
    value = boolean("shared_relative_bias", value)
    if value and position_embedding != "relative":
        raise invalid(
            "shared_relative_bias",
            "False unless position_embedding='relative' (got "
            f"position_embedding={position_embedding!r})",
            value,
        )
    return value
