"""The attention kernels, behind one seam: `attend`.

The layers project queries, keys and values and pass them here with the
masks' parts (padding of queries and keys, an explicit mask, causal and
window limits); `attend` picks the kernel and returns the mixed values. No
layer calls a kernel directly. In `keras.ops` only (no TensorFlow:
`ops.custom_gradient`, `ops.map` and `ops.fori_loop` map to each backend's
own). The kernels, all exact (each query row's softmax sees every key it
may attend to, in float32):

- the explicit path: scores, masked softmax, dropout, value mixing, with
  Keras' automatic gradients; it returns the probabilities (for
  `return_attention_scores`) and serves additive scores and dropout.

- `dense_attention`: the whole `(B, N, T_q, T_k)` matrix, with a hand-written
  backward pass that keeps only the probabilities and takes the softmax
  Jacobian's row term from `(T, V)` values.
- `fused_attention`: the backend's `keras.ops.dot_product_attention` on
  JAX and PyTorch when on a GPU or TPU (cuDNN / flash, Splash, SDPA),
  with our contract (zeros in a row with no allowed key); only for plain
  scores (no position bias or soft-cap). Off on a CPU, where our kernels
  are faster, and on TensorFlow, whose version is not fused.
- `grouped_dense_attention` (the dense fast path): `dense_attention` on
  independent groups of batch elements, heads and query rows of about 4 MB
  of scores each, so that each group's `T x T` passes run in the CPU's
  last-level cache.
- `chunked_attention` without `window`: a loop over blocks of `block`
  queries against all keys. The forward pass keeps only the outputs; the
  backward pass recomputes each block's probabilities (FlashAttention-style),
  so peak memory is one block's `(B, N, block, T)` scores, not
  `(B, N, T, T)`. With `causal` every key is still visited (and masked).
- `chunked_attention` with `window=w`: query block `i` only visits the key
  blocks within `w` positions, gathered into a `(B, N, n_blocks, span, H)`
  tensor and run as one batched `dense_attention`; time and memory grow as
  `O(T * w)`.

The memory bounds hold on every path (traced, eager under a `GradientTape`,
`Model.fit`, XLA): the custom-gradient forward passes start from stopped
inputs (`_untaped`), so an eager tape records none of their block tensors.

Shapes: `B` batch, `N` heads, `T` length, `H` key size, `V` value size.
"""

import contextlib
import math

import keras
from keras import ops

from keras_selfattn.layers import _masking

# From this many tokens, `impl="auto"` takes the chunked kernel (its block
# loop costs a little time below; its memory is O(T) instead of O(T^2)).
CHUNKED_MIN_LENGTH = 4096

IMPLS = ("auto", "dense", "chunked")


def attend(
    query,
    key,
    value,
    *,
    query_valid=None,
    key_valid=None,
    attention_mask=None,
    causal=False,
    window=None,
    query_offset=0,
    impl="dense",
    block=None,
    need_probs=False,
    dropout=None,
    score_vector=None,
    alibi_slopes=None,
    soft_cap=None,
    relative=None,
):
    """Masked softmax attention: the one entry to the kernels.

    Args:
        query: `(B, N, T_q, H)`: dot-product queries already multiplied by
            `1 / sqrt(H)`; for additive scores, unscaled.
        key: `(B, K, T_k, H)`, `K` key/value heads dividing `N` (query head
            `h` reads key/value head `h // (N / K)`).
        value: `(B, K, T_k, V)`.
        query_valid: bool `(B, T_q)` or `None` (padding of the queries).
        key_valid: bool `(B, T_k)` or `None`.
        attention_mask: bool `(B|1, T_q, T_k)` or `None`.
        causal: bool, keep keys at positions `<=` the query's.
        window: int or `None`, keep keys within `window` positions.
        query_offset: int or scalar tensor, the position of the first query
            (a decoding step against a cache); key `j` is at position `j`.
        impl: `"dense"`, `"chunked"` (self-attention: `T_q == T_k`, no
            offset) or `"auto"` (chunked from `CHUNKED_MIN_LENGTH` tokens,
            decided at run time when the length is unknown).
        block: int or `None`, the chunked kernel's queries per block
            (`None`: sized from the shapes).
        need_probs: bool, return the probabilities (dense explicit path).
        dropout: a function applied to the probabilities before mixing, or
            `None` (then the fast dense kernel may run).
        score_vector: `(N, H)` for additive scores `v . tanh(q + k)`, or
            `None` for dot-product scores.
        alibi_slopes: float32 `(N,)` or `None`: add `-slope_h * |i - j|`
            (query at position `i`, key at `j`) to head `h`'s scores.
        soft_cap: float or `None`: scores become `cap * tanh(s / cap)`
            (after the position bias), before the softmax.
        relative: `(table, num_buckets, max_distance, bidirectional)`: add
            T5's learned bias `table[bucket(j - i), h]` (see `ScoreMod`),
            with its gradient on every path; or `None`.

    Returns:
        `(context, probs, has_key)`: `context (B, N, T_q, V)` (zeros in a
        row with no allowed key), `probs (B, N, T_q, T_k)` float32 or `None`,
        and `has_key` bool broadcastable to `(B, 1, T_q, 1)` (whether each
        row had an allowed key), or `None` when every row has one.
    """
    if _DENSE_ONLY[0]:
        # Traced for a runtime without loops over blocks (LiteRT).
        impl = "dense"
    mod = ScoreMod(alibi_slopes, soft_cap, relative)
    explicit = need_probs or dropout is not None or score_vector is not None
    if explicit or impl == "dense":
        return _dense(
            query,
            key,
            value,
            query_valid,
            key_valid,
            attention_mask,
            causal,
            window,
            query_offset,
            need_probs,
            dropout,
            score_vector,
            mod,
        )
    args = (query, key, value, query_valid, key_valid, attention_mask)

    def chunked():
        repeated = repeat_key_value(key, value, query.shape[1])
        size = block or block_size(
            query.shape[1], query.shape[0], query.shape[2], window
        )
        if query.shape[2] is not None:
            # Never pad a short sequence up to one oversized block.
            size = min(size, query.shape[2])
        context, has_key = chunked_attention(
            query,
            *repeated,
            *args[3:],
            causal=causal,
            window=window,
            block=size,
            mod=mod,
        )
        return context, has_key

    def dense():
        context, _, has_key = _dense(
            *args, causal, window, 0, False, None, None, mod
        )
        if has_key is None:
            has_key = ops.ones((1, 1, 1, 1), dtype="bool")
        return context, has_key

    length = query.shape[2]
    if impl == "chunked" or (
        length is not None and length >= CHUNKED_MIN_LENGTH
    ):
        context, has_key = chunked()
    elif length is not None:
        context, has_key = dense()
    else:
        # Unknown static length: pick the kernel at run time.
        context, has_key = ops.cond(
            ops.shape(query)[2] >= CHUNKED_MIN_LENGTH, chunked, dense
        )
    return context, None, has_key


