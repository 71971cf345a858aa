"""What the Transformer blocks share: scalar arguments, the feed-forward
network and the residual + layer-norm wiring around each sub-layer."""

import keras

from keras_selfattn.layers import _layer_norm
from keras_selfattn.layers import _masking
from keras_selfattn.layers import _quantization
from keras_selfattn.layers import _validation
from keras_selfattn.layers._initializers import clone_initializer
from keras_selfattn.layers.multi_head_self_attention import check_built
from keras_selfattn.layers.multi_head_self_attention import check_lora_once

# The blocks' `normalization` choices: layer norm, or RMS norm (scale only,
# no centering, as in Llama-style decoders).
NORMALIZATIONS = ("layer", "rms")


def _offset_seed(seed, offset):
    # Each dropout gets its own seed: two `Dropout` layers seeded alike draw
    # identical masks whenever their inputs have the same shape.
    return None if seed is None else seed + offset


class TransformerLayer(keras.layers.Layer):
    """What the encoder and decoder blocks share: the scalar arguments, the
    feed-forward network and the residual + norm wiring of a sub-layer."""

    def __init__(
        self,
        num_heads,
        ff_dim,
        key_dim,
        dropout,
        attention_dropout,
        activation,
        norm_first,
        layer_norm_epsilon,
        kernel_initializer,
        bias_initializer,
        seed,
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
        relative_num_buckets=32,
        relative_max_distance=128,
        shared_relative_bias=False,
        gated_feedforward=False,
        **kwargs,
    ):
        num_heads = _validation.positive_int("num_heads", num_heads)
        (
            position_embedding,
            rotary_max_wavelength,
            rotary_scaling_factor,
            rotary_fraction,
            qk_norm,
            logit_soft_cap,
            relative_num_buckets,
            relative_max_distance,
        ) = _validation.attention_options(
            position_embedding,
            rotary_max_wavelength,
            rotary_scaling_factor,
            rotary_fraction,
            qk_norm,
            logit_soft_cap,
            relative_num_buckets,
            relative_max_distance,
        )
        shared_relative_bias = _validation.shared_relative_bias(
            shared_relative_bias, position_embedding
        )
        gated_feedforward = _validation.boolean(
            "gated_feedforward", gated_feedforward
        )
        normalization = _validation.one_of(
            "normalization", normalization, NORMALIZATIONS
        )
        use_bias = _validation.boolean("use_bias", use_bias)
        lora_rank, lora_alpha, lora_targets = _validation.lora_arguments(
            lora_rank, lora_alpha, lora_targets
        )
        num_key_value_heads = _validation.key_value_heads(
            num_heads, num_key_value_heads
        )
        ff_dim = _validation.positive_int("ff_dim", ff_dim)
        key_dim = _validation.positive_int("key_dim", key_dim, allow_none=True)
        dropout = _validation.rate("dropout", dropout)
        if attention_dropout is None:
            attention_dropout = dropout
        attention_dropout = _validation.rate(
            "attention_dropout", attention_dropout
        )
        try:
            activation = keras.activations.get(activation)
        except (ValueError, TypeError):
            raise _validation.invalid(
                "activation", "a Keras activation name or callable", activation
            ) from None
        norm_first = _validation.boolean("norm_first", norm_first)
        layer_norm_epsilon = _validation.positive_float(
            "layer_norm_epsilon", layer_norm_epsilon
        )
        if seed is not None:
            seed = _validation.non_negative_int("seed", seed)
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.lora_rank = lora_rank
        self.normalization = normalization
        self.use_bias = use_bias
        self.lora_alpha = lora_alpha
        self.lora_targets = lora_targets
        self.ff_dim = ff_dim
        self.key_dim = key_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.position_embedding = position_embedding
        self.rotary_max_wavelength = rotary_max_wavelength
        self.rotary_scaling_factor = rotary_scaling_factor
        self.rotary_fraction = rotary_fraction
        self.qk_norm = qk_norm
        self.logit_soft_cap = logit_soft_cap
        self.relative_num_buckets = relative_num_buckets
        self.relative_max_distance = relative_max_distance
        self.shared_relative_bias = shared_relative_bias
        self.gated_feedforward = gated_feedforward
        self.supports_masking = True

    def _sublayer_kwargs(self, name):
        """`name`, `dtype` and `trainable` for a sub-layer created in
        `build`."""
        # Keras' `trainable` setter reaches only the sub-layers that exist
        # when it runs; one created later starts trainable, variables and
        # all. Passing the flag on freezes what a block frozen before its
        # first call builds (and what a frozen `.keras` block rebuilds).
        return {
            "name": name,
            # A quantized sub-layer's policy, from a reloaded config.
            "dtype": _quantization.sublayer_dtype(self, name),
            "trainable": self.trainable,
        }

    def _attention_kwargs(self, name, seed_offset):
        """Arguments for the attention sub-layer `name`."""
        return {
            **self._sublayer_kwargs(name),
            "num_heads": self.num_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_targets": self.lora_targets,
            "use_bias": self.use_bias,
            "key_dim": self.key_dim,
            "dropout": self.attention_dropout,
            "kernel_initializer": clone_initializer(
                self.kernel_initializer, 10 * seed_offset
            ),
            "bias_initializer": clone_initializer(
                self.bias_initializer, 10 * seed_offset
            ),
            "seed": _offset_seed(self.seed, seed_offset),
            "qk_norm": self.qk_norm,
            "logit_soft_cap": self.logit_soft_cap,
        }

    def _position_kwargs(self):
        """The position options of the self-attention sub-layer."""
        return {
            "position_embedding": self.position_embedding,
            "rotary_max_wavelength": self.rotary_max_wavelength,
            "rotary_scaling_factor": self.rotary_scaling_factor,
            "rotary_fraction": self.rotary_fraction,
            "relative_num_buckets": self.relative_num_buckets,
            "relative_max_distance": self.relative_max_distance,
            "shared_relative_bias": self.shared_relative_bias,
        }

    def _norm_and_dropout(self, prefix, input_shape, seed_offset):
        """The `LayerNormalization` and residual `Dropout` of a sub-layer."""
        # Keras' layer normalization with a hand-written backward pass (the
        # same weights). It computes in float32 even for float16 inputs, so
        # `dtype_policy` is safe under mixed precision.
        if self.normalization == "rms":
            norm = _layer_norm.RMSNormalization(
                epsilon=self.layer_norm_epsilon,
                **self._sublayer_kwargs(f"{prefix}_rms_norm"),
            )
        else:
            # With `use_bias=False`, no offset (`beta`) either.
            norm = _layer_norm.LayerNormalization(
                epsilon=self.layer_norm_epsilon,
                center=self.use_bias,
                **self._sublayer_kwargs(f"{prefix}_layer_norm"),
            )
        norm.build(input_shape)
        dropout = keras.layers.Dropout(
            self.dropout,
            seed=_offset_seed(self.seed, seed_offset),
            **self._sublayer_kwargs(f"{prefix}_dropout"),
        )
        dropout.build(input_shape)
        return norm, dropout

    def _build_feedforward(self, input_shape, seed_offset):
        """The position-wise network `Dense(ff_dim) -> Dense(hidden_dim)`;
        gated, `(activation(x W_g) * x W_u) W_o`."""
        hidden_dim = input_shape[-1]
        if self.gated_feedforward:
            self._feedforward_gate = keras.layers.Dense(
                self.ff_dim,
                activation=self.activation,
                use_bias=self.use_bias,
                kernel_initializer=clone_initializer(
                    self.kernel_initializer, 104
                ),
                bias_initializer=clone_initializer(self.bias_initializer, 105),
                **self._sublayer_kwargs("feedforward_gate_dense"),
            )
            self._feedforward_gate.build(input_shape)
        self._feedforward_intermediate = keras.layers.Dense(
            self.ff_dim,
            # Gated: the linear "up" projection; the gate has the activation.
            activation=None if self.gated_feedforward else self.activation,
            use_bias=self.use_bias,
            # Offsets past any attention sub-layer's (it uses 0..8).
            kernel_initializer=clone_initializer(self.kernel_initializer, 100),
            bias_initializer=clone_initializer(self.bias_initializer, 101),
            **self._sublayer_kwargs("feedforward_intermediate_dense"),
        )
        self._feedforward_intermediate.build(input_shape)
        self._feedforward_output = keras.layers.Dense(
            hidden_dim,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer, 102),
            bias_initializer=clone_initializer(self.bias_initializer, 103),
            **self._sublayer_kwargs("feedforward_output_dense"),
        )
        self._feedforward_output.build(tuple(input_shape[:-1]) + (self.ff_dim,))
        self._feedforward_norm, self._feedforward_dropout = (
            self._norm_and_dropout("feedforward", input_shape, seed_offset)
        )

    def _attention_layers(self):
        """The block's attention sub-layers (self- and cross-attention)."""
        return [
            getattr(self, name)
            for name in ("_self_attention", "_cross_attention")
            if hasattr(self, name)
        ]

    def enable_lora(self, rank, lora_alpha=None, targets=("query", "value")):
        """Freeze the block and train LoRA adapters on its attention.

        Every attention sub-layer gets adapters on its `targets`
        projections (see `MultiHeadSelfAttention.enable_lora`); every other
        weight (feed-forward, layer norms, the other projections) stops
        training. The config records `lora_rank`, so a `.keras` file
        reloads with the adapters, frozen the same way.

        Args:
            rank: int, the adapters' rank.
            lora_alpha: float or `None`, the scale numerator. Defaults to
                `None` (`rank`).
            targets: tuple of str among `"query"`, `"key"`, `"value"`,
                `"output"`. Defaults to `("query", "value")`, as KerasHub.
        """
        check_built(self, "enable_lora")
        check_lora_once(self)
        rank, lora_alpha, targets = _validation.lora_arguments(
            rank, lora_alpha, targets
        )
        for layer in self._attention_layers():
            layer.enable_lora(rank, lora_alpha, targets)
        self.lora_rank, self.lora_alpha = rank, lora_alpha
        self.lora_targets = targets
        self._freeze_all_but_lora()

    def _freeze_all_but_lora(self):
        """After LoRA: only the adapters train."""
        adapters = {
            id(weight)
            for layer in self._attention_layers()
            for weight in layer.lora_weights
        }
        for weight in self.weights:
            if id(weight) not in adapters:
                weight.trainable = False

    def _self_attention_sublayer(
        self,
        inputs,
        padding,
        attention_mask,
        training,
        return_attention_scores,
        cache,
        cache_update_index,
        relative_attention_bias=None,
    ):
        """The self-attention sub-layer of both blocks: norm, attention
        (with its cache when given), dropout and residual. Returns `(x,
        scores, new_cache)`, `None` for what was not asked."""
        x = self._sublayer_input(inputs, self._self_attention_norm)
        # The padding mask goes in explicitly: it may have come as `mask`
        # rather than riding on `inputs`. Scores only when asked: they
        # force the dense attention path.
        y = self._self_attention(
            x,
            mask=padding,
            attention_mask=attention_mask,
            training=training,
            return_attention_scores=return_attention_scores,
            cache=cache,
            cache_update_index=cache_update_index,
            relative_attention_bias=relative_attention_bias,
        )  # (B, T, D) [, (B, N, T, T|L)] [, new cache]
        y = y if isinstance(y, tuple) else (y,)
        scores = y[1] if return_attention_scores else None
        new_cache = y[-1] if cache is not None else None
        x = self._sublayer_output(
            inputs,
            y[0],
            self._self_attention_norm,
            self._self_attention_dropout,
            training,
        )
        return x, scores, new_cache

    def _sublayer_input(self, x, norm):
        # Pre-norm normalizes what enters the sub-layer ...
        return norm(x) if self.norm_first else x

    def _sublayer_output(self, x, y, norm, dropout, training):
        # ... post-norm normalizes the residual sum.
        y = x + dropout(y, training=training)
        return y if self.norm_first else norm(y)

    def _feedforward(self, x, training):
        y = self._sublayer_input(x, self._feedforward_norm)
        if self.gated_feedforward:
            gate = self._feedforward_gate(y)  # (B, T, ff_dim)
            y = gate * self._feedforward_intermediate(y)
        else:
            y = self._feedforward_intermediate(y)  # (B, T, ff_dim)
        y = self._feedforward_output(y)  # (B, T, D)
        return self._sublayer_output(
            x, y, self._feedforward_norm, self._feedforward_dropout, training
        )

    def _feedforward_and_finish(self, x, padding, training):
        """The feed-forward sub-layer, then zeros at padded positions (not
        LN(bias): a fully padded row is all zeros, like the attention layers)
        and the padding mask on the output."""
        x = self._feedforward(x, training)
        outputs = _masking.zero_masked_positions(x, padding)
        _masking.set_keras_mask(outputs, padding)
        return outputs

    def compute_mask(self, inputs, mask=None):
        return _masking.resolve_mask(inputs, mask)

    def quantize(self, mode=None, type_check=True, config=None):
        """Quantize every projection of the block: attention and
        feed-forward (see `keras.Model.quantize`, which reaches them in a
        model). Norms and the residual path stay in the compute dtype."""
        _quantization.quantize_sublayers(self, mode, type_check, config)

    def get_config(self):
        config = {
            **super().get_config(),
            "num_heads": self.num_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_targets": list(self.lora_targets),
            "normalization": self.normalization,
            "use_bias": self.use_bias,
            "ff_dim": self.ff_dim,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation": keras.activations.serialize(self.activation),
            "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
            "seed": self.seed,
            "position_embedding": self.position_embedding,
            "rotary_max_wavelength": self.rotary_max_wavelength,
            "rotary_scaling_factor": self.rotary_scaling_factor,
            "rotary_fraction": self.rotary_fraction,
            "qk_norm": self.qk_norm,
            "logit_soft_cap": self.logit_soft_cap,
            "relative_num_buckets": self.relative_num_buckets,
            "relative_max_distance": self.relative_max_distance,
            "shared_relative_bias": self.shared_relative_bias,
            "gated_feedforward": self.gated_feedforward,
        }
        # Quantized sub-layers record their policies (see _quantization).
        return _quantization.config_with_quantized(self, config)
