"""A Transformer decoder block: causal self-attention, cross-attention over
the encoder outputs and a feed-forward network."""

import keras
from keras import ops

from keras_selfattn.layers import _masking
from keras_selfattn.layers import _transformer
from keras_selfattn.layers import _validation
from keras_selfattn.layers._cross_attention import CrossAttention
from keras_selfattn.layers.multi_head_self_attention import (
    MultiHeadSelfAttention,
)
from keras_selfattn.layers.multi_head_self_attention import cache_spec
from keras_selfattn.layers.multi_head_self_attention import call_result
from keras_selfattn.layers.multi_head_self_attention import check_built
from keras_selfattn.layers.multi_head_self_attention import check_cache_pair


@keras.saving.register_keras_serializable(package="keras_selfattn")
class TransformerDecoderBlock(_transformer.TransformerLayer):
    """A Transformer decoder block for encoder-decoder (seq2seq) models.

    Three sub-layers, each with dropout, a residual connection and layer
    normalization. Post-norm (the default):

    `x = LN(x + Dropout(CausalSelfAttention(x)))`,
    `x = LN(x + Dropout(CrossAttention(x, encoder_outputs)))`,
    `y = LN(x + Dropout(FF(x)))`, with `FF(x) = act(x W_1 + b_1) W_2 + b_2`.

    Pre-norm (`norm_first=True`) computes `x = x + Dropout(SubLayer(LN(x)))`
    for each of the three, with no final normalization: put a
    `keras.layers.LayerNormalization` after the last pre-norm block. The
    encoder outputs enter the cross-attention as they are (normalize them at
    the end of a pre-norm encoder).

    The encoder width may differ from the decoder width: the cross-attention
    projects keys and values from `encoder_dim` features.

    Args:
        num_heads: int, number of attention heads (in both attentions).
        ff_dim: int, hidden size of the feed-forward network.
        key_dim: int, size of each head's queries and keys. Defaults to
            `hidden_dim // num_heads` (which must then divide evenly).
        dropout: float in [0, 1), dropout rate on the outputs of the three
            sub-layers, before each residual sum. Defaults to `0.1`.
        attention_dropout: float in [0, 1), dropout rate on the attention
            weights. Defaults to `dropout`.
        activation: str or callable, the feed-forward activation. Defaults
            to `"relu"`.
        norm_first: bool, pre-norm (`True`) or post-norm (`False`). Defaults
            to `False`.
        layer_norm_epsilon: float > 0, epsilon of the layer normalizations.
            Defaults to `1e-6`.
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
        inputs: float tensor of shape `(batch_size, target_len, hidden_dim)`,
            the (shifted) target sequence.
        encoder_outputs: float tensor of shape
            `(batch_size, source_len, encoder_dim)`.
        mask: optional bool tensor of shape `(batch_size, target_len)`,
            `True` for real target tokens. Defaults to the Keras mask carried
            by `inputs`.
        encoder_mask: optional bool tensor of shape
            `(batch_size, source_len)`, `True` for real source tokens.
            Defaults to the Keras mask carried by `encoder_outputs`.
        attention_mask: optional bool tensor of shape
            `(batch_size, target_len, target_len)` (a leading 1 broadcasts)
            for the self-attention, combined with the causal mask.
        training: bool, whether dropout is active.
        return_attention_scores: bool, whether to also return the attention
            weights. Defaults to `False`.
        cache: optional dict from `init_cache(encoder_outputs, max_length)`
            for step-by-step decoding: the encoder's keys and values
            (projected once) and the self-attention keys and values of the
            earlier target positions; `encoder_outputs` and `encoder_mask`
            are then not needed. Defaults to `None`.
        cache_update_index: int or scalar int tensor, with `cache`: the
            target position of the first input step. Defaults to `None`.
        relative_attention_bias: with `shared_relative_bias=True`, the T5
            bias table `(relative_num_buckets, num_heads)` (for example a
            weight the model owns, passed to every block); `None`
            otherwise. Defaults to `None`.

    Returns:
        A tensor of shape `(batch_size, target_len, hidden_dim)`, or, when
        `return_attention_scores=True`, the tuple
        `(outputs, self_attention_scores, cross_attention_scores)` with
        shapes `(batch_size, num_heads, target_len, target_len)` and
        `(batch_size, num_heads, target_len, source_len)`. With a `cache`,
        the updated cache comes last (`(outputs, new_cache)`, ...), and the
        self-attention scores cover the cache's `max_length` keys; the
        outputs equal those of one call on the whole target sequence.

    Masking:
        The self-attention combines the target padding mask, the causal mask
        and `attention_mask` (logical AND), so an output never depends on a
        later target token. The cross-attention combines the target padding
        mask with the encoder padding mask, so encoder values at padded
        source positions never matter; a target position whose source is
        fully padded (an empty source) gets zeros from the cross-attention
        and a finite output. Padded target positions output zeros, with
        finite gradients. The output carries the target padding mask.
        Keras leaves `mask` as `None` when `call` receives two tensors, so
        both padding masks always fall back to the inputs' Keras masks.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_selfattn.layers.transformer_decoder_block import (
    ...     TransformerDecoderBlock,
    ... )
    >>> block = TransformerDecoderBlock(num_heads=2, ff_dim=16)
    >>> target = np.random.rand(2, 5, 8).astype("float32")
    >>> source = np.random.rand(2, 7, 6).astype("float32")
    >>> tuple(block(target, source).shape)
    (2, 5, 8)
    >>> source_mask = np.array([[1] * 4 + [0] * 3, [0] * 7], dtype=bool)
    >>> y, self_scores, cross_scores = block(
    ...     target, source, encoder_mask=source_mask,
    ...     return_attention_scores=True,
    ... )
    >>> tuple(self_scores.shape), tuple(cross_scores.shape)
    ((2, 2, 5, 5), (2, 2, 5, 7))
    >>> cross_scores = keras.ops.convert_to_numpy(cross_scores)
    >>> bool(np.all(cross_scores[0, :, :, 4:] == 0.0))
    True
    >>> bool(np.all(np.isfinite(keras.ops.convert_to_numpy(y))))
    True
    >>> source_ids = keras.Input((None,), dtype="int32")
    >>> target_ids = keras.Input((None,), dtype="int32")
    >>> encoded = keras.layers.Embedding(100, 6, mask_zero=True)(source_ids)
    >>> decoded = keras.layers.Embedding(100, 8, mask_zero=True)(target_ids)
    >>> decoded = block(decoded, encoded)
    >>> model = keras.Model([source_ids, target_ids], decoded)
    >>> tuple(model([np.array([[4, 2, 0]]), np.array([[1, 9]])]).shape)
    (1, 2, 8)
    >>> # Decoding step by step: the encoder is projected once.
    >>> cache = block.init_cache(source, max_length=5)
    >>> first, cache = block(target[:, :1], cache=cache, cache_update_index=0)
    >>> tuple(first.shape), tuple(cache["self_attention"]["key"].shape)
    ((2, 1, 8), (2, 2, 5, 4))

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

    def build(self, inputs_shape, encoder_outputs_shape=None):
        # Keras passes the shape of every tensor argument whose name matches
        # (`<arg>_shape`), here and in `build_from_config` on `.keras` load,
        # so no build shapes need to live in `get_config`.
        _validation.sequence_shape("inputs", inputs_shape, self.name)
        if encoder_outputs_shape is None:
            raise ValueError(
                "Received an invalid value for argument `encoder_outputs`, "
                "expected its shape when building layer "
                f"'{self.name}': call `build(inputs_shape, "
                "encoder_outputs_shape)` or call the layer. Received: "
                "encoder_outputs_shape=None"
            )
        _validation.sequence_shape(
            "encoder_outputs", encoder_outputs_shape, self.name
        )
        self._self_attention = MultiHeadSelfAttention(
            causal=True,
            **self._attention_kwargs("self_attention", seed_offset=0),
            **self._position_kwargs(),
        )
        self._self_attention.build(inputs_shape)
        self._self_attention_norm, self._self_attention_dropout = (
            self._norm_and_dropout("self_attention", inputs_shape, 2)
        )
        self._cross_attention = CrossAttention(
            **self._attention_kwargs("cross_attention", seed_offset=1),
        )
        self._cross_attention.build(inputs_shape, encoder_outputs_shape)
        self._cross_attention_norm, self._cross_attention_dropout = (
            self._norm_and_dropout("cross_attention", inputs_shape, 3)
        )
        self._build_feedforward(inputs_shape, seed_offset=4)
        if self.lora_rank is not None:
            # Rebuilt from a config with adapters: frozen as when enabled.
            self._freeze_all_but_lora()

    def call(
        self,
        inputs,
        encoder_outputs=None,
        mask=None,
        encoder_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        cache=None,
        cache_update_index=None,
        relative_attention_bias=None,
    ):
        _validation.sequence_shape("inputs", inputs.shape, self.name)
        cached = cache is not None or cache_update_index is not None
        if cached:
            _check_block_cache(cache, cache_update_index)
        elif encoder_outputs is None:
            raise _validation.invalid(
                "encoder_outputs",
                "a tensor (batch_size, source_len, encoder_dim) (or, when "
                "decoding, a `cache` from `init_cache`)",
                None,
            )
        else:
            _validation.sequence_shape(
                "encoder_outputs", encoder_outputs.shape, self.name
            )
        # With two tensor arguments Keras leaves `mask` as `None`: always
        # fall back to the masks the tensors carry.
        padding = _masking.check_padding_mask(
            "mask", _masking.resolve_mask(inputs, mask), inputs
        )
        encoder_padding = None
        if not cached:
            encoder_padding = _masking.check_padding_mask(
                "encoder_mask",
                _masking.resolve_mask(encoder_outputs, encoder_mask),
                encoder_outputs,
            )
        x, self_scores, self_cache = self._self_attention_sublayer(
            inputs,
            padding,
            attention_mask,
            training,
            return_attention_scores,
            cache["self_attention"] if cached else None,
            cache_update_index,
            relative_attention_bias,
        )
        residual = x
        x = self._sublayer_input(x, self._cross_attention_norm)
        y = self._cross_attention(
            x,
            encoder_outputs if not cached else None,
            context_mask=encoder_padding,
            query_mask=padding,
            training=training,
            return_attention_scores=return_attention_scores,
            cache=cache["cross_attention"] if cached else None,
        )  # (B, T, D) [, (B, N, T, S)]
        y, cross_scores = y if return_attention_scores else (y, None)
        x = self._sublayer_output(
            residual,
            y,
            self._cross_attention_norm,
            self._cross_attention_dropout,
            training,
        )
        outputs = self._feedforward_and_finish(x, padding, training)
        scores = (self_scores, cross_scores) if return_attention_scores else ()
        new_cache = None
        if cached:
            new_cache = dict(cache, self_attention=self_cache)
        return call_result(outputs, scores, new_cache)

    def init_cache(self, encoder_outputs, max_length, encoder_mask=None):
        """The key/value cache for step-by-step decoding through `call`.

        The encoder's keys and values are projected once, here; the
        self-attention cache has room for `max_length` target positions.
        Pass the cache to `call` with `cache_update_index` (and no
        `encoder_outputs`): it returns the new cache with the outputs.

        Args:
            encoder_outputs: `(batch_size, source_len, encoder_dim)`.
            max_length: int, the most target positions to decode.
            encoder_mask: optional bool `(batch_size, source_len)`; defaults
                to the Keras mask carried by `encoder_outputs` (all valid
                when there is none).

        Returns:
            A dict of two caches: `self_attention` (as
            `MultiHeadSelfAttention.init_cache`: `key`, `value`, `key_mask`
            with room for `max_length` positions) and `cross_attention`
            (the encoder's projected `key (B, N, S, H)`, `value
            (B, N, S, V)` and `key_mask (B, S)`).
        """
        max_length = _validation.positive_int("max_length", max_length)
        _validation.sequence_shape(
            "encoder_outputs", encoder_outputs.shape, self.name
        )
        check_built(self, "init_cache")
        batch = ops.shape(encoder_outputs)[0]
        return {
            "self_attention": self._self_attention.init_cache(
                batch, max_length
            ),
            "cross_attention": self._cross_attention.init_cache(
                encoder_outputs, encoder_mask
            ),
        }

    def decode_step(self, inputs, index, cache, return_attention_scores=False):
        """One decoding step: `call` with the cache, in inference mode.

        Kept for code written against release 0.1; it is
        `self(inputs, cache=cache, cache_update_index=index,
        training=False)`.

        Args:
            inputs: `(batch_size, 1, hidden_dim)`, the embedded token at
                position `index`.
            index: scalar int, the position of `inputs`.
            cache: the dict from `init_cache` (or the previous step).
            return_attention_scores: bool, whether to also return this
                position's cross-attention probabilities. Defaults to
                `False`.

        Returns:
            `(outputs (batch_size, 1, hidden_dim), new_cache)`, and with
            `return_attention_scores=True` a third item, the
            cross-attention probabilities `(batch_size, num_heads, 1,
            source_len)`.
        """
        result = self(
            inputs,
            cache=cache,
            cache_update_index=index,
            training=False,
            return_attention_scores=return_attention_scores,
        )
        if return_attention_scores:
            outputs, _, cross_scores, new_cache = result
            return outputs, new_cache, cross_scores
        return result

    def compute_output_shape(self, inputs_shape, encoder_outputs_shape=None):
        return tuple(inputs_shape)

    def compute_output_spec(
        self,
        inputs,
        encoder_outputs=None,
        mask=None,
        encoder_mask=None,
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
        scores = ()
        if return_attention_scores:
            batch, target_len = inputs.shape[:2]
            key_len, source_len = target_len, None
            if cache is None:
                source_len = encoder_outputs.shape[1]
            else:
                key_len = cache["self_attention"]["key_mask"].shape[1]
                source_len = cache["cross_attention"]["key_mask"].shape[1]
            scores = tuple(
                keras.KerasTensor(
                    (batch, self.num_heads, target_len, length),
                    dtype=self.compute_dtype,
                )
                for length in (key_len, source_len)
            )
        spec = None
        if cache is not None:
            spec = {name: cache_spec(part) for name, part in cache.items()}
        return call_result(outputs, scores, spec)


def _check_block_cache(cache, index):
    check_cache_pair(cache, index)
    if not isinstance(cache, dict) or set(cache) != {
        "self_attention",
        "cross_attention",
    }:
        raise _validation.invalid(
            "cache",
            "the dict from `TransformerDecoderBlock.init_cache`, with keys "
            "['cross_attention', 'self_attention']",
            sorted(cache) if isinstance(cache, dict) else type(cache).__name__,
            error=TypeError,
        )
