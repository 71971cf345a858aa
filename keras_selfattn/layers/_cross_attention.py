"""Multi-head cross-attention: queries from one sequence, keys and values
from another (the decoder's view of the encoder)."""

import keras

from keras_selfattn.layers import _masking
from keras_selfattn.layers import _validation
from keras_selfattn.layers.multi_head_self_attention import (
    MultiHeadSelfAttention,
)

# Constructor arguments of `MultiHeadSelfAttention` that order the keys
# relative to the queries; they mean nothing across two sequences.
_UNORDERED = (
    ("causal", False),
    ("window", None),
    ("position_embedding", None),
)


@keras.saving.register_keras_serializable(package="keras_selfattn")
class CrossAttention(MultiHeadSelfAttention):
    """Multi-head attention of a query sequence over a context sequence.

    `head_h = softmax(score(q W_q^h, c W_k^h)) c W_v^h`,
    `output = concat(head_1, ..., head_H) W_o`, where `q` has `query_dim`
    features and `c` has `context_dim` features (they may differ).

    A private building block of `TransformerDecoderBlock`. It takes every
    argument of `MultiHeadSelfAttention` except the ones that order keys
    relative to queries: `causal` must be `False` and `window` `None` (they
    are accepted only with those values, so `get_config` round-trips).

    Args:
        num_heads: int, number of attention heads.
        **kwargs: the other `MultiHeadSelfAttention` arguments (`key_dim`
            defaults to `query_dim // num_heads`, `output_dim` to
            `query_dim`) and base `keras.layers.Layer` arguments.

    Call arguments:
        query: float tensor of shape `(batch_size, query_len, query_dim)`.
        context: float tensor of shape
            `(batch_size, context_len, context_dim)`.
        context_mask: optional bool tensor of shape
            `(batch_size, context_len)`, `True` for real context tokens.
            Defaults to the Keras mask carried by `context`.
        query_mask: optional bool tensor of shape `(batch_size, query_len)`.
            Defaults to the Keras mask carried by `query`.
        attention_mask: optional bool tensor of shape
            `(batch_size, query_len, context_len)` (a leading 1 broadcasts).
        training: bool, whether dropout is active.
        return_attention_scores: bool, whether to also return the attention
            weights. Defaults to `False`.
        cache: optional dict from `init_cache(context)`: the context's keys
            and values projected once (for decoding); `context` and
            `context_mask` are then not used.

    Returns:
        A tensor of shape `(batch_size, query_len, output_dim)`, or the tuple
        `(outputs, scores)` with `scores` of shape
        `(batch_size, num_heads, query_len, context_len)`.

    Masking:
        The three masks are combined with a logical AND. A query with no
        valid context key (an empty source sentence, or a padded query)
        outputs zeros, with finite gradients. The output carries the query
        mask.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_selfattn.layers._cross_attention import CrossAttention
    >>> query = np.random.rand(2, 5, 12).astype("float32")
    >>> context = np.random.rand(2, 7, 10).astype("float32")
    >>> context_mask = np.array([[1] * 7, [0] * 7], dtype=bool)
    >>> y = CrossAttention(num_heads=3)(query, context, context_mask)
    >>> tuple(y.shape)
    (2, 5, 12)
    >>> bool(np.all(keras.ops.convert_to_numpy(y)[1] == 0.0))
    True
    """

    def __init__(self, num_heads, **kwargs):
        for name, allowed in _UNORDERED:
            value = kwargs.pop(name, allowed)
            if value != allowed or type(value) is not type(allowed):
                raise _validation.invalid(
                    name, f"{allowed} for cross-attention", value
                )
        super().__init__(num_heads, **kwargs)

    def build(self, query_shape, context_shape):
        query_dim = _validation.sequence_shape("query", query_shape, self.name)
        context_dim = _validation.sequence_shape(
            "context", context_shape, self.name
        )
        self._build_projections(query_dim, context_dim)

    def init_cache(self, context, context_mask=None):
        """The context's keys and values, projected once for decoding.

        Args:
            context: `(batch_size, context_len, context_dim)`.
            context_mask: optional bool `(batch_size, context_len)`;
                defaults to the Keras mask carried by `context` (all valid
                when there is none).

        Returns:
            A dict: `key` `(batch_size, num_heads, context_len, key_dim)`,
            `value` `(batch_size, num_heads, context_len, value_dim)`,
            `key_mask` `(batch_size, context_len)` (bool). Pass it as
            `cache` to `call`, in place of `context`.
        """
        _validation.sequence_shape("context", context.shape, self.name)
        context_mask = _masking.check_padding_mask(
            "context_mask",
            _masking.resolve_mask(context, context_mask),
            context,
        )
        if context_mask is None:
            context_mask = keras.ops.ones(
                keras.ops.shape(context)[:2], dtype="bool"
            )
        key, value = self._project_key_value(context)  # (B, N, S, H|V)
        _, key = self._transform_heads(None, key, None)  # QK-norm
        return {"key": key, "value": value, "key_mask": context_mask}

    def call(
        self,
        query,
        context=None,
        context_mask=None,
        query_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        cache=None,
    ):
        # Keras fills `<arg>_mask` from each input's Keras mask only in some
        # call patterns; resolve both ourselves.
        query_mask = _masking.check_padding_mask(
            "query_mask", _masking.resolve_mask(query, query_mask), query
        )
        if cache is None:
            if context is None:
                raise _validation.invalid(
                    "context",
                    "a tensor (batch_size, context_len, context_dim), or a "
                    "`cache` from `init_cache`",
                    None,
                )
            cache = self.init_cache(context, context_mask)
        key, value, context_mask = (
            cache["key"],
            cache["value"],
            cache["key_mask"],
        )
        attention_mask = _masking.check_attention_mask(
            "attention_mask",
            attention_mask,
            query.shape,
            tuple(context_mask.shape),
        )
        # Without a request for the scores, the dense fast path (grouped,
        # with a hand-written backward pass).
        query_heads, _ = self._transform_heads(
            self._scale_query(self._project_query(query)), None, None
        )  # (B, N, T, H)
        outputs, scores = self._attend(
            query_heads,
            key,
            value,
            training,
            bool(return_attention_scores),
            impl="dense",
            query_valid=query_mask,
            key_valid=context_mask,
            attention_mask=attention_mask,
        )
        _masking.set_keras_mask(outputs, query_mask)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def compute_output_shape(self, query_shape, context_shape=None):
        output_dim = self.output_dim or query_shape[-1]
        return tuple(query_shape[:-1]) + (output_dim,)

    def compute_output_spec(
        self,
        query,
        context=None,
        context_mask=None,
        query_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        cache=None,
    ):
        outputs = keras.KerasTensor(
            self.compute_output_shape(query.shape), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return outputs
        batch, query_len = query.shape[:2]
        scores = keras.KerasTensor(
            (
                batch,
                self.num_heads,
                query_len,
                (context if cache is None else cache["key_mask"]).shape[1],
            ),
            dtype=self.compute_dtype,
        )
        return outputs, scores
