"""A Transformer encoder block (or, with `causal=True`, a GPT-style decoder
block): self-attention and a feed-forward network, each with a residual
connection and layer normalization."""

import keras

from keras_selfattn.layers import _masking
from keras_selfattn.layers import _transformer
from keras_selfattn.layers import _validation
from keras_selfattn.layers.multi_head_self_attention import (
    MultiHeadSelfAttention,
)
from keras_selfattn.layers.multi_head_self_attention import (
    attention_output_spec,
)
from keras_selfattn.layers.multi_head_self_attention import call_result
from keras_selfattn.layers.multi_head_self_attention import check_built


@keras.saving.register_keras_serializable(package="keras_selfattn")
class TransformerBlock(_transformer.TransformerLayer):
    """A Transformer block: self-attention, then a feed-forward network.

    Post-norm (the original Transformer, the default):

    `x = LN(x + Dropout(SelfAttention(x)))`,
    `y = LN(x + Dropout(FF(x)))`, with `FF(x) = act(x W_1 + b_1) W_2 + b_2`.

    Pre-norm (`norm_first=True`, GPT-2 style, easier to train deep):
    `x = x + Dropout(SelfAttention(LN(x)))`, `y = x + Dropout(FF(LN(x)))`,
    with no final normalization: put a `keras.layers.LayerNormalization`
    after the last pre-norm block.

    The self-attention is a `MultiHeadSelfAttention` sub-layer, so `causal`,
    `window` and `score` mean what they mean there. With `causal=True` this
    is a decoder-only (GPT-style) block.

    Args:
        num_heads: int, number of attention heads.
        ff_dim: int, hidden size of the feed-forward network.
        key_dim: int, size of each head's queries and keys. Defaults to
            `hidden_dim // num_heads` (which must then divide evenly).
        dropout: float in [0, 1), dropout rate on the outputs of the
            attention and the feed-forward network, before each residual
            sum. Defaults to `0.1`.
        attention_dropout: float in [0, 1), dropout rate on the attention
            weights. Defaults to `dropout`.
        activation: str or callable, the feed-forward activation. Defaults
            to `"relu"`.
        norm_first: bool, pre-norm (`True`) or post-norm (`False`). Defaults
            to `False`.
        layer_norm_epsilon: float > 0, epsilon of the layer normalizations.
            Defaults to `1e-6`.
        causal: bool, whether position `i` may only attend to positions
            `j <= i`. Defaults to `False`.
        window: int or `None`, if set, position `i` only attends to
            positions `j` with `|i - j| <= window`. Defaults to `None`.
        score: str, `"dot_product"` or `"additive"`. Defaults to
            `"dot_product"`.
        attention_impl: str, `"auto"`, `"dense"` or `"chunked"`: how the
            self-attention computes its weights (see
            `MultiHeadSelfAttention`; `"auto"` uses the memory-efficient
            chunked path for long sequences). Defaults to `"auto"`.
        kernel_initializer: initializer for the attention and feed-forward
            kernels. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for their biases. Defaults to
            `"zeros"`.
        seed: int or `None`, seed for the dropout layers (each derives its
            own seed from it). Defaults to `None`.
        num_key_value_heads: int or `None`, key/value heads of the
            attention sub-layers (grouped-query attention; `1`:
            multi-query); must divide `num_heads`. Defaults to `None`
            (`num_heads`).
        lora_rank: int or `None`, build with LoRA adapters of this rank on
            the attention (see `enable_lora`; recorded in the config).
            Defaults to `None`.
        lora_alpha: float or `None`, the LoRA scale numerator. Defaults to
            `None` (`lora_rank`).
        lora_targets: tuple of str, the projections that get adapters.
            Defaults to `("query", "value")`.
        normalization: str, `"layer"` (layer normalization) or `"rms"` (RMS
            normalization: `x / sqrt(mean(x**2) + epsilon) * gamma`, no
            centering and no offset, as in Llama-style decoders). Defaults
            to `"layer"`.
        use_bias: bool, whether the attention projections, the
            feed-forward layers and the layer norms' offsets have biases
            (`False`: none anywhere in the block). Defaults to `True`.
        position_embedding: `None`, `"rotary"`, `"alibi"` or `"relative"`
            (T5's learned bias, see `relative_num_buckets`): relative
            positions inside the self-attention (see
            `MultiHeadSelfAttention`); with them, no positions need adding
            to the inputs. Defaults to `None`.
        rotary_max_wavelength: float, the rotary embedding's longest
            wavelength. Defaults to `10000`.
        rotary_scaling_factor: float, divides the rotary frequencies.
            Defaults to `1.0`.
        rotary_fraction: float in (0, 1], the share of each head that
            rotates. Defaults to `1.0`.
        relative_num_buckets: int, the buckets of
            `position_embedding="relative"`. Defaults to `32`.
        relative_max_distance: int, where its last bucket starts.
            Defaults to `128`.
        shared_relative_bias: bool, with `position_embedding="relative"`:
            the layer owns no bias table and reads it from each call's
            `relative_attention_bias`, so one table serves a stack of
            layers (as T5 shares its first layer's). Defaults to `False`.
        qk_norm: bool, RMS-normalize each head's queries and keys before
            the scores (every attention of the block). Defaults to `False`.
        logit_soft_cap: float or `None`, `s -> cap * tanh(s / cap)` on the
            attention scores (every attention of the block). Defaults to
            `None`.
        gated_feedforward: bool, a gated feed-forward network
            `(activation(x W_g) * x W_u) W_o` (three projections): SwiGLU
            with `activation="silu"`, GeGLU with `"gelu"`, as in Llama,
            Mistral and Gemma. Defaults to `False`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(batch_size, seq_len, hidden_dim)`.
        mask: optional bool tensor of shape `(batch_size, seq_len)`, `True`
            for real tokens. Defaults to the Keras mask carried by `inputs`.
        attention_mask: optional bool tensor of shape
            `(batch_size, seq_len, seq_len)` (a leading 1 broadcasts), `True`
            where query `i` may attend to key `j`.
        training: bool, whether dropout is active.
        return_attention_scores: bool, whether to also return the attention
            weights. Defaults to `False`.
        cache: optional dict from `init_cache(batch_size, max_length)`, for
            step-by-step decoding with `causal=True` (GPT-style): the
            self-attention keys and values of the earlier positions.
            Defaults to `None`.
        cache_update_index: int or scalar int tensor, with `cache`: the
            position of the first input step. Defaults to `None`.
        relative_attention_bias: with `shared_relative_bias=True`, the T5
            bias table `(relative_num_buckets, num_heads)` (for example a
            weight the model owns, passed to every block); `None`
            otherwise. Defaults to `None`.

    Returns:
        A tensor of shape `(batch_size, seq_len, hidden_dim)`, or the tuple
        `(outputs, scores)` with `scores` of shape
        `(batch_size, num_heads, seq_len, seq_len)` when
        `return_attention_scores=True`. With a `cache`, the updated cache
        comes last: `(outputs, new_cache)` or `(outputs, scores,
        new_cache)` (scores over the cache's `max_length` keys). Decoding
        step by step gives the outputs of one call on the whole sequence
        (see `MultiHeadSelfAttention`).

    Masking:
        The padding mask, `attention_mask`, `causal` and `window` are
        combined with a logical AND in the self-attention, so values at
        padded positions never reach valid ones (the feed-forward network and
        the normalizations act on each position alone). Padded positions
        output zeros, so a fully padded sequence gives zeros, with finite
        gradients. The output carries the input's padding mask.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_selfattn.layers.transformer_block import TransformerBlock
    >>> block = TransformerBlock(num_heads=2, ff_dim=16)
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> tuple(block(x).shape)
    (2, 5, 8)
    >>> mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
    >>> y, scores = block(x, mask=mask, return_attention_scores=True)
    >>> tuple(scores.shape)
    (2, 2, 5, 5)
    >>> y = keras.ops.convert_to_numpy(y)
    >>> bool(np.all(y[0, 3:] == 0.0) and np.all(y[1] == 0.0))
    True
    >>> model = keras.Sequential([
    ...     keras.Input((None,), dtype="int32"),
    ...     keras.layers.Embedding(100, 8, mask_zero=True),
    ...     TransformerBlock(num_heads=2, ff_dim=16, causal=True),
    ...     TransformerBlock(num_heads=2, ff_dim=16, causal=True),
    ... ])
    >>> tuple(model(np.array([[5, 7, 0]])).shape)
    (1, 3, 8)
    >>> # GPT-style decoding with a key/value cache:
    >>> gpt = TransformerBlock(num_heads=2, ff_dim=16, causal=True)
    >>> full = keras.ops.convert_to_numpy(gpt(x))
    >>> cache = gpt.init_cache(batch_size=2, max_length=5)
    >>> steps = []
    >>> for i in range(5):
    ...     y, cache = gpt(x[:, i : i + 1], cache=cache, cache_update_index=i)
    ...     steps.append(keras.ops.convert_to_numpy(y))
    >>> np.allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    True

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Xiong et al., 2020, on pre-norm](https://arxiv.org/abs/2002.04745)
    """

    def __init__(
        self,
        num_heads,
        ff_dim,
        key_dim=None,
        dropout=0.1,
        attention_dropout=None,
        activation="relu",
        norm_first=False,
        layer_norm_epsilon=1e-6,
        causal=False,
        window=None,
        score="dot_product",
        attention_impl="auto",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        num_key_value_heads=None,
        lora_rank=None,
        lora_alpha=None,
        lora_targets=("query", "value"),
        normalization="layer",
        use_bias=True,
        position_embedding=None,
        rotary_max_wavelength=10000,
        rotary_scaling_factor=1.0,
        rotary_fraction=1.0,
        qk_norm=False,
        logit_soft_cap=None,
        gated_feedforward=False,
        relative_num_buckets=32,
        relative_max_distance=128,
        shared_relative_bias=False,
        **kwargs,
    ):
        causal = _validation.boolean("causal", causal)
        attention_impl = _validation.one_of(
            "attention_impl", attention_impl, ("auto", "dense", "chunked")
        )
        window = _validation.positive_int("window", window, allow_none=True)
        score = _validation.one_of("score", score, _validation.ATTENTION_SCORES)
        super().__init__(
            num_heads=num_heads,
            ff_dim=ff_dim,
            key_dim=key_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            activation=activation,
            norm_first=norm_first,
            layer_norm_epsilon=layer_norm_epsilon,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            seed=seed,
            num_key_value_heads=num_key_value_heads,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_targets=lora_targets,
            normalization=normalization,
            use_bias=use_bias,
            position_embedding=position_embedding,
            rotary_max_wavelength=rotary_max_wavelength,
            rotary_scaling_factor=rotary_scaling_factor,
            rotary_fraction=rotary_fraction,
            qk_norm=qk_norm,
            logit_soft_cap=logit_soft_cap,
            gated_feedforward=gated_feedforward,
            relative_num_buckets=relative_num_buckets,
            relative_max_distance=relative_max_distance,
            shared_relative_bias=shared_relative_bias,
            **kwargs,
        )
        self.causal = causal
        self.window = window
        self.score = score
        self.attention_impl = attention_impl

    def build(self, input_shape):
        _validation.sequence_shape("inputs", input_shape, self.name)
        self._self_attention = MultiHeadSelfAttention(
            causal=self.causal,
            window=self.window,
            score=self.score,
            attention_impl=self.attention_impl,
            **self._attention_kwargs("self_attention", seed_offset=0),
            **self._position_kwargs(),
        )
        self._self_attention.build(input_shape)
        self._self_attention_norm, self._self_attention_dropout = (
            self._norm_and_dropout("self_attention", input_shape, 1)
        )
        self._build_feedforward(input_shape, seed_offset=2)
        if self.lora_rank is not None:
            # Rebuilt from a config with adapters: frozen as when enabled.
            self._freeze_all_but_lora()

    def init_cache(self, batch_size, max_length):
        """An empty key/value cache for step-by-step decoding with a causal
        block (GPT-style generation).

        The self-attention's cache (`MultiHeadSelfAttention.init_cache`):
        pass it to `call` with `cache_update_index`, which returns the new
        cache with the outputs. The block must be built (called once, or
        `build(input_shape)`).

        Args:
            batch_size: int (or a scalar int tensor), the batch size of the
                calls that will use the cache.
            max_length: int, the most positions the cache holds.

        Returns:
            A dict of tensors: `key` `(batch_size, num_heads, max_length,
            key_dim)`, `value` `(batch_size, num_heads, max_length,
            value_dim)` and `key_mask` `(batch_size, max_length)`.
        """
        if not self.causal:
            raise _validation.invalid(
                "causal",
                "True for a block with a cache (a position must not see "
                "later ones)",
                self.causal,
            )
        check_built(self, "init_cache")
        return self._self_attention.init_cache(batch_size, max_length)

    def call(
        self,
        inputs,
        mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        cache=None,
        cache_update_index=None,
        relative_attention_bias=None,
    ):
        padding = _masking.check_padding_mask(
            "mask", _masking.resolve_mask(inputs, mask), inputs
        )
        x, scores, new_cache = self._self_attention_sublayer(
            inputs,
            padding,
            attention_mask,
            training,
            return_attention_scores,
            cache,
            cache_update_index,
            relative_attention_bias,
        )
        outputs = self._feedforward_and_finish(x, padding, training)
        scores = (scores,) if return_attention_scores else ()
        return call_result(outputs, scores, new_cache)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(
        self,
        inputs,
        mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        cache=None,
        cache_update_index=None,
        relative_attention_bias=None,
    ):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        return attention_output_spec(
            outputs, self.num_heads, inputs, return_attention_scores, cache
        )

    def get_config(self):
        return {
            **super().get_config(),
            "causal": self.causal,
            "window": self.window,
            "score": self.score,
            "attention_impl": self.attention_impl,
        }