def _dense(
    query,
    key,
    value,
    query_valid,
    key_valid,
    attention_mask,
    causal,
    window,
    query_offset,
    need_probs,
    dropout,
    score_vector,
    mod,
):
    """The dense kernels over the merged `(B|1, T_q, T_k)` mask."""
    band = _masking.band_mask(
        ops.shape(query)[2],
        ops.shape(key)[2],
        causal,
        window,
        query_offset=query_offset,
    )
    mask = _masking.attention_mask_from(
        query_mask=query_valid,
        key_mask=key_valid,
        attention_mask=attention_mask,
        band=band,
    )  # (B|1, T_q, T_k) or None
    head_mask = None if mask is None else ops.expand_dims(mask, 1)
    has_key = None
    if mask is not None:
        has_key = ops.any(head_mask, axis=-1, keepdims=True)  # (B|1,1,Tq,1)
    bias = mod.bias(
        query_offset + ops.arange(ops.shape(query)[2], dtype="int32"),
        ops.arange(ops.shape(key)[2], dtype="int32"),
    )  # (1, N, T_q, T_k) float32, or None
    if not (need_probs or dropout is not None or score_vector is not None):
        if _fused_backend() and not mod.active:
            # The backend's own kernel (cuDNN / flash, Splash, SDPA).
            context = fused_attention(query, key, value, head_mask)
            return context, None, has_key
        # The fast dense path: a hand-written backward pass, and grouped
        # query heads read their shared key/value head without copies.
        context = grouped_dense_attention(
            query, key, value, head_mask, bias, mod.soft_cap, mod.learned
        )
        return context, None, has_key
    key, value = repeat_key_value(key, value, query.shape[1])
    if score_vector is None:
        scores = ops.einsum("bnqh,bnkh->bnqk", query, key)  # (B,N,Tq,Tk)
    else:
        # v^T tanh(q_i + k_j): (B, N, T_q, 1, H) + (B, N, 1, T_k, H).
        hidden = ops.tanh(query[:, :, :, None, :] + key[:, :, None, :, :])
        scores = ops.einsum("bnqkh,nh->bnqk", hidden, score_vector)
    scores, _ = mod.apply(scores, bias)  # float32
    # float32 softmax with select-and-zero (see _masking).
    probs = _masking.fused_masked_softmax(scores, head_mask)
    mixed = ops.cast(probs, query.dtype)
    if dropout is not None:
        mixed = dropout(mixed)
    context = ops.einsum("bnqk,bnkv->bnqv", mixed, value)
    return context, probs, has_key


# Set while tracing for LiteRT (`dense_kernels()`): every attention takes
# the dense kernel, whose ops all have LiteRT builtins (the chunked kernel's
# block loop keeps per-block tensors in TensorLists, which do not).
_DENSE_ONLY = [False]


@contextlib.contextmanager
def dense_kernels():
    """Within this context, `attend` always takes the dense kernel (the
    same maths as the chunked one, with `O(T^2)` memory)."""
    previous = _DENSE_ONLY[0]
    _DENSE_ONLY[0] = True
    try:
        yield
    finally:
        _DENSE_ONLY[0] = previous


# Backends whose `keras.ops.dot_product_attention` dispatches to a fused
# kernel where the hardware has one (JAX: cuDNN on GPU, Splash on TPU;
# PyTorch: `scaled_dot_product_attention`). TensorFlow's is a composite of
# ordinary ops, slower on a CPU than `grouped_dense_attention`.
FUSED_BACKENDS = ("jax", "torch")

# `None`: the fused path on an accelerator only. On a CPU, JAX's
# `dot_product_attention` is XLA's reference composite, and our kernels were
# 1.3-4x faster forward+backward (8 heads, width 256, at 32 x 128 to
# 2 x 2,048); `True` / `False` force it on / off (tests, benchmarks).
_FUSED = [None]


def use_fused(enabled):
    """Force the fused dense path on (`True`) or off (`False`), or leave it
    to the device (`None`: on a GPU or TPU only); returns the previous
    setting. For tests and benchmarks."""
    previous = _FUSED[0]
    _FUSED[0] = None if enabled is None else bool(enabled)
    return previous


def _fused_backend():
    """Whether the dense path calls `keras.ops.dot_product_attention`."""
    backend = keras.backend.backend()
    if _FUSED[0] is False or backend not in FUSED_BACKENDS:
        return False
    if _FUSED[0]:
        return True
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    import torch

    return torch.cuda.is_available()


def fused_attention(query, key, value, mask=None):
    """`keras.ops.dot_product_attention` in our layout and contract.

    Args:
        query: `(B, N, T_q, H)`, already multiplied by `1 / sqrt(H)`.
        key: `(B, K, T_k, H)`, `K` dividing `N`.
        value: `(B, K, T_k, V)`.
        mask: bool broadcastable to `(B, N, T_q, T_k)`, or `None`.

    Returns:
        `(B, N, T_q, V)`, exact zeros in a row with no allowed key (the
        backend's kernel gives such a row the mean of the values).
    """
    if keras.backend.backend() != "jax":
        # JAX takes grouped key/value heads as they are; others may not.
        key, value = repeat_key_value(key, value, query.shape[1])

    def swap(x):  # (B, N, T, X) <-> (B, T, N, X)
        return ops.transpose(x, (0, 2, 1, 3))

    out = ops.dot_product_attention(
        swap(query), swap(key), swap(value), mask=mask, scale=1.0
    )
    out = swap(out)  # (B, N, T_q, V)
    if mask is not None:
        out = ops.where(ops.any(mask, axis=-1, keepdims=True), out, 0.0)
    return out


def repeat_key_value(key, value, num_heads):
    """Key/value heads `(B, K, T, X)` to one per query head `(B, N, T, X)`:
    query head `h` uses key/value head `h // (N / K)`, as
    `keras.layers.GroupedQueryAttention` does."""
    groups = num_heads // key.shape[1]
    if groups == 1:
        return key, value
    return ops.repeat(key, groups, axis=1), ops.repeat(value, groups, axis=1)


