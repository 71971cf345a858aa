"""Masking helpers shared by the attention layers.

One convention everywhere: boolean masks, `True` means "attend / keep".
Scores are *selected* away with `ops.where` (never shifted by adding a
constant), and probabilities are zeroed afterwards, so a query row with no
valid key gives exact zeros and finite gradients instead of an average over
padding. Softmax always runs in float32, so the "very negative" constant can
never overflow in float16.
"""

from keras import ops

try:  # The attribute helpers Keras uses itself (they also cover tensors
    # that refuse new attributes); fall back to the plain attribute.
    from keras.src.backend.common.masking import get_keras_mask
    from keras.src.backend.common.masking import set_keras_mask
except ImportError:  # pragma: no cover - older/newer private layout

    def get_keras_mask(x):
        return getattr(x, "_keras_mask", None)

    def set_keras_mask(x, mask):
        try:
            x._keras_mask = mask
        except AttributeError:
            pass


# Large enough to vanish after exp() in float32, small enough to stay finite.
_MASKED_SCORE = -1e9


def resolve_mask(inputs, mask):
    """The padding mask for `inputs`: the explicit one, else its Keras mask.

    Keras fills `mask` automatically only when `call` receives one tensor;
    with a second tensor argument it arrives as `None`, so we always fall
    back to the mask carried by the input itself.
    """
    if mask is None:
        mask = get_keras_mask(inputs)
    return mask


def check_padding_mask(name, mask, inputs):
    """Validate a `(batch_size, seq_len)` mask against `inputs`; cast to bool.

    Returns `None` when `mask` is `None`.
    """
    if mask is None:
        return None
    if not hasattr(mask, "shape"):  # a nested list
        mask = ops.convert_to_tensor(mask)
    mask_shape = tuple(mask.shape)
    input_shape = tuple(inputs.shape)
    if len(mask_shape) != 2 or not _compatible(mask_shape, input_shape[:2]):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"mask of shape (batch_size, seq_len) = {input_shape[:2]}. "
            f"Received: {name}.shape={mask_shape}"
        )
    return ops.cast(mask, "bool")


def check_attention_mask(name, attention_mask, query_shape, key_shape):
    """Validate a `(batch_size, T_q, T_k)` attention mask; cast to bool.

    A leading batch dimension of 1 broadcasts over the batch.
    """
    if attention_mask is None:
        return None
    if not hasattr(attention_mask, "shape"):  # a nested list
        attention_mask = ops.convert_to_tensor(attention_mask)
    shape = tuple(attention_mask.shape)
    expected = (query_shape[0], query_shape[1], key_shape[1])
    ok = len(shape) == 3 and _compatible(shape[1:], expected[1:])
    ok = ok and (shape[0] == 1 or _compatible(shape[:1], expected[:1]))
    if not ok:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"mask of shape (batch_size, query_len, key_len) = {expected}. "
            f"Received: {name}.shape={shape}"
        )
    return ops.cast(attention_mask, "bool")


def _compatible(shape, expected):
    """True when two static shapes agree wherever both are known."""
    if len(shape) != len(expected):
        return False
    return all(
        a is None or b is None or a == b
        for a, b in zip(shape, expected, strict=True)
    )


def band_mask(query_len, key_len, causal=False, window=None, query_offset=0):
    """A `(query_len, key_len)` bool mask for causal and/or window limits.

    Query `i` sits at absolute position `i + query_offset` (for incremental
    decoding), key `j` at position `j`. `causal` keeps `j <= i`; `window=w`
    keeps `|i - j| <= w` (with `causal`, `i - w <= j <= i`). Returns `None`
    when neither limit is set.
    """
    if not causal and window is None:
        return None
    rows = ops.arange(query_len, dtype="int32")[:, None] + query_offset
    cols = ops.arange(key_len, dtype="int32")[None, :]
    allowed = None
    if causal:
        allowed = ops.greater_equal(rows, cols)
    if window is not None:
        near = ops.less_equal(ops.abs(rows - cols), window)
        allowed = near if allowed is None else ops.logical_and(allowed, near)
    return allowed


