"""Multi-head self-attention on a single `(batch, seq_len, features)` input."""

import math

import keras
from keras import ops

from keras_selfattn.layers import _initializers
from keras_selfattn.layers import _kernels
from keras_selfattn.layers import _masking
from keras_selfattn.layers import _positions
from keras_selfattn.layers import _quantization
from keras_selfattn.layers import _validation

_SCORES = _validation.ATTENTION_SCORES
_IMPLS = _kernels.IMPLS
# `attention_impl="auto"` switches to the chunked path from this length on:
# the dense path keeps `(B, N, T, T)` float32 tensors for the backward pass
# (4.8 GB peak at batch 1, 8 heads and 8,192 tokens; the chunked path needs
# 1.6 GB and is still faster there than `keras.layers.MultiHeadAttention`).
CHUNKED_MIN_LENGTH = _kernels.CHUNKED_MIN_LENGTH
# The tensors of `MultiHeadSelfAttention.init_cache`.
_CACHE_KEYS = {"key", "value", "key_mask"}


@keras.saving.register_keras_serializable(package="keras_selfattn")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention over one sequence, with Keras masking.

    Each head projects the input to queries, keys and values and mixes the
    values with softmax weights; the heads are concatenated and projected:

    `head_h = softmax(score(x W_q^h, x W_k^h)) x W_v^h`,
    `output = concat(head_1, ..., head_H) W_o`.

    `score="dot_product"` is scaled dot-product attention,
    `score(q, k) = q k^T / sqrt(key_dim)`; with the same weights the layer
    computes exactly `keras.layers.MultiHeadAttention(num_heads, key_dim)`
    called with `query = value = key = inputs`. `score="additive"` is the
    additive (Bahdanau) scorer `score(q_i, k_j) = v^T tanh(q_i + k_j)` with a
    learned vector `v` per head.

    Unlike `keras.layers.MultiHeadAttention` it takes a single input, so it
    works in `keras.Sequential`, and `key_dim` defaults to
    `input_dim // num_heads`.

    Args:
        num_heads: int, number of attention heads.
        key_dim: int, size of each head's queries and keys. Defaults to
            `input_dim // num_heads` (which must then divide evenly).
        value_dim: int, size of each head's values. Defaults to `key_dim`.
        output_dim: int, size of the output features. Defaults to the input
            feature size.
        dropout: float in [0, 1), dropout rate on the attention weights.
            Defaults to `0.0`.
        use_bias: bool, whether the projections have biases. Defaults to
            `True`.
        causal: bool, whether position `i` may only attend to positions
            `j <= i` (decoder-style). Defaults to `False`.
        window: int or `None`, if set, position `i` only attends to
            positions `j` with `|i - j| <= window` (with `causal`,
            `i - window <= j <= i`).
            Note: `keras.layers.MultiHeadAttention(sliding_window=w)` keeps
            `|i - j| < w`, so our `window=w` equals its `sliding_window=w + 1`.
            Defaults to `None`.
        score: str, `"dot_product"` or `"additive"`. Defaults to
            `"dot_product"`.
        kernel_initializer: initializer for the projection kernels. Defaults
            to `"glorot_uniform"`.
        bias_initializer: initializer for the biases. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer for the kernels.
        bias_regularizer: optional regularizer for the biases.
        kernel_constraint: optional constraint for the kernels.
        bias_constraint: optional constraint for the biases.
        seed: int or `None`, seed for the attention dropout. Defaults to
            `None`.
        attention_impl: str, how the attention weights are computed, with
            the same results (to float32 rounding) and masking either way:
            `"dense"` materializes the `(batch_size, num_heads, seq_len,
            seq_len)` weights; `"chunked"` processes blocks of `chunk_size`
            queries with an exact float32 softmax over all their keys and
            recomputes each block in the backward pass, so memory grows as
            `O(seq_len)`, not `O(seq_len**2)` (with `window=w` a block only
            visits the keys within the band, so time and memory grow as
            `O(seq_len * w)`; `causal` alone still visits, and masks, every
            key). `"chunked"` needs `score="dot_product"` and `dropout=0`.
            `"auto"` uses `"chunked"` from `CHUNKED_MIN_LENGTH` (4,096)
            tokens on and `"dense"` below; when the length is not static
            (`keras.Input((None, d))`) it decides at run time. It stays
            dense for additive scores and with attention dropout in
            training. Every setting uses the dense path when called with
            `return_attention_scores=True`, since the caller then wants the
            whole weight tensor. Defaults to `"auto"`.
        lora_rank: int or `None`, build the layer with LoRA adapters of this
            rank already enabled (see `enable_lora`; saved in the config so
            a `.keras` file reloads with them). Defaults to `None`.
        lora_alpha: float or `None`, the LoRA scale numerator: the update
            is `(lora_alpha / lora_rank) * A B`. Defaults to `None`
            (`lora_rank`: a scale of 1).
        lora_targets: tuple of str, the projections that get adapters,
            among `"query"`, `"key"`, `"value"`, `"output"`. Defaults to
            `("query", "value")`, as KerasHub.
        num_key_value_heads: int or `None`, the number of key/value heads
            (grouped-query attention, as in Llama or Mistral): query head
            `h` attends with key/value head `h // (num_heads //
            num_key_value_heads)`; `1` is multi-query attention. It must
            divide `num_heads`. The key/value weights and a decoding cache
            shrink in proportion. With the same weights, equal to
            `keras.layers.GroupedQueryAttention`. Defaults to `None`
            (`num_heads`: plain multi-head attention).
        chunk_size: int or `None`, queries per block on the chunked path.
            Defaults to `None`: a power of two from 16 to 512 chosen from the
            static shape so that one block holds about 16M scores (with
            `window=w`, about `w`).
        position_embedding: `None`, `"rotary"`, `"alibi"` or `"relative"`:
            relative positions inside the attention (they need
            `score="dot_product"`). `"rotary"` rotates queries and keys
            at their positions (RoFormer, Llama; see `RotaryEmbedding`);
            `"alibi"` adds `-m_h * |i - j|` to head `h`'s scores, with
            Press et al.'s slopes `m_h` (BLOOM, MPT); `"relative"` adds
            T5's learned bias per bucket of `j - i` (a weight
            `relative_attention_bias` of shape `(relative_num_buckets,
            num_heads)`). All depend on `i - j` only: a sequence padded
            on the left attends as the unpadded one, and a cached step at
            position `p` equals row `p` of the full call. They apply on
            every path (dense, chunked, banded, cached). Defaults to
            `None` (no positions: add them to the inputs, e.g. with
            `PositionalEncoding`).
        rotary_max_wavelength: float, the rotary embedding's longest
            wavelength (Llama's `rope_theta`). Defaults to `10000`.
        rotary_scaling_factor: float, divides the rotary frequencies
            (linear interpolation to longer contexts). Defaults to `1.0`.
        rotary_fraction: float in (0, 1], the share of each head's
            features that rotate (the first ones; GPT-NeoX's partial
            rotary). Defaults to `1.0`.
        qk_norm: bool, normalize each head's queries and keys (RMS
            normalization with a learned scale per feature, shared by the
            heads) before the scores, as in OLMo 2, Qwen 3 and Gemma 3;
            it keeps the logits bounded in long or low-precision training.
            Defaults to `False`.
        relative_num_buckets: int >= 4, the buckets of
            `position_embedding="relative"` (T5's learned bias per bucket
            of `j - i` and per head: exact distances first, then
            logarithmic; half for later keys unless `causal`). Defaults to
            `32`.
        relative_max_distance: int, distances from this on share the last
            bucket. Defaults to `128`.
        shared_relative_bias: bool, with `position_embedding="relative"`:
            the layer owns no bias table and reads it from each call's
            `relative_attention_bias`, so one table serves a stack of
            layers (as T5 shares its first layer's). Defaults to `False`.
        logit_soft_cap: float or `None`: cap the scores smoothly,
            `s -> cap * tanh(s / cap)`, before the softmax (Gemma 2 uses
            50), on every path and backend. Defaults to `None`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(batch_size, seq_len, input_dim)`.
        mask: optional bool tensor of shape `(batch_size, seq_len)`, `True`
            for real tokens. Defaults to the Keras mask carried by `inputs`.
        attention_mask: optional bool tensor of shape
            `(batch_size, seq_len, seq_len)` (a leading 1 broadcasts), `True`
            where query `i` may attend to key `j`.
        training: bool, whether dropout is active.
        return_attention_scores: bool, whether to also return the attention
            weights. Defaults to `False`.
        cache: optional dict from `init_cache(batch_size, max_length)`, for
            step-by-step decoding with `causal=True`: the keys and values of
            the earlier positions. Defaults to `None`.
        cache_update_index: int or scalar int tensor, with `cache`: the
            position of the first of the `seq_len` input steps (0 for a
            prompt given at once, then its length, ...). Defaults to `None`.
        relative_attention_bias: with `shared_relative_bias=True`, the T5
            bias table `(relative_num_buckets, num_heads)` (for example a
            weight the model owns, passed to every block); `None`
            otherwise. Defaults to `None`.

    Returns:
        A tensor of shape `(batch_size, seq_len, output_dim)`, or the tuple
        `(outputs, scores)` with `scores` of shape
        `(batch_size, num_heads, seq_len, seq_len)` when
        `return_attention_scores=True`. With a `cache`, the updated cache
        comes last: `(outputs, new_cache)` or `(outputs, scores, new_cache)`,
        with `scores` over the whole cache, `(batch_size, num_heads,
        seq_len, max_length)`.

    Decoding with a cache:
        The inputs at positions `cache_update_index ...` are projected once,
        written into the cache, and attend over every position written so
        far (causal and `window` limits in absolute positions), so decoding
        `n` tokens costs `O(n * max_length)` rather than re-running the
        prefix. The cache keeps the padding mask of what was written: a
        prompt padded on the left (masked) decodes as it would alone. The
        outputs equal those of one call on the whole sequence. The cached
        path is always the dense one (`attention_impl` applies to full
        calls).

    Masking:
        The padding mask, `attention_mask`, `causal` and `window` are combined
        with a logical AND. Masked keys get exactly 0 weight. A query position
        with no key left to attend to (a padded position, or a fully padded
        sequence) outputs zeros, and its gradients are finite. The output
        carries the input's padding mask.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_selfattn import MultiHeadSelfAttention
    >>> layer = MultiHeadSelfAttention(num_heads=2)
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> tuple(layer(x).shape)
    (2, 5, 8)
    >>> mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
    >>> y, scores = layer(x, mask=mask, return_attention_scores=True)
    >>> tuple(scores.shape)
    (2, 2, 5, 5)
    >>> bool(np.all(keras.ops.convert_to_numpy(y)[1] == 0.0))
    True
    >>> chunked = MultiHeadSelfAttention(
    ...     num_heads=2, attention_impl="chunked", chunk_size=2
    ... )
    >>> tuple(chunked(x, mask=mask).shape)
    (2, 5, 8)
    >>> model = keras.Sequential([
    ...     keras.Input((None,), dtype="int32"),
    ...     keras.layers.Embedding(100, 8, mask_zero=True),
    ...     MultiHeadSelfAttention(num_heads=2, causal=True),
    ... ])
    >>> tuple(model(np.array([[5, 7, 0]])).shape)
    (1, 3, 8)
    >>> decoder = MultiHeadSelfAttention(num_heads=2, causal=True)
    >>> full = decoder(x)  # builds the layer
    >>> cache = decoder.init_cache(batch_size=2, max_length=5)
    >>> prompt, cache = decoder(x[:, :3], cache=cache, cache_update_index=0)
    >>> step, cache = decoder(x[:, 3:4], cache=cache, cache_update_index=3)
    >>> np.allclose(step, keras.ops.convert_to_numpy(full)[:, 3:4], atol=1e-5)
    True

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Bahdanau et al., 2015](https://arxiv.org/abs/1409.0473)
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        value_dim=None,
        output_dim=None,
        dropout=0.0,
        use_bias=True,
        causal=False,
        window=None,
        score="dot_product",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed=None,
        attention_impl="auto",
        chunk_size=None,
        num_key_value_heads=None,
        lora_rank=None,
        lora_alpha=None,
        lora_targets=("query", "value"),
        position_embedding=None,
        rotary_max_wavelength=10000,
        rotary_scaling_factor=1.0,
        rotary_fraction=1.0,
        qk_norm=False,
        logit_soft_cap=None,
        relative_num_buckets=32,
        relative_max_distance=128,
        shared_relative_bias=False,
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
        lora_rank, lora_alpha, lora_targets = _validation.lora_arguments(
            lora_rank, lora_alpha, lora_targets
        )
        num_key_value_heads = _validation.key_value_heads(
            num_heads, num_key_value_heads
        )
        key_dim = _validation.positive_int("key_dim", key_dim, allow_none=True)
        value_dim = _validation.positive_int(
            "value_dim", value_dim, allow_none=True
        )
        output_dim = _validation.positive_int(
            "output_dim", output_dim, allow_none=True
        )
        dropout = _validation.rate("dropout", dropout)
        use_bias = _validation.boolean("use_bias", use_bias)
        causal = _validation.boolean("causal", causal)
        window = _validation.positive_int("window", window, allow_none=True)
        score = _validation.one_of("score", score, _SCORES)
        if position_embedding is not None and score != "dot_product":
            raise _validation.invalid(
                "position_embedding",
                "None with score='additive' (relative positions need "
                "dot-product scores)",
                position_embedding,
            )
        shared_relative_bias = _validation.shared_relative_bias(
            shared_relative_bias, position_embedding
        )
        attention_impl = _validation.one_of(
            "attention_impl", attention_impl, _IMPLS
        )
        if attention_impl == "chunked" and (score != "dot_product" or dropout):
            raise _validation.invalid(
                "attention_impl",
                "'auto' or 'dense' with score='additive' or dropout > 0 "
                f"(got score={score!r}, dropout={dropout})",
                attention_impl,
            )
        chunk_size = _validation.positive_int(
            "chunk_size", chunk_size, allow_none=True
        )
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.output_dim = output_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.causal = causal
        self.window = window
        self.score = score
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.seed = (
            None if seed is None else _validation.non_negative_int("seed", seed)
        )
        self.attention_impl = attention_impl
        self.chunk_size = chunk_size
        self.num_key_value_heads = num_key_value_heads
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_targets = lora_targets
        self.position_embedding = position_embedding
        self.rotary_max_wavelength = rotary_max_wavelength
        self.rotary_scaling_factor = rotary_scaling_factor
        self.rotary_fraction = rotary_fraction
        self.qk_norm = qk_norm
        self.logit_soft_cap = logit_soft_cap
        self.relative_num_buckets = relative_num_buckets
        self.relative_max_distance = relative_max_distance
        self.shared_relative_bias = shared_relative_bias
        self._alibi_slopes = None
        if position_embedding == "alibi":
            self._alibi_slopes = _positions.alibi_slopes(num_heads)
        self._lora = {}  # target -> (lora_a, lora_b)
        self.supports_masking = True
        self._dropout_layer = keras.layers.Dropout(
            dropout,
            seed=seed,
            dtype=self.dtype_policy,
            name="attention_dropout",
        )

    def build(self, input_shape):
        input_dim = _validation.sequence_shape("inputs", input_shape, self.name)
        self._build_projections(input_dim, input_dim)

    def _build_projections(self, query_dim, context_dim):
        """Create the weights for queries of `query_dim` features attending
        over a context of `context_dim` features."""
        if self.key_dim is None and query_dim % self.num_heads != 0:
            raise ValueError(
                "Received an invalid value for argument `num_heads`, expected "
                f"a divisor of the input feature size {query_dim} when "
                "`key_dim` is not given (or pass `key_dim`). Received: "
                f"num_heads={self.num_heads}"
            )
        self._key_dim = self.key_dim or query_dim // self.num_heads
        self._value_dim = self.value_dim or self._key_dim
        self._output_dim = self.output_dim or query_dim
        heads, kd, vd = self.num_heads, self._key_dim, self._value_dim
        kv_heads = self.num_key_value_heads
        # Keras' EinsumDense for each projection, so `model.quantize` and
        # dtype policies reach them. Initializer offsets as when the layer
        # owned the kernels (0-3) and biases (4-7): same seeds, same values.
        self._query_dense = self._projection(
            "query", "btd,dnh->btnh", (None, heads, kd), "nh", query_dim, 0
        )
        self._key_dense = self._projection(
            "key", "btd,dnh->btnh", (None, kv_heads, kd), "nh", context_dim, 1
        )
        self._value_dense = self._projection(
            "value", "btd,dnh->btnh", (None, kv_heads, vd), "nh", context_dim, 2
        )
        self._output_dense = self._projection(
            "output",
            "btnv,nvo->bto",
            (None, self._output_dim),
            "o",
            (heads, vd),
            3,
        )
        # The score vector's seed offset as before the projections moved.
        self._weight_offset = 8 if self.use_bias else 4
        self._rotary_dim = _positions.rotary_dim(kd, self.rotary_fraction)
        if self.position_embedding == "rotary" and self._rotary_dim == 0:
            raise _validation.invalid(
                "rotary_fraction",
                f"a share of the key size {kd} that leaves at least 2 "
                "features to rotate",
                self.rotary_fraction,
            )
        if self.score == "additive":
            self.score_vector = self.add_weight(
                name="score_vector",
                shape=(heads, kd),
                initializer=_initializers.clone_initializer(
                    self.kernel_initializer, self._weight_offset
                ),
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
        if self.position_embedding == "relative" and not (
            self.shared_relative_bias
        ):
            # T5's learned bias, one per (bucket, head).
            self.relative_attention_bias = self.add_weight(
                name="relative_attention_bias",
                shape=(self.relative_num_buckets, heads),
                initializer=keras.initializers.RandomNormal(
                    stddev=query_dim**-0.5,
                    seed=None if self.seed is None else self.seed + 11,
                ),
            )
        if self.qk_norm:
            # One RMS-norm scale per feature, shared by the heads.
            self.query_norm_scale = self.add_weight(
                name="query_norm_scale", shape=(kd,), initializer="ones"
            )
            self.key_norm_scale = self.add_weight(
                name="key_norm_scale", shape=(kd,), initializer="ones"
            )
        self._dropout_layer.build(None)
        if self.lora_rank is not None:
            # Rebuilding a layer saved with adapters (from its config).
            self._add_lora(self.lora_rank, self.lora_alpha, self.lora_targets)

    def enable_lora(self, rank, lora_alpha=None, targets=("query", "value")):
        """Freeze the layer and train low-rank adapters (LoRA) instead.

        Each target projection's kernel `W` becomes `W + (lora_alpha / rank)
        A B`, with `A` of shape `(input_dim, rank)` (He-uniform) and `B` of
        shape `(rank, ...)` (zeros, so the outputs do not change until
        training). Every other weight of the layer stops training: only the
        adapters do. The adapters are saved with the layer, and its config
        records `lora_rank`, so a `.keras` file reloads with them (frozen
        the same way).

        Args:
            rank: int, the adapters' rank.
            lora_alpha: float or `None`, the scale numerator. Defaults to
                `None` (`rank`).
            targets: tuple of str among `"query"`, `"key"`, `"value"`,
                `"output"`. Defaults to `("query", "value")`.
        """
        check_built(self, "enable_lora")
        check_lora_once(self)
        rank, lora_alpha, targets = _validation.lora_arguments(
            rank, lora_alpha, targets
        )
        self._add_lora(rank, lora_alpha, targets)

    def _add_lora(self, rank, lora_alpha, targets):
        self._tracker.unlock()
        for weight in self.trainable_weights:
            weight.trainable = False
        for target in targets:
            kernel = getattr(self, f"{target}_kernel")
            # (D, N, H) kernels: A (D, r), B (r, N, H); the output kernel
            # (N, V, O): A (N, V, r), B (r, O).
            inner = 2 if target == "output" else 1
            a_shape = tuple(kernel.shape[:inner]) + (rank,)
            b_shape = (rank,) + tuple(kernel.shape[inner:])
            lora_a = self.add_weight(
                name=f"{target}_lora_a",
                shape=a_shape,
                initializer=keras.initializers.HeUniform(
                    seed=None if self.seed is None else self.seed + 7
                ),
            )
            lora_b = self.add_weight(
                name=f"{target}_lora_b",
                shape=b_shape,
                initializer="zeros",
            )
            self._lora[target] = (lora_a, lora_b)
        self._tracker.lock()
        self.lora_rank = rank
        self.lora_alpha = lora_alpha
        self.lora_targets = targets

    @property
    def lora_weights(self):
        """The LoRA adapters' weights (`[]` before `enable_lora`)."""
        return [weight for pair in self._lora.values() for weight in pair]

    def _effective_kernel(self, target):
        """The kernel of a projection, with its LoRA update if any."""
        kernel = getattr(self, f"{target}_kernel")
        if target not in self._lora:
            return kernel
        lora_a, lora_b = self._lora[target]
        scale = (self.lora_alpha or self.lora_rank) / self.lora_rank
        # (D, r) . (r, N, H) or (N, V, r) . (r, O): the kernel's shape.
        update = ops.tensordot(lora_a, lora_b, axes=1)
        return kernel + ops.cast(scale, kernel.dtype) * update

    def _projection(self, name, equation, output_shape, bias_axes, dims, n):
        """One projection: an `EinsumDense` named `name`, built for inputs
        whose trailing dimensions are `dims`, its initializers cloned with
        seed offsets `n` (kernel) and `n + 4` (bias)."""
        dims = dims if isinstance(dims, tuple) else (dims,)
        dense = _Projection(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=_initializers.clone_initializer(
                self.kernel_initializer,
                n,
                # Variance scaling (Glorot, He, ...) over the 3-D kernel as
                # release 0.1 computed it (fans of a kernel `(A, B, C)`:
                # A * B in, A * C out), not the EinsumDense default (the
                # projection's input and output sizes): same initial
                # weights, same trained models.
                input_axes=[0, 1],
                output_axes=[0, 2],
            ),
            bias_initializer=_initializers.clone_initializer(
                self.bias_initializer, n + 4
            ),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            name=name,
            dtype=_quantization.sublayer_dtype(self, name),
            trainable=self.trainable,
        )
        dense.build((None, None) + dims)
        return dense

    def _projections(self):
        """`{target: EinsumDense}` for the four projections."""
        return {
            "query": self._query_dense,
            "key": self._key_dense,
            "value": self._value_dense,
            "output": self._output_dense,
        }

    @property
    def query_kernel(self):
        """The query kernel `(input_dim, num_heads, key_dim)`."""
        return self._query_dense.kernel

    @property
    def key_kernel(self):
        """The key kernel `(context_dim, num_key_value_heads, key_dim)`."""
        return self._key_dense.kernel

    @property
    def value_kernel(self):
        """The value kernel `(context_dim, num_key_value_heads,
        value_dim)`."""
        return self._value_dense.kernel

    @property
    def output_kernel(self):
        """The output kernel `(num_heads, value_dim, output_dim)`."""
        return self._output_dense.kernel

    @property
    def query_bias(self):
        """The query bias `(num_heads, key_dim)`, `None` without biases."""
        return self._query_dense.bias

    @property
    def key_bias(self):
        """The key bias `(num_key_value_heads, key_dim)`, or `None`."""
        return self._key_dense.bias

    @property
    def value_bias(self):
        """The value bias `(num_key_value_heads, value_dim)`, or `None`."""
        return self._value_dense.bias

    @property
    def output_bias(self):
        """The output bias `(output_dim,)`, or `None`."""
        return self._output_dense.bias

    def _quantized(self):
        """Whether a projection is quantized (`model.quantize`): then each
        runs through its `EinsumDense` (the quantized kernels), not the
        fused float matmul."""
        return any(
            dense.quantization_mode is not None
            for dense in self._projections().values()
        )

    def quantize(self, mode=None, type_check=True, config=None):
        """Quantize the four projections (see `keras.Model.quantize`, which
        reaches them in a model). The scores, softmax and value mixing stay
        in the compute dtype."""
        _quantization.quantize_sublayers(self, mode, type_check, config)

    def load_own_variables(self, store):
        legacy = self._legacy_variables()
        if self.built and len(store.keys()) == len(legacy) != len(
            self._trainable_variables + self._non_trainable_variables
        ):
            # A file from release 0.1, when the layer owned its kernels
            # and biases: they come first, in this order.
            for i, variable in enumerate(legacy):
                variable.assign(store[str(i)])
            for dense in self._projections().values():
                dense._loaded_by_parent = True
            return
        super().load_own_variables(store)

    def _legacy_variables(self):
        """The layer's weights in the order release 0.1 saved them."""
        if not self.built:
            return []
        projections = list(self._projections().values())
        weights = [dense.kernel for dense in projections]
        if self.use_bias:
            weights += [dense.bias for dense in projections]
        own = self._trainable_variables + self._non_trainable_variables
        return weights + own

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
        relative = self._relative(relative_attention_bias)
        if cache is not None or cache_update_index is not None:
            return self._call_cached(
                inputs,
                padding,
                attention_mask,
                training,
                return_attention_scores,
                cache,
                cache_update_index,
                relative,
            )
        attention_mask = _masking.check_attention_mask(
            "attention_mask", attention_mask, inputs.shape, inputs.shape
        )
        # Scores are asked for: the whole (B, N, T, T) weights, densely.
        impl = "dense" if return_attention_scores else self.attention_impl
        query, key, value = self._queries_keys_values(inputs)
        positions = ops.arange(ops.shape(inputs)[1], dtype="int32")[None]
        query, key = self._transform_heads(query, key, positions)
        outputs, scores = self._attend(
            query,
            key,
            value,
            training,
            return_attention_scores,
            impl=impl,
            query_valid=padding,
            key_valid=padding,
            attention_mask=attention_mask,
            causal=self.causal,
            relative=relative,
        )
        _masking.set_keras_mask(outputs, padding)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def init_cache(self, batch_size, max_length):
        """An empty key/value cache for step-by-step decoding.

        Pass it to `call` with `cache_update_index`: each call writes the
        keys and values of its positions into the cache and attends over
        everything written so far, so a decoding step costs `O(max_length)`
        instead of re-running the prefix. Only a `causal=True` layer has a
        cache (a position must not see later ones). The layer must be built
        (called once, or `build(input_shape)`): the head sizes depend on the
        input width.

        Args:
            batch_size: int (or a scalar int tensor), the batch size of the
                calls that will use the cache.
            max_length: int, the most positions the cache holds.

        Returns:
            A dict of tensors: `key` `(batch_size, num_key_value_heads,
            max_length, key_dim)` and `value` `(batch_size,
            num_key_value_heads, max_length, value_dim)` (zeros, in the
            compute dtype), and `key_mask`
            `(batch_size, max_length)` (bool, `False`: nothing written
            yet). The cached keys of padded positions stay masked.
        """
        if not self.causal:
            raise _validation.invalid(
                "causal",
                "True for a layer with a cache (a position must not see "
                "later ones)",
                self.causal,
            )
        check_built(self, "init_cache")
        if isinstance(batch_size, int) or not hasattr(batch_size, "shape"):
            batch_size = _validation.positive_int("batch_size", batch_size)
        max_length = _validation.positive_int("max_length", max_length)
        heads = self.num_key_value_heads  # the cache holds only those
        return {
            "key": ops.zeros(
                (batch_size, heads, max_length, self._key_dim),
                dtype=self.compute_dtype,
            ),
            "value": ops.zeros(
                (batch_size, heads, max_length, self._value_dim),
                dtype=self.compute_dtype,
            ),
            "key_mask": ops.zeros((batch_size, max_length), dtype="bool"),
        }

    def _call_cached(
        self,
        inputs,
        padding,
        attention_mask,
        training,
        return_attention_scores,
        cache,
        index,
        relative,
    ):
        """`call` with a cache: the positions `index ..` of `inputs`
        attend over the cached ones and themselves; returns `(outputs,
        [scores,] new_cache)`."""
        capacity, index = _check_cache(self, inputs, cache, index)
        attention_mask = _masking.check_attention_mask(
            "attention_mask",
            attention_mask,
            inputs.shape,
            (inputs.shape[0], capacity),
        )
        query = self._scale_query(self._project_query(inputs))  # (B,N,T,H)
        key, value = self._project_key_value(inputs)  # (B, N, T, H|V)
        # Step t sits at position index + t: keys enter the cache rotated.
        positions = ops.arange(ops.shape(inputs)[1], dtype="int32")[None]
        positions = positions + ops.cast(index, "int32")
        query, key = self._transform_heads(query, key, positions)
        start = (0, 0, index, 0)
        key_cache = ops.slice_update(
            cache["key"], start, ops.cast(key, cache["key"].dtype)
        )  # (B, N, L, H)
        value_cache = ops.slice_update(
            cache["value"], start, ops.cast(value, cache["value"].dtype)
        )  # (B, N, L, V)
        valid = padding
        if valid is None:
            valid = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        key_mask = ops.slice_update(
            cache["key_mask"], (0, index), valid
        )  # (B, L)
        # Query t sits at position index + t: causal (and window) limits in
        # absolute positions, as the full call applies them.
        outputs, scores = self._attend(
            query,
            key_cache,
            value_cache,
            training,
            return_attention_scores,
            impl="dense",
            query_valid=padding,
            key_valid=key_mask,
            attention_mask=attention_mask,
            causal=True,
            query_offset=index,
            relative=relative,
        )
        _masking.set_keras_mask(outputs, padding)
        new_cache = {"key": key_cache, "value": value_cache}
        new_cache["key_mask"] = key_mask
        scores = (scores,) if return_attention_scores else ()
        return call_result(outputs, scores, new_cache)

    def _queries_keys_values(self, inputs):
        """`(B, T, D)` -> queries `(B, N, T, H)` (scaled for dot-product
        scores), keys `(B, K, T, H)` and values `(B, K, T, V)`."""
        if self.score == "dot_product":
            return self._project_self(inputs)
        return (self._project_query(inputs), *self._project_key_value(inputs))

    def _transform_heads(self, query, key, positions):
        """QK-norm, then rotary positions, on projected query and key
        heads `(B, N|K, T, H)` at int `positions` `(1, T)` (either head
        may be `None`: cross-attention normalizes its cached keys once)."""
        if self.qk_norm:
            # The RMS norm undoes the 1/sqrt(key_dim) folded into the
            # queries: scale them again after.
            if query is not None:
                query = self._scale_query(
                    _rms_norm(query, self.query_norm_scale)
                )
            if key is not None:
                key = _rms_norm(key, self.key_norm_scale)
        if self.position_embedding == "rotary":
            rotary = (
                self.rotary_max_wavelength,
                self.rotary_scaling_factor,
                self._rotary_dim,
            )
            query = _positions.apply_rotary(query, positions, *rotary)
            key = _positions.apply_rotary(key, positions, *rotary)
        return query, key

    def _relative(self, table=None):
        """The seam's `relative` argument (T5 bias), or `None`; `table` is
        the call's `relative_attention_bias` (checked here)."""
        if not self.shared_relative_bias:
            if table is not None:
                raise _validation.invalid(
                    "relative_attention_bias",
                    "None unless the layer is built with "
                    "shared_relative_bias=True (it owns its table)",
                    f"a tensor of shape {tuple(table.shape)}",
                )
            table = getattr(self, "relative_attention_bias", None)
        elif table is None or tuple(table.shape) != (
            self.relative_num_buckets,
            self.num_heads,
        ):
            raise _validation.invalid(
                "relative_attention_bias",
                "a float tensor of shape (relative_num_buckets, num_heads) "
                f"= {(self.relative_num_buckets, self.num_heads)} (the "
                "layer has shared_relative_bias=True)",
                None if table is None else f"shape {tuple(table.shape)}",
            )
        if self.position_embedding != "relative":
            return None
        return (
            table,
            self.relative_num_buckets,
            self.relative_max_distance,
            not self.causal,  # bidirectional
        )

    def _scale_query(self, query):
        """Dot-product queries times `1 / sqrt(key_dim)` (the smaller
        tensor, not the `T_q x T_k` scores); additive ones unchanged."""
        if self.score != "dot_product":
            return query
        return query * ops.cast(1.0 / math.sqrt(self._key_dim), query.dtype)

    def _attend(
        self, query, key, value, training, need_probs, relative=None, **masks
    ):
        """Projected heads -> `(outputs (B, T_q, output_dim), scores
        (B, N, T_q, T_k) or None)`, through the kernel seam
        (`_kernels.attend`, which takes the mask parts as `**masks`)."""
        dropout = None
        if training and self.dropout > 0:

            def dropout(probs):
                return self._dropout_layer(probs, training=True)

        context, probs, has_key = _kernels.attend(
            query,
            key,
            value,
            window=self.window,
            block=self.chunk_size,
            need_probs=need_probs,
            dropout=dropout,
            score_vector=getattr(self, "score_vector", None),
            alibi_slopes=self._alibi_slopes,
            soft_cap=self.logit_soft_cap,
            relative=relative,
            **masks,
        )  # (B, N, T_q, V)
        outputs = self._project_output(context)  # (B, T_q, O)
        if has_key is not None:
            # A query with no valid key outputs zeros (not the output bias).
            outputs = ops.where(has_key[:, 0], outputs, ops.zeros_like(outputs))
        if probs is not None:
            probs = ops.cast(probs, self.compute_dtype)
        return outputs, probs

    def _project(self, x, kernel, bias):
        # (B, T, D) x (D, N, H) -> (B, N, T, H): heads first, so the score and
        # mixing products are plain batched matmuls over (B, N).
        y = ops.einsum("btd,dnh->bnth", x, kernel)
        if self.use_bias:
            y = y + bias[None, :, None, :]
        return y

    def _project_query(self, query_inputs):
        """`(B, T_q, D_q)` -> queries `(B, N, T_q, H)`."""
        if self._quantized():
            return self._project_through("query", query_inputs)
        return self._project(
            query_inputs,
            self._effective_kernel("query"),
            getattr(self, "query_bias", None),
        )

    def _project_key_value(self, context):
        """`(B, T_k, D_k)` -> keys `(B, K, T_k, H)`, values `(B, K, T_k, V)`
        with `K = num_key_value_heads`.

        Split from the query projection so a decoder can cache them.
        """
        if self._quantized():
            return (
                self._project_through("key", context),
                self._project_through("value", context),
            )
        key = self._project(
            context,
            self._effective_kernel("key"),
            getattr(self, "key_bias", None),
        )
        value = self._project(
            context,
            self._effective_kernel("value"),
            getattr(self, "value_bias", None),
        )
        return key, value

    def _project_through(self, target, x):
        """`(B, T, D)` -> `(B, N, T, X)` through the `target` projection's
        own (quantized) call, with its LoRA update."""
        y = self._projections()[target](x)  # (B, T, N, X)
        y = y + self._lora_delta(target, x)
        return ops.transpose(y, (0, 2, 1, 3))

    def _lora_delta(self, target, x):
        """The LoRA update of the `target` projection applied to `x`
        (`0.0` without adapters): `scale * (x A) B`, never forming `A B`,
        so it works over a quantized kernel."""
        if target not in self._lora:
            return 0.0
        lora_a, lora_b = self._lora[target]
        scale = (self.lora_alpha or self.lora_rank) / self.lora_rank
        # (B, T, D) . (D, r) or (B, T, N, V) . (N, V, r): (B, T, r).
        inner = ops.tensordot(x, lora_a, axes=len(lora_a.shape) - 1)
        # (B, T, r) . (r, N, H) or (r, O).
        update = ops.tensordot(inner, lora_b, axes=1)
        return update * ops.cast(scale, update.dtype)

    def _project_self(self, inputs):
        """`(B, T, D)` -> scaled queries, keys `(B, N, T, H)`, values
        `(B, N, T, V)`, with one fused matmul.

        The three kernels stay separate weights (they match
        `keras.layers.MultiHeadAttention`'s); they are concatenated per call,
        which costs `O(D * N * H)` against the `O(B * T * D * N * H)` matmul.
        """
        heads, kd, vd = self.num_heads, self._key_dim, self._value_dim
        kv_heads = self.num_key_value_heads
        scale = 1.0 / math.sqrt(self._key_dim)
        if self._quantized():
            query = self._project_through("query", inputs)
            key, value = self._project_key_value(inputs)
            return query * ops.cast(scale, query.dtype), key, value
        dim = self.query_kernel.shape[0]
        # 1/sqrt(key_dim) folded into the query kernel and bias: the scores
        # come out scaled at no cost.
        kernel = ops.concatenate(
            [
                ops.reshape(
                    self._effective_kernel("query") * scale, (dim, heads * kd)
                ),
                ops.reshape(
                    self._effective_kernel("key"), (dim, kv_heads * kd)
                ),
                ops.reshape(
                    self._effective_kernel("value"), (dim, kv_heads * vd)
                ),
            ],
            axis=1,
        )  # (D, N * H + K * (H + V)), K key/value heads
        batch, seq_len = ops.shape(inputs)[0], ops.shape(inputs)[1]
        # A 2-D matmul: TensorFlow runs (B, T, D) x (D, F) as a slower
        # broadcasting batched matmul.
        fused = ops.matmul(
            ops.reshape(inputs, (-1, dim)), kernel
        )  # (B * T, N * H + K * (H + V))
        if self.use_bias:
            fused = fused + ops.concatenate(
                [
                    ops.reshape(self.query_bias * scale, (-1,)),
                    ops.reshape(self.key_bias, (-1,)),
                    ops.reshape(self.value_bias, (-1,)),
                ],
                axis=0,
            )
        if kd == vd and kv_heads == heads:
            # One transpose for all three: (B, T, 3, N, H) -> (3, B, N, T, H).
            fused = ops.reshape(fused, (batch, seq_len, 3, heads, kd))
            query, key, value = ops.unstack(
                ops.transpose(fused, (2, 0, 3, 1, 4)), 3, axis=0
            )
            return query, key, value
        query, key, value = ops.split(
            fused, [heads * kd, heads * kd + kv_heads * kd], axis=-1
        )

        def heads_first(x, count, size):
            # (B * T, N * X) -> (B, T, N, X) -> (B, N, T, X)
            x = ops.reshape(x, (batch, seq_len, count, size))
            return ops.transpose(x, (0, 2, 1, 3))

        return (
            heads_first(query, heads, kd),
            heads_first(key, kv_heads, kd),
            heads_first(value, kv_heads, vd),
        )

    def _project_output(self, context_heads):
        """`(B, N, T, V)` -> `(B, T, output_dim)`, with the output bias."""
        if self._quantized():
            # (B, N, T, V) -> (B, T, N, V) -> (B, T, O)
            context = ops.transpose(context_heads, (0, 2, 1, 3))
            return self._output_dense(context) + self._lora_delta(
                "output", context
            )
        heads, vd, out_dim = self.output_kernel.shape
        shape = ops.shape(context_heads)
        # (B, N, T, V) -> (B, T, N, V) -> (B * T, N * V): one 2-D matmul.
        context = ops.reshape(
            ops.transpose(context_heads, (0, 2, 1, 3)), (-1, heads * vd)
        )
        outputs = ops.matmul(
            context,
            ops.reshape(
                self._effective_kernel("output"), (heads * vd, out_dim)
            ),
        )  # (B * T, output_dim)
        if self.use_bias:
            outputs = outputs + self.output_bias
        return ops.reshape(outputs, (shape[0], shape[2], out_dim))

    def compute_mask(self, inputs, mask=None):
        return _masking.resolve_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        output_dim = self.output_dim or input_shape[-1]
        return tuple(input_shape[:-1]) + (output_dim,)

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
        config = {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "output_dim": self.output_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "causal": self.causal,
            "window": self.window,
            "score": self.score,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(
                self.kernel_regularizer
            ),
            "bias_regularizer": keras.regularizers.serialize(
                self.bias_regularizer
            ),
            "kernel_constraint": keras.constraints.serialize(
                self.kernel_constraint
            ),
            "bias_constraint": keras.constraints.serialize(
                self.bias_constraint
            ),
            "seed": self.seed,
            "attention_impl": self.attention_impl,
            "chunk_size": self.chunk_size,
            "num_key_value_heads": self.num_key_value_heads,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_targets": list(self.lora_targets),
            "position_embedding": self.position_embedding,
            "rotary_max_wavelength": self.rotary_max_wavelength,
            "rotary_scaling_factor": self.rotary_scaling_factor,
            "rotary_fraction": self.rotary_fraction,
            "qk_norm": self.qk_norm,
            "logit_soft_cap": self.logit_soft_cap,
            "relative_num_buckets": self.relative_num_buckets,
            "relative_max_distance": self.relative_max_distance,
            "shared_relative_bias": self.shared_relative_bias,
        }
        # Quantized projections record their policies (see _quantization).
        return _quantization.config_with_quantized(self, config)


def _rms_norm(x, scale, epsilon=1e-6):
    """RMS normalization over the last axis, in float32, times `scale`."""
    x32 = ops.cast(x, "float32")
    rms = ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + epsilon)
    return ops.cast(x32 * rms * ops.cast(scale, "float32"), x.dtype)


class _Projection(keras.layers.EinsumDense):
    """An attention projection: Keras' `EinsumDense`, whose weights its
    layer may instead load from a release-0.1 file (where the layer owned
    them; see `MultiHeadSelfAttention.load_own_variables`)."""

    _loaded_by_parent = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Its inputs may carry the padding mask; the layer handles it.
        self.supports_masking = True

    def quantize(self, mode=None, type_check=True, config=None):
        # Keras refuses subclasses (their `call` might not match the
        # quantized one); this one changes only how weights load.
        super().quantize(mode, type_check=False, config=config)

    def load_own_variables(self, store):
        if self._loaded_by_parent:
            self._loaded_by_parent = False
            return
        super().load_own_variables(store)


def call_result(outputs, scores, new_cache):
    """What a layer's `call` returns: `outputs` alone, or the tuple
    `(outputs, *scores, new_cache)` of what was asked (`scores` empty when
    no scores were asked for, `new_cache` `None` without a cache)."""
    result = (outputs, *scores)
    if new_cache is not None:
        result += (new_cache,)
    return result if len(result) > 1 else outputs


def attention_output_spec(outputs, num_heads, inputs, return_scores, cache):
    """`compute_output_spec` of a self-attention layer or block whose
    output spec is `outputs`: the scores `(batch_size, num_heads, seq_len,
    key_len)` (`key_len` the cache's `max_length` with a cache) and the
    cache's spec, when asked."""
    batch, seq_len = inputs.shape[:2]
    key_len = seq_len if cache is None else cache["key"].shape[2]
    scores = ()
    if return_scores:
        shape = (batch, num_heads, seq_len, key_len)
        scores = (keras.KerasTensor(shape, dtype=outputs.dtype),)
    spec = None if cache is None else cache_spec(cache)
    return call_result(outputs, scores, spec)


def check_lora_once(layer):
    """LoRA adapters can be enabled once per layer."""
    if layer.lora_rank is not None:
        raise ValueError(
            f"LoRA is already enabled on layer {layer.name!r} (rank "
            f"{layer.lora_rank}): it can be enabled once."
        )


def cache_spec(cache):
    """`KerasTensor`s of a cache's structure (for symbolic calls)."""
    return {
        name: keras.KerasTensor(tensor.shape, dtype=tensor.dtype)
        for name, tensor in cache.items()
    }


def check_cache_pair(cache, index):
    """`cache` and `cache_update_index` come together or not at all."""
    if cache is None or index is None:
        missing = "cache" if cache is None else "cache_update_index"
        raise _validation.invalid(
            missing,
            "both `cache` (from `init_cache`) and `cache_update_index` (the "
            "position of the first input step), or neither",
            None,
        )


def check_built(layer, method):
    """A layer's weights must exist before `method` (their sizes depend on
    the input width)."""
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} is not built: call it once or "
            f"`build(...)` before `{method}` (its weights' sizes depend on "
            "the input width)."
        )


def _check_cache(layer, inputs, cache, index):
    """Validate a `call` with `cache`/`cache_update_index`; returns the
    cache's `max_length` and the index (an int when it is known)."""
    check_cache_pair(cache, index)
    if not layer.causal:
        raise _validation.invalid(
            "cache",
            "None for a layer with causal=False (only a causal layer "
            "decodes step by step)",
            type(cache).__name__,
        )
    if not isinstance(cache, dict) or set(cache) != _CACHE_KEYS:
        raise _validation.invalid(
            "cache",
            f"the dict from `init_cache`, with keys {sorted(_CACHE_KEYS)}",
            sorted(cache) if isinstance(cache, dict) else type(cache).__name__,
            error=TypeError,
        )
    shape = tuple(cache["key"].shape)
    if len(shape) != 4 or (shape[1], shape[3]) != (
        layer.num_key_value_heads,
        layer._key_dim,
    ):
        raise _validation.invalid(
            "cache",
            f"keys of shape (batch_size, {layer.num_key_value_heads}, "
            "max_length, "
            f"{layer._key_dim}) (this layer's `init_cache`)",
            shape,
        )
    capacity = shape[2]
    steps = inputs.shape[1]
    if isinstance(index, int) or hasattr(index, "numpy"):
        # Known now: past the cache, `slice_update` would clamp silently.
        index = int(index)
        last = capacity - (steps or 1)
        if not 0 <= index <= last:
            raise _validation.invalid(
                "cache_update_index",
                f"an integer in [0, {last}] ({steps or 1} input step(s) in a "
                f"cache of max_length {capacity})",
                index,
            )
    return capacity, index