class ScoreMod:
    """What happens to the scores between `q . k` and the softmax: an
    additive position bias (ALiBi's `-slope_h * |i - j|`, or T5's learned
    bias per bucket of `j - i`) and a `tanh` soft-cap. Every kernel applies
    it to its tile of scores, given the tile's absolute positions.

    Args:
        slopes: float32 `(N,)` per-head ALiBi slopes, or `None`.
        soft_cap: float or `None`.
        relative: `(table, num_buckets, max_distance, bidirectional)` for
            T5's bias, `table` the learned `(num_buckets, N)` weights, or
            `None`.
    """

    def __init__(self, slopes=None, soft_cap=None, relative=None):
        self.slopes = slopes
        self.soft_cap = soft_cap
        self.relative = relative

    @property
    def learned(self):
        """Whether the bias has weights (its gradient is needed)."""
        return self.relative is not None

    def with_table(self, table):
        """This mod with the relative bias read from the tensor `table`."""
        _, num_buckets, max_distance, bidirectional = self.relative
        return ScoreMod(
            self.slopes,
            self.soft_cap,
            (table, num_buckets, max_distance, bidirectional),
        )

    def buckets(self, query_pos, key_pos):
        """int32 `(..., C, L)` T5 buckets of `key_pos - query_pos`."""
        _, num_buckets, max_distance, bidirectional = self.relative
        return relative_buckets(
            key_pos[..., None, :] - query_pos[..., :, None],
            bidirectional,
            num_buckets,
            max_distance,
        )

    def bias(self, query_pos, key_pos, heads=None):
        """float32 `(1, n, C, L)` position bias for query positions
        `(..., C)` and key positions `(..., L)` (extra leading axes come
        after the head axis), heads `heads` (a `(start, size)` pair, or
        all); `None` without one."""
        if self.relative is not None:
            table = ops.cast(self.relative[0], "float32")  # (buckets, N)
            if heads is not None:
                table = table[:, heads[0] : heads[0] + heads[1]]
            values = ops.take(table, self.buckets(query_pos, key_pos), 0)
            rank = len(values.shape)  # (..., C, L, n) -> (n, ..., C, L)
            return ops.transpose(values, (rank - 1, *range(rank - 1)))[None]
        if self.slopes is None:
            return None
        slopes = self._head_slopes(heads)
        distance = ops.abs(query_pos[..., :, None] - key_pos[..., None, :])
        distance = ops.cast(distance, "float32")  # (..., C, L)
        extra = len(distance.shape) - 2
        slopes = ops.reshape(slopes, (-1,) + (1,) * (extra + 2))
        return -(slopes * distance)[None]  # (1, n, ..., C, L)

    @property
    def row_shift_free(self):
        """Whether a per-row constant added to the bias leaves the
        probabilities unchanged: ALiBi alone (a soft-cap is not
        shift-invariant, a learned bias is read per bucket)."""
        return (
            self.slopes is not None
            and self.soft_cap is None
            and self.relative is None
        )

    def _head_slopes(self, heads):
        """float32 ALiBi slopes of the `(start, size)` head group `heads`
        (all heads for `None`)."""
        slopes = ops.cast(self.slopes, "float32")
        if heads is None:
            return slopes
        return slopes[heads[0] : heads[0] + heads[1]]

    def causal_bias(self, query_start, key_pos, heads=None):
        """ALiBi's bias for a block of queries under a causal mask, as one
        row `(1, n, 1, L)` float32 for the whole block.

        On every allowed key (`j <= i`), `-slope * |i - j|` equals
        `slope * (j - start) - slope * (i - start)`; the second term is
        constant along the row, which the softmax ignores, so
        `slope * (j - start)` gives the same probabilities (as KerasHub's
        `AlibiBias`). Counting from the block's first query keeps the
        values small (at most `slope * C` on allowed keys) so no precision
        is lost. Only valid when `row_shift_free` and the mask is causal.
        """
        slopes = self._head_slopes(heads)
        offset = ops.cast(key_pos - query_start, "float32")  # (L,)
        return (slopes[:, None, None] * offset[None, None, :])[None]

    def apply(self, scores, bias):
        """float32 scores with the bias added and the cap applied, and
        `tanh(s / cap)` (for the cap's gradient) or `None`."""
        scores = ops.cast(scores, "float32")
        if bias is not None:
            scores = scores + bias
        if self.soft_cap is None:
            return scores, None
        capped = ops.tanh(scores / self.soft_cap)
        return self.soft_cap * capped, capped

    @property
    def active(self):
        return (
            self.slopes is not None
            or self.soft_cap is not None
            or self.relative is not None
        )


def relative_buckets(relative, bidirectional, num_buckets, max_distance):
    """T5's bucket of each relative position `j - i` (int32): exact for
    small distances, logarithmic up to `max_distance`, then the last
    bucket; with `bidirectional`, half the buckets for keys after the
    query (Raffel et al., 2020)."""
    relative = ops.cast(relative, "int32")
    buckets = 0
    if bidirectional:
        num_buckets //= 2
        buckets = ops.cast(ops.greater(relative, 0), "int32") * num_buckets
        distance = ops.abs(relative)
    else:
        distance = ops.maximum(-relative, 0)
    exact = num_buckets // 2
    ratio = ops.log(ops.cast(ops.maximum(distance, 1), "float32") / exact)
    large = exact + ops.cast(
        ratio / math.log(max_distance / exact) * (num_buckets - exact),
        "int32",
    )
    large = ops.minimum(large, num_buckets - 1)
    return buckets + ops.where(ops.less(distance, exact), distance, large)


# Score elements (B * N * block * keys) that one query block may hold: about
# 64 MB of float32 per intermediate, small enough that the handful of
# block-sized temporaries stay far below the dense `T x T` footprint, large
# enough that each block's matmuls run near the machine's peak.
_BLOCK_ELEMENTS = 2**24
_MIN_BLOCK = 16
_MAX_BLOCK = 512
# Sequence length assumed when it is unknown at trace time: a long one, so
# that an unknown length never gets oversized blocks or groups.
_ASSUMED_LENGTH = 2**15


def _floor_pow2(n):
    return 1 << (max(int(n), 1).bit_length() - 1)