def merge_masks(*masks):
    """Logical AND of broadcastable bool masks, skipping `None`s."""
    merged = None
    for mask in masks:
        if mask is None:
            continue
        merged = mask if merged is None else ops.logical_and(merged, mask)
    return merged


def attention_mask_from(
    query_mask=None,
    key_mask=None,
    attention_mask=None,
    band=None,
):
    """Combine padding, explicit and band masks into `(B|1, T_q, T_k)`.

    Args:
        query_mask: bool `(batch_size, T_q)` or `None`.
        key_mask: bool `(batch_size, T_k)` or `None`.
        attention_mask: bool `(batch_size|1, T_q, T_k)` or `None`.
        band: bool `(T_q, T_k)` from `band_mask`, or `None`.

    Returns:
        A bool tensor broadcastable to `(batch_size, T_q, T_k)`, or `None`
        when nothing is masked.
    """
    return merge_masks(
        None if query_mask is None else ops.expand_dims(query_mask, 2),
        None if key_mask is None else ops.expand_dims(key_mask, 1),
        attention_mask,
        None if band is None else ops.expand_dims(band, 0),
    )


def masked_softmax(scores, mask=None, axis=-1):
    """Softmax over `axis` in float32 that selects masked scores away.

    Args:
        scores: float tensor of attention logits, any dtype.
        mask: bool tensor broadcastable to `scores` (True = keep), or `None`.
        axis: the key axis.

    Returns:
        float32 probabilities; entries where `mask` is False are exactly 0, so
        a row with no valid key is all zeros (and its gradient is zero).
    """
    # float32 even under mixed precision: exp() of fp16 logits overflows.
    scores = ops.cast(scores, "float32")
    if mask is not None:
        # Select, don't add: an additive -1e4 turns a fully padded row into a
        # uniform average over padding, and -1e9 overflows float16 to -inf.
        scores = ops.where(mask, scores, _MASKED_SCORE)
    # The max is a constant shift for stability; it carries no gradient.
    shifted = scores - ops.stop_gradient(
        ops.max(scores, axis=axis, keepdims=True)
    )
    exps = ops.exp(shifted)
    if mask is not None:
        # Zero before summing, so a row with no valid key sums to 0 and gives
        # 0 probabilities rather than a uniform row.
        exps = ops.where(mask, exps, 0.0)
    total = ops.sum(exps, axis=axis, keepdims=True)
    # `maximum` keeps an all-masked row at 0 / tiny = 0 with finite gradient.
    return exps / ops.maximum(total, 1e-30)


def fused_masked_softmax(scores, mask=None, axis=-1):
    """`masked_softmax` built on the backend's fused `ops.softmax`.

    Same result and semantics (float32, select-and-zero, a row with no valid
    key gives zeros and zero gradient), in fewer passes over the scores:
    masked scores are selected to a very negative value, so their
    probabilities underflow to exactly 0 in any row with a valid key, and
    the final select zeros the rows that have none (whose softmax is
    uniform) and stops their gradient.
    """
    if scores.shape[axis] == 1:
        # `ops.softmax` warns on a length-1 axis (a single key is legal).
        return masked_softmax(scores, mask, axis)
    scores = ops.cast(scores, "float32")
    if mask is None:
        return ops.softmax(scores, axis=axis)
    probs = ops.softmax(ops.where(mask, scores, _MASKED_SCORE), axis=axis)
    return ops.where(mask, probs, 0.0)


def any_valid(mask, axis=-1, keepdims=True):
    """Whether each row of a bool mask keeps at least one entry."""
    return ops.any(mask, axis=axis, keepdims=keepdims)


def zero_masked_positions(x, mask):
    """Set `x[b, t, :]` to 0 where the `(batch_size, seq_len)` mask is False."""
    if mask is None:
        return x
    return ops.where(ops.expand_dims(mask, 2), x, ops.zeros_like(x))