def block_size(num_heads, batch_size, seq_len, window=None):
    """A static query-block size (a power of two) for the chunked path.

    Args:
        num_heads: int, number of heads.
        batch_size: int or `None` (unknown: assume 1).
        seq_len: int or `None` (unknown: assume a long 32,768, so that an
            unknown length never gets oversized blocks).
        window: int or `None`, the band half-width.
    """
    if window is not None:
        # Blocks about as wide as the band: the span is then 2-3 windows.
        return min(max(_floor_pow2(window), _MIN_BLOCK), _MAX_BLOCK)
    keys = seq_len or _ASSUMED_LENGTH
    block = _BLOCK_ELEMENTS // (num_heads * (batch_size or 1) * keys)
    return min(max(_floor_pow2(block), _MIN_BLOCK), _MAX_BLOCK)


def chunked_attention(
    query,
    key,
    value,
    query_valid=None,
    key_valid=None,
    attention_mask=None,
    causal=False,
    window=None,
    block=128,
    mod=None,
):
    """Masked softmax attention of scaled queries, block by block.

    Args:
        query: `(B, N, T, H)`, already multiplied by `1 / sqrt(H)`.
        key: `(B, N, T, H)`.
        value: `(B, N, T, V)`.
        query_valid: bool `(B, T)` or `None`.
        key_valid: bool `(B, T)` or `None`.
        attention_mask: bool `(B|1, T, T)` or `None`.
        causal: bool, keep keys `j <= i`.
        window: int or `None`, keep keys `|i - j| <= window`.
        block: int, queries per block.
        mod: a `ScoreMod` (ALiBi, soft-cap) or `None`.

    Returns:
        `(context (B, N, T, V), has_key (B|1, 1|N, T, 1) bool)`: the mixed
        values (exact zeros in a row with no allowed key) and whether each
        row had an allowed key.
    """
    static_len = query.shape[2]
    seq_len = ops.shape(query)[2]
    padded_len = seq_len
    if static_len is None or static_len % block:
        # Pad the length to a multiple of the block; padded keys and queries
        # are masked out, and the padded rows are sliced off at the end.
        pad = (block - seq_len % block) % block
        padded_len = seq_len + pad
        positions = ops.arange(padded_len, dtype="int32")
        in_range = ops.less(positions, seq_len)[None, :]  # (1, T')
        query_valid, key_valid = (
            in_range
            if m is None
            else ops.logical_and(in_range, _pad_axis(m, pad, 1))
            for m in (query_valid, key_valid)
        )  # (B|1, T')
        query, key, value = (_pad_axis(x, pad, 2) for x in (query, key, value))
        if attention_mask is not None:
            attention_mask = _pad_axis(
                _pad_axis(attention_mask, pad, 1), pad, 2
            )
    num_blocks = padded_len // block
    mod = mod or ScoreMod()
    if window is not None and key_valid is None:
        key_valid = ops.ones((1, padded_len), dtype="bool")
    if window is None:
        context, has_key = _full_key_attention(
            query,
            key,
            value,
            query_valid,
            key_valid,
            attention_mask,
            causal,
            block,
            num_blocks,
            mod,
        )
    else:
        context, has_key = _banded_attention(
            query,
            key,
            value,
            query_valid,
            key_valid,
            attention_mask,
            causal,
            window,
            block,
            num_blocks,
            mod,
        )
    return context[:, :, :seq_len], has_key[:, :, :seq_len]


def _pad_axis(x, pad, axis):
    """Append `pad` (a scalar tensor) zeros / `False`s along `axis`."""
    shape = list(ops.shape(x))
    shape[axis] = pad
    return ops.concatenate([x, ops.zeros(shape, dtype=x.dtype)], axis=axis)


def _untaped(*tensors):
    """`tensors` as values that no gradient tape follows.

    The forward pass of an `ops.custom_gradient` function starts with them.
    Run eagerly under a TensorFlow `GradientTape`, that forward pass is
    recorded op by op (`tf.custom_gradient`'s eager mode does not pause the
    tape), and the tape keeps what each op's gradient would need until
    `tape.gradient` is called: every query block's probabilities, i.e. the
    whole `(B, N, T, T)` matrix, more than once (an eager step at 8,192
    tokens peaked at 5.4 GB with them, 0.9 GB without). Those records are
    never used (the custom gradient replaces them), so the forward pass
    reads stopped inputs, which the tape does not follow. In a traced
    function `stop_gradient` is a free identity.
    """
    return tuple(ops.stop_gradient(x) for x in tensors)


def _block_mask(query_pos, key_pos, query_valid, key_valid, attn, causal, w):
    """The bool mask of one block of queries against its keys.

    Args:
        query_pos: int `(..., C)` absolute query positions.
        key_pos: int `(..., L)` absolute key positions.
        query_valid: bool `(B|1, ..., C)` or `None`.
        key_valid: bool `(B|1, ..., L)` or `None`.
        attn: bool `(B|1, ..., C, L)` or `None`.

    Returns:
        bool broadcastable to `(B, 1, ..., C, L)` (the 1 is the head axis),
        or `None` when nothing is masked.
    """
    rows = query_pos[..., :, None]
    cols = key_pos[..., None, :]
    allowed = _masking.merge_masks(
        None if query_valid is None else query_valid[..., :, None],
        None if key_valid is None else key_valid[..., None, :],
        ops.greater_equal(rows, cols)[None] if causal else None,
        ops.less_equal(ops.abs(rows - cols), w)[None]
        if w is not None
        else None,
        attn,
    )
    return None if allowed is None else ops.expand_dims(allowed, 1)


def _full_key_attention(
    query,
    key,
    value,
    query_valid,
    key_valid,
    attention_mask,
    causal,
    block,
    num_blocks,
    mod,
):
    """Query blocks against all keys, recomputed in the backward pass."""
    dtype = query.dtype
    shape = ops.shape(query)
    key_len = ops.shape(key)[2]
    key_pos = ops.arange(key_len, dtype="int32")
    block_pos = ops.arange(block, dtype="int32")
    # (B, N, T', H) -> (B, N, n, C, H): block `i` is `take(.., i, axis=2)`.
    query_blocks = ops.reshape(
        query, (shape[0], shape[1], num_blocks, block, query.shape[-1])
    )
    valid_blocks = None
    if query_valid is not None:
        valid_blocks = ops.reshape(query_valid, (-1, num_blocks, block))
    attn_blocks = None
    if attention_mask is not None:
        # (B|1, T', T') -> (B|1, n, C, T').
        attn_blocks = ops.reshape(
            attention_mask, (-1, num_blocks, block, key_len)
        )

    def block_mask(i):
        """The `(B|1, 1, C, T')` mask of query block `i`, or `None`."""
        return _block_mask(
            i * block + block_pos,
            key_pos,
            None if valid_blocks is None else ops.take(valid_blocks, i, 1),
            key_valid,
            None if attn_blocks is None else ops.take(attn_blocks, i, 1),
            causal,
            None,
        )

    # Heads in independent groups within each block (as in
    # `grouped_dense_attention`): a group's `(B, n, C, T')` temporaries stay
    # in the last-level cache, and the groups run in parallel.
    heads = query.shape[1]
    keys = key.shape[2] or _ASSUMED_LENGTH
    elements = (query.shape[0] or 1) * heads * block * keys
    head_parts = min(heads, max(1, -(-elements // _GROUP_ELEMENTS)))
    head_sizes = _even_sizes(heads, head_parts)

    head_groups = _starts(head_sizes)

    def by_head(x):
        """`x` split into the head groups (axis 1)."""
        return _split(x, 1, head_sizes)

    def block_probs(q, k, mask, i, heads, mod):
        """float32 probabilities `(B, n, C, T')` of query block `q` (block
        `i`, the `(start, size)` head group `heads`) under the score mod
        `mod`, and `tanh(s / cap)` (for the soft-cap's gradient) or
        `None`."""
        scores = ops.einsum("bnch,bnkh->bnck", q, k)
        capped = None
        if mod.active:
            if causal and mod.row_shift_free:
                # One bias row per block instead of a (n, C, T') tile.
                bias = mod.causal_bias(i * block, key_pos, heads)
            else:
                bias = mod.bias(i * block + block_pos, key_pos, heads)
            scores, capped = mod.apply(scores, bias)
        return _masking.fused_masked_softmax(scores, mask), capped

    @ops.custom_gradient
    def attend(query_blocks, key, value, *table):
        query_blocks, key, value = _untaped(query_blocks, key, value)
        # A learned bias reads its table from this function's input, so
        # its gradient is returned below.
        block_mod = mod.with_table(_untaped(*table)[0]) if table else mod
        keys, values = by_head(key), by_head(value)

        def forward_block(i):
            q = ops.take(query_blocks, i, axis=2)  # (B, N, C, H)
            mask = block_mask(i)
            return _concat(
                [
                    ops.einsum(
                        "bnck,bnkv->bncv",
                        ops.cast(
                            block_probs(q_g, k_g, mask, i, g, block_mod)[0],
                            dtype,
                        ),
                        v_g,
                    )
                    for q_g, k_g, v_g, g in zip(
                        by_head(q), keys, values, head_groups, strict=True
                    )
                ],
                axis=1,
            )  # (B, N, C, V)

        indices = ops.arange(num_blocks, dtype="int32")
        out = _unblock(ops.map(forward_block, indices))  # (B, N, T', V)

        def grad(*args, upstream=None):
            if upstream is None:
                upstream = args[0]
            d_out = ops.cast(upstream, dtype)
            # D_i = sum_v dO_iv O_iv = sum_k dP_ik P_ik, the softmax
            # Jacobian's row term, from (T, V) instead of (T, T).
            delta = ops.sum(
                ops.cast(d_out, "float32") * ops.cast(out, "float32"), -1
            )
            d_blocks = ops.reshape(
                d_out, (shape[0], shape[1], num_blocks, block, value.shape[-1])
            )
            delta = ops.reshape(delta, (shape[0], shape[1], num_blocks, block))
            block_ids = ops.arange(num_blocks, dtype="int32")

            def backward_group(q, k, v, d_o, row_term, heads, mask, i):
                """This block's `(dQ, dK, dV)` for one head group."""
                # Recompute the probabilities, exactly as forward.
                probs, capped = block_probs(q, k, mask, i, heads, block_mod)
                probs_c = ops.cast(probs, dtype)
                d_v = ops.einsum("bnck,bncv->bnkv", probs_c, d_o)
                d_probs = ops.einsum("bncv,bnkv->bnck", d_o, v)
                # Masked entries have P = 0, so they get no gradient.
                d_scores = probs * (ops.cast(d_probs, "float32") - row_term)
                if capped is not None:
                    # d/ds cap * tanh(s / cap) = 1 - tanh^2.
                    d_scores = d_scores * (1.0 - ops.square(capped))
                # The learned bias's gradient: dS summed over the batch.
                d_bias = ops.sum(d_scores, axis=0) if table else None
                d_scores = ops.cast(d_scores, dtype)  # (B, n, C, T')
                d_q = ops.einsum("bnck,bnkh->bnch", d_scores, k)
                d_k = ops.einsum("bnck,bnch->bnkh", d_scores, q)
                return d_q, d_k, d_v, d_bias

            def backward_block(i, carry):
                d_query, d_key, d_value = carry[:3]
                mask = block_mask(i)
                parts = [
                    backward_group(*group, mask, i)
                    for group in zip(
                        by_head(ops.take(query_blocks, i, axis=2)),
                        keys,
                        values,
                        by_head(ops.take(d_blocks, i, axis=2)),
                        by_head(ops.take(delta, i, axis=2)[..., None]),
                        head_groups,
                        strict=True,
                    )
                ]
                d_q, d_k, d_v = (
                    _concat([part[j] for part in parts], axis=1)
                    for j in range(3)
                )
                d_value = d_value + ops.cast(d_v, "float32")  # (B, N, T', V)
                d_key = d_key + ops.cast(d_k, "float32")
                # Write block `i` of the query gradient without a scatter.
                here = ops.equal(block_ids, i)[None, None, :, None, None]
                d_query = ops.where(here, d_q[:, :, None], d_query)
                if not table:
                    return d_query, d_key, d_value
                # Sum this block's dS (N, C, T') into the table's buckets.
                d_bias = _concat([part[3] for part in parts], axis=0)
                buckets = block_mod.buckets(i * block + block_pos, key_pos)
                d_table = ops.segment_sum(
                    ops.reshape(ops.transpose(d_bias, (1, 2, 0)), (-1, heads)),
                    ops.reshape(buckets, (-1,)),
                    num_segments=table[0].shape[0],
                )  # (buckets, N)
                return d_query, d_key, d_value, carry[3] + d_table

            init = (
                ops.zeros_like(query_blocks),
                ops.zeros_like(ops.cast(key, "float32")),
                ops.zeros_like(ops.cast(value, "float32")),
            )
            if table:
                init += (ops.zeros_like(ops.cast(table[0], "float32")),)
            result = ops.fori_loop(0, num_blocks, backward_block, init)
            d_query, d_key, d_value = result[:3]
            grads = (d_query, ops.cast(d_key, dtype), ops.cast(d_value, dtype))
            if table:
                grads += (ops.cast(result[3], table[0].dtype),)
            return grads

        return out, grad

    if mod.learned:
        # Read the table here: the custom gradient takes a tensor, not the
        # variable (whose gradient it returns as the input's).
        table = ops.copy(mod.relative[0])  # (buckets, N)
        context = attend(query_blocks, key, value, table)
    else:
        context = attend(query_blocks, key, value)
    if valid_blocks is None and key_valid is None and attn_blocks is None:
        # Every query is valid and sees at least itself (causal keeps the
        # diagonal): every row has a key.
        return context, ops.ones((1, 1, 1, 1), dtype="bool")
    has_key = ops.map(
        lambda i: ops.any(block_mask(i), axis=-1, keepdims=True),
        ops.arange(num_blocks, dtype="int32"),
    )  # (n, B|1, 1, C, 1)
    return context, _unblock(has_key)


def _unblock(x):
    """`(n, B, N, C, X)` -> `(B, N, n * C, X)`."""
    x = ops.transpose(x, (1, 2, 0, 3, 4))
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], shape[1], -1, shape[4]))


def _banded_attention(
    query,
    key,
    value,
    query_valid,
    key_valid,
    attention_mask,
    causal,
    window,
    block,
    num_blocks,
    mod,
):
    """Each query block against the key blocks within `window` only."""
    # Key blocks `i - reach .. i + reach` (`.. i` when causal) cover every
    # key within `window` of query block `i`.
    reach = -(-window // block)
    before = reach * block
    after = 0 if causal else reach * block
    span = before + block + after
    padded_len = ops.shape(key)[2]
    # Pad the keys by `before` in front and `after` behind; padded keys are
    # invalid, so they never receive weight.
    key, value = (_pad_front_back(x, before, after, 2) for x in (key, value))
    key_valid = _pad_front_back(key_valid, before, after, 1)
    # Gather indices: block `i` sees padded keys `i * C + l`, l < span.
    starts = ops.arange(num_blocks, dtype="int32") * block
    gather = starts[:, None] + ops.arange(span, dtype="int32")[None, :]
    key_pos = gather - before  # (n, L) absolute key positions
    query_pos = ops.reshape(ops.arange(padded_len, dtype="int32"), (-1, block))
    shape = ops.shape(query)
    query_blocks = ops.reshape(
        query, (shape[0], shape[1], num_blocks, block, query.shape[-1])
    )  # (B, N, n, C, H)
    key_span = ops.take(key, gather, axis=2)  # (B, N, n, L, H)
    value_span = ops.take(value, gather, axis=2)  # (B, N, n, L, V)
    attn = None
    if attention_mask is not None:
        rows = ops.reshape(
            _pad_front_back(attention_mask, before, after, 2),
            (-1, num_blocks, block, padded_len + before + after),
        )  # (B|1, n, C, T' + pad)
        attn = ops.take_along_axis(
            rows,
            ops.broadcast_to(
                gather[None, :, None, :], (1, num_blocks, block, span)
            ),
            axis=3,
        )  # (B|1, n, C, L)
    mask = _block_mask(
        query_pos,
        key_pos,
        None
        if query_valid is None
        else ops.reshape(query_valid, (-1, num_blocks, block)),
        ops.take(key_valid, gather, axis=1),  # (B, n, L)
        attn,
        causal,
        window,
    )  # (B|1, 1, n, C, L)
    # Fold the blocks into the head axis: (B, N * n, C|L, H), so the
    # blocks are one batched (grouped) `dense_attention`.
    heads = query.shape[1]
    mask = ops.broadcast_to(
        mask, (ops.shape(mask)[0], heads, num_blocks, block, span)
    )

    def fold(x, size):
        # (B, N, n, C|L, X) -> (B, N * n, C|L, X), sizes kept static.
        return ops.reshape(x, (shape[0], -1, x.shape[3], size))

    bias = mod.bias(query_pos, key_pos)  # (1, N, n, C, L) or None
    if bias is not None:
        bias = ops.reshape(bias, (1, -1, block, span))
    context = grouped_dense_attention(
        fold(query_blocks, query.shape[-1]),
        fold(key_span, query.shape[-1]),
        fold(value_span, value.shape[-1]),
        ops.reshape(mask, (ops.shape(mask)[0], -1, block, span)),
        bias,
        mod.soft_cap,
        mod.learned,
    )  # (B, N * n, C, V)
    context = ops.reshape(
        context, (shape[0], shape[1], padded_len, value.shape[-1])
    )
    has_key = ops.any(mask[:, :1], axis=-1, keepdims=True)  # (B|1,1,n,C,1)
    has_key = ops.reshape(has_key, (-1, 1, padded_len, 1))
    return context, has_key


def _pad_front_back(x, before, after, axis):
    """Pad `axis` with `before` zeros in front and `after` behind."""
    shape = list(ops.shape(x))
    parts = []
    for size in (before, None, after):
        if size is None:
            parts.append(x)
        elif size:
            shape[axis] = size
            parts.append(ops.zeros(shape, dtype=x.dtype))
    return ops.concatenate(parts, axis=axis)


def dense_attention(
    query, key, value, mask=None, bias=None, soft_cap=None, bias_grad=False
):
    """`softmax(q k^T) v` with a hand-written backward pass.

    The same arithmetic as autodiff of scores -> masked softmax -> mixing,
    with fewer passes over the `(B, N, T_q, T_k)` matrix in the backward
    pass: the softmax Jacobian's row term is taken as `sum(dO * O)` over the
    `V` values (FlashAttention's trick) instead of `sum(dP * P)` over the
    `T_k` keys, and only the probabilities are kept for it.

    Grouped-query heads (`K < N` key/value heads) are not repeated: the `G =
    N / K` query heads that share a key/value head are stacked as `G * T_q`
    rows against it, `(B, K, G * T_q, H)` (a free reshape, since they are
    consecutive), so every matmul reads each key and value once and the key
    and value gradients sum over the group inside the matmul.

    Args:
        query: `(B, N, T_q, H)`, already multiplied by `1 / sqrt(H)`.
        key: `(B, K, T_k, H)`, `K` dividing `N` (query head `h` reads
            key/value head `h // (N / K)`).
        value: `(B, K, T_k, V)`.
        mask: bool broadcastable to `(B, N, T_q, T_k)`, or `None`.
        bias: float32 broadcastable to `(B, N, T_q, T_k)`, added to the
            scores (a constant: no gradient), or `None`.
        soft_cap: float or `None` (see `ScoreMod`).
        bias_grad: bool, whether `bias` gets a gradient (a learned bias).

    Returns:
        The mixed values `(B, N, T_q, V)`; exact zeros in a row with no
        allowed key.
    """
    dtype = query.dtype
    mod = ScoreMod(soft_cap=soft_cap)
    learned = bias is not None and bias_grad
    heads, kv_heads = query.shape[1], key.shape[1]
    groups = _groups(heads, kv_heads)
    q_shape = ops.shape(query)
    if groups > 1:
        # (B, N, T_q, H) -> (B, K, G * T_q, H).
        query = ops.reshape(query, (q_shape[0], kv_heads, -1, q_shape[3]))
        mask, bias = (_by_kv_head(x, kv_heads, groups) for x in (mask, bias))

    def by_group(x):
        """Scores `(B, K, G * T_q, T_k)` -> `(B, K, G, T_q, T_k)`, the
        shape the masks and biases broadcast against."""
        if groups == 1:
            return x
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], kv_heads, groups, -1, shape[3]))

    def by_row(x):
        """The inverse of `by_group`."""
        if groups == 1:
            return x
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], kv_heads, -1, shape[4]))

    @ops.custom_gradient
    def attend(query, key, value, *learned_bias):
        query, key, value = _untaped(query, key, value)
        bias_in = _untaped(*learned_bias)[0] if learned_bias else bias
        scores = ops.einsum("bnqh,bnkh->bnqk", query, key)  # (B, N, Tq, Tk)
        scores = by_group(scores)
        capped = None
        if bias_in is not None or soft_cap is not None:
            scores, capped = mod.apply(scores, bias_in)
        probs = by_row(_masking.fused_masked_softmax(scores, mask))
        capped = None if capped is None else by_row(capped)
        probs_c = ops.cast(probs, dtype)
        out = ops.einsum("bnqk,bnkv->bnqv", probs_c, value)  # (B, N, Tq, V)

        def grad(*args, upstream=None):
            if upstream is None:
                upstream = args[0]
            d_out = ops.cast(upstream, dtype)
            # D_i = sum_v dO_iv O_iv = sum_k dP_ik P_ik.
            delta = ops.sum(
                ops.cast(d_out, "float32") * ops.cast(out, "float32"),
                axis=-1,
                keepdims=True,
            )  # (B, N, Tq, 1)
            # P^T dO and dS^T Q as matmuls of a swapped operand, which
            # TensorFlow folds into the matmul (1-2 % faster than its einsum
            # of this pattern).
            d_value = ops.matmul(ops.swapaxes(probs_c, -1, -2), d_out)
            d_probs = ops.einsum("bnqv,bnkv->bnqk", d_out, value)
            # Masked entries have P = 0, so they get no gradient.
            d_scores = probs * (ops.cast(d_probs, "float32") - delta)
            if capped is not None:
                # d/ds cap * tanh(s / cap) = 1 - tanh^2.
                d_scores = d_scores * (1.0 - ops.square(capped))
            grads = ()
            if learned_bias:
                # The bias broadcasts over the batch (and maybe rows).
                grouped = by_group(d_scores)
                axes = tuple(
                    axis
                    for axis, size in enumerate(learned_bias[0].shape)
                    if size == 1 and grouped.shape[axis] != 1
                )
                grads = (ops.sum(grouped, axis=axes, keepdims=True),)
            d_scores = ops.cast(d_scores, dtype)
            d_query = ops.einsum("bnqk,bnkh->bnqh", d_scores, key)
            d_key = ops.matmul(ops.swapaxes(d_scores, -1, -2), query)
            return (d_query, d_key, d_value, *grads)

        return out, grad

    if learned:
        out = attend(query, key, value, bias)
    else:
        out = attend(query, key, value)
    if groups > 1:
        # (B, K, G * T_q, V) -> (B, N, T_q, V).
        out = ops.reshape(out, (q_shape[0], heads, q_shape[2], out.shape[-1]))
    return out


def _groups(heads, kv_heads):
    """Query heads per key/value head; 1 when the head axes are the same
    (possibly unknown: the banded path folds blocks into them)."""
    if heads is kv_heads or heads == kv_heads:
        return 1
    if heads is None or kv_heads is None or heads % kv_heads:
        raise ValueError(
            "Received an invalid value for argument `key`, expected a "
            "number of key/value heads dividing the query heads. "
            f"Received: query heads={heads}, key heads={kv_heads}"
        )
    return heads // kv_heads


def _by_kv_head(x, kv_heads, groups):
    """A mask or bias `(B|1, N|1, T_q|1, T_k|1)` as `(B|1, K|1, G|1,
    T_q|1, T_k|1)`, to broadcast against grouped scores; `None` stays."""
    if x is None:
        return None
    if x.shape[1] == 1:
        return x[:, :, None]
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], kv_heads, groups, shape[2], shape[3]))


# Score elements (B * N * T_q * T_k) per group of `grouped_dense_attention`:
# 4 MB of float32, so that the few `T x T`-sized temporaries of the groups in
# flight stay in a server CPU's last-level cache (measured best on a 32 MB L3
# at every benchmark shape, against 1, 2, 8, 16 and 32 MB).
_GROUP_ELEMENTS = 2**20
# Most groups in one call: bounds the graph size (a dozen ops per group).
_MAX_GROUPS = 128
# Tokens per batch assumed when the batch size is unknown at trace time (a
# Keras `fit` traces with a `None` batch): long sequences come in small
# batches. Counted on the longer of the query and key lengths, so a cached
# decoding step (one query row) is not split.
_ASSUMED_TOKENS = 2**12


def attention_groups(batch_size, num_heads, query_len, key_len, kv_heads=None):
    """How `grouped_dense_attention` splits the work: `(nb, nh, nq)`.

    Splits batch first, then heads (only once every batch element is its
    own group), then query rows, into parts that differ by at most one
    element, until each group holds about `_GROUP_ELEMENTS` scores (at most
    about `2 * _MAX_GROUPS` groups). Only static sizes are split; an
    unknown batch size is estimated from `_ASSUMED_TOKENS` (and never
    split). Small problems are not split at all.

    Args:
        batch_size: int or `None`.
        num_heads: int or `None`.
        query_len: int or `None`.
        key_len: int or `None`.
        kv_heads: int or `None`, the key/value heads (grouped-query
            attention): the heads are split in whole groups, so at most
            `kv_heads` parts (`None`: `num_heads`).

    Returns:
        `(batch parts, head parts, query-row parts)`; `(1, 1, 1)` when the
        sizes are unknown or small.
    """
    if None in (num_heads, query_len, key_len):
        return 1, 1, 1
    rows = batch_size or max(1, _ASSUMED_TOKENS // max(query_len, key_len))
    total = rows * num_heads * query_len * key_len
    wanted = min(-(-total // _GROUP_ELEMENTS), _MAX_GROUPS)
    if wanted <= 1:
        return 1, 1, 1
    # Parts may differ by one element (`_even_sizes`): no divisor needed,
    # and the count stays bounded for any batch size.
    nb = min(batch_size, wanted) if batch_size else 1
    rest = -(-wanted // nb)
    # Heads are split only once every batch element is its own group
    # (`rest > 1` implies it), so that every group is a contiguous run of
    # the flattened (batch, head) pairs.
    nh = min(rest, kv_heads or num_heads)
    rest = -(-rest // nh)
    nq = min(rest, query_len)
    return nb, nh, nq


def _even_sizes(n, parts):
    base, extra = divmod(n, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def _split(x, axis, sizes):
    """Split `x` along `axis` into `sizes` (a list); broadcast axes of size
    1 (a mask shared by every batch element, head or row) are reused."""
    if len(sizes) == 1:
        return [x]
    if x.shape[axis] == 1:
        return [x] * len(sizes)
    indices = [start for start, _ in _starts(sizes)[1:]]
    return ops.split(x, indices, axis=axis)


def grouped_dense_attention(
    query, key, value, mask=None, bias=None, soft_cap=None, bias_grad=False
):
    """`dense_attention` run as independent groups of batch elements, heads
    and query rows.

    The same result as `dense_attention` (each group is an exact
    `dense_attention` of its slice; only float32 rounding of the summed key
    and value gradients differs), but faster on a CPU: the `T_q x T_k`
    scores, probabilities and their gradients are bandwidth-bound passes,
    and a group's temporaries fit in the last-level cache, where the whole
    `(B, N, T_q, T_k)` matrix does not. Independent groups also keep both
    of TensorFlow's inter-op threads busy.

    Args:
        query: `(B, N, T_q, H)`, already multiplied by `1 / sqrt(H)`.
        key: `(B, K, T_k, H)`, `K` dividing `N` (see `dense_attention`).
        value: `(B, K, T_k, V)`.
        mask: bool `(B|1, N|1, T_q|1, T_k|1)` (rank 4), or `None`.
        bias: float32 `(1, N, T_q, T_k)` added to the scores, or `None`.
        soft_cap: float or `None` (see `ScoreMod`).
        bias_grad: bool, whether `bias` gets a gradient (a learned bias).

    Returns:
        The mixed values `(B, N, T_q, V)`, as `dense_attention`.
    """
    if mask is not None and len(mask.shape) != 4:
        raise ValueError(
            "Received an invalid value for argument `mask`, expected a "
            "rank-4 bool tensor `(B|1, N|1, T_q|1, T_k|1)`. Received: "
            f"mask.shape={mask.shape}"
        )
    batch, heads, query_len, _ = query.shape
    kv_heads = key.shape[1]
    per_kv = _groups(heads, kv_heads)  # query heads per key/value head
    nb, nh, nq = attention_groups(
        batch, heads, query_len, key.shape[2], kv_heads
    )
    if any(
        m is not None and m.shape[axis] is None and parts > 1
        for m in (mask, bias)
        for axis, parts in enumerate((nb, nh, nq))
    ):
        # A mask of unknown size along a split axis: no static split.
        nb = nh = nq = 1
    if nb * nh * nq == 1:
        return dense_attention(
            query, key, value, mask, bias, soft_cap, bias_grad
        )
    # Each group is (first batch element, batch elements, first head,
    # heads), heads counted in key/value heads (each with its `per_kv`
    # query heads): whole batch elements, or some heads of one element.
    starts = _starts(_even_sizes(batch, nb) if nb > 1 else [batch])
    head_starts = _starts(_even_sizes(kv_heads, nh))
    groups = [(b, bs, h, hs) for b, bs in starts for h, hs in head_starts]
    row_sizes = _even_sizes(query_len, nq)
    if nb > 1:
        # Contiguous runs of the flattened (batch, head) pairs: one split
        # and one concatenation per tensor.
        pieces = [
            [
                ops.reshape(piece, (bs, hs * width, *piece.shape[1:]))
                for piece, (_, bs, _, hs) in zip(
                    _split(
                        ops.reshape(x, (-1, *x.shape[2:])),
                        0,
                        [bs * hs * width for _, bs, _, hs in groups],
                    ),
                    groups,
                    strict=True,
                )
            ]
            for x, width in ((query, per_kv), (key, 1), (value, 1))
        ]
    else:
        pieces = [
            _split(x, 1, [hs * width for _, _, _, hs in groups])
            for x, width in ((query, per_kv), (key, 1), (value, 1))
        ]

    def group_part(x, b, bs, h, hs):
        """`x`'s rows `(B|1, N|1, ...)` of this group, split by query row."""
        if x is None:
            return [None] * nq
        x = x if nb == 1 or x.shape[0] == 1 else x[b : b + bs]
        if nh > 1 and x.shape[1] != 1:
            x = x[:, h * per_kv : (h + hs) * per_kv]
        return _split(x, 2, row_sizes) if x.shape[2] != 1 else [x] * nq

    outputs = []
    for (b, bs, h, hs), q, k, v in zip(groups, *pieces, strict=True):
        out = _concat(
            [
                dense_attention(q_r, k, v, m_r, b_r, soft_cap, bias_grad)
                for q_r, m_r, b_r in zip(
                    _split(q, 2, row_sizes),
                    group_part(mask, b, bs, h, hs),
                    group_part(bias, b, bs, h, hs),
                    strict=True,
                )
            ],
            axis=2,
        )  # (bs, hs, T_q, V)
        outputs.append(out)
    if nb > 1:
        flat = [ops.reshape(o, (-1, *o.shape[2:])) for o in outputs]
        return ops.reshape(
            _concat(flat, axis=0), (batch, heads, *flat[0].shape[1:])
        )
    return _concat(outputs, axis=1)


def _starts(sizes):
    """`[(start, size), ...]` of consecutive parts of the given sizes."""
    return [(sum(sizes[:i]), size) for i, size in enumerate(sizes)]


def _concat(parts, axis):
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis)
