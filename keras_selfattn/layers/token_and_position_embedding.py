"""Token embedding plus a position encoding, from integer ids."""

import math

import keras
from keras import ops

from keras_selfattn.layers import _masking
from keras_selfattn.layers import _quantization
from keras_selfattn.layers import _validation
from keras_selfattn.layers._initializers import clone_initializer
from keras_selfattn.layers.positional_encoding import PositionalEncoding

_POSITIONS = ("learned", "sinusoidal")


@keras.saving.register_keras_serializable(package="keras_selfattn")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Embeds integer token ids and adds a position encoding.

    For ids `x` of length `T` and positions `t = start_index, ...,
    start_index + T - 1`:

    `output[b, i] = s * W_tok[x[b, i]] + PE[start_index + i]`,

    with `s = sqrt(embed_dim)` when `scale_embeddings` (as in Vaswani et al.)
    and `s = 1` otherwise. `W_tok` is a `keras.layers.Embedding` table and
    `PE` a `PositionalEncoding` sub-layer (`merge="add"`), either a trainable
    `(max_length, embed_dim)` table or the fixed sinusoids.

    Args:
        vocab_size: int, number of token ids; ids lie in
            `[0, vocab_size)`, and with `mask_zero` id `0` is padding.
        max_length: int, the number of positions: `start_index + seq_len`
            may not exceed it (for `position="sinusoidal"` too, as a limit).
        embed_dim: int, width of the token and position embeddings.
        mask_zero: bool, whether id `0` is padding: the output then carries
            the mask `ids != 0`. Defaults to `True`.
        position: str, `"learned"` (a trainable position table) or
            `"sinusoidal"` (fixed sinusoids, no weights); the `kind` of the
            `PositionalEncoding` sub-layer. Defaults to `"learned"`.
        scale_embeddings: bool, whether to multiply the token embeddings by
            `sqrt(embed_dim)` before adding positions. Defaults to `False`.
        embeddings_initializer: initializer for the token table and (a
            clone of it) for the learned position table. Defaults to
            `"uniform"`, the `keras.layers.Embedding` default.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: integer tensor of token ids, shape `(batch_size, seq_len)`.
            Ids are not range-checked here; they are looked up by
            `keras.layers.Embedding` (`ops.take`), which on TensorFlow wraps
            negative ids in `[-vocab_size, 0)` around (as NumPy does) and
            raises `InvalidArgumentError` for other out-of-range ids on CPU
            (eager and in graphs); under XLA they are clamped to the nearest
            valid id, and on GPU `tf.gather` documents zeros, both silently.
            Validate ids upstream (a tokenizer's vocabulary does).
        mask: optional bool tensor of shape `(batch_size, seq_len)`, `True`
            for real tokens. Defaults to the Keras mask carried by `inputs`.
        start_index: int or scalar integer tensor, the position of the first
            id, for incremental decoding: a length-1 input at
            `start_index=t` gets the row `t` of the full-length output (for
            the same id). Defaults to `0`.

    Returns:
        A float tensor of shape `(batch_size, seq_len, embed_dim)` in the
        compute dtype.

    Raises:
        ValueError: naming `max_length` when `start_index + seq_len` exceeds
            it and both are known when the layer runs (see
            `PositionalEncoding` for graphs with unknown lengths).

    Masking:
        Emits `ids != 0` when `mask_zero`, combined (logical AND) with a
        `mask` passed in or carried by `inputs`; with `mask_zero=False` it
        emits only that incoming mask (or none). Padded positions are not
        zeroed: they hold the padding id's embedding plus their position,
        and consumers of the mask ignore them. A fully padded row gives a
        mask row of all `False`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_selfattn.layers.token_and_position_embedding import (
    ...     TokenAndPositionEmbedding,
    ... )
    >>> layer = TokenAndPositionEmbedding(100, max_length=16, embed_dim=12)
    >>> ids = np.array([[5, 7, 9, 0, 0], [0, 0, 0, 0, 0]])
    >>> y = layer(ids)
    >>> tuple(y.shape)
    (2, 5, 12)
    >>> keras.ops.convert_to_numpy(y._keras_mask).tolist()[0]
    [True, True, True, False, False]
    >>> full = keras.ops.convert_to_numpy(y)
    >>> step = keras.ops.convert_to_numpy(layer(ids[:, 2:3], start_index=2))
    >>> bool(np.allclose(step[:, 0], full[:, 2]))
    True
    >>> model = keras.Sequential([
    ...     keras.Input((None,), dtype="int32"),
    ...     TokenAndPositionEmbedding(100, 16, 12, position="sinusoidal"),
    ... ])
    >>> tuple(model(ids).shape), len(model.trainable_weights)
    ((2, 5, 12), 1)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805) (learned)
    """

    def __init__(
        self,
        vocab_size,
        max_length,
        embed_dim,
        mask_zero=True,
        position="learned",
        scale_embeddings=False,
        embeddings_initializer="uniform",
        **kwargs,
    ):
        vocab_size = _validation.positive_int("vocab_size", vocab_size)
        max_length = _validation.positive_int("max_length", max_length)
        embed_dim = _validation.positive_int("embed_dim", embed_dim)
        mask_zero = _validation.boolean("mask_zero", mask_zero)
        position = _validation.one_of("position", position, _POSITIONS)
        scale_embeddings = _validation.boolean(
            "scale_embeddings", scale_embeddings
        )
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.embed_dim = embed_dim
        self.mask_zero = mask_zero
        self.position = position
        self.scale_embeddings = scale_embeddings
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )
        self.supports_masking = True
        self.token_embedding = keras.layers.Embedding(
            vocab_size,
            embed_dim,
            embeddings_initializer=clone_initializer(
                self.embeddings_initializer, 0
            ),
            mask_zero=mask_zero,
            # A quantized embedding's policy, from a reloaded config.
            dtype=_quantization.sublayer_dtype(self, "token_embedding"),
            name="token_embedding",
        )
        self.position_embedding = PositionalEncoding(
            kind=position,
            max_length=max_length,
            merge="add",
            embeddings_initializer=clone_initializer(
                self.embeddings_initializer, 1
            ),
            dtype=self.dtype_policy,
            name="position_embedding",
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(
                "Received an invalid value for argument `inputs`, expected a "
                "rank-2 tensor of token ids of shape (batch_size, seq_len) "
                f"for layer '{self.name}'. Received: "
                f"inputs.shape={input_shape}"
            )
        self.token_embedding.build(input_shape)
        self.position_embedding.build(input_shape + (self.embed_dim,))

    def call(self, inputs, mask=None, start_index=0):
        mask = self._output_mask(inputs, mask)
        if _masking.get_keras_mask(inputs) is not None:
            # A fresh tensor without the Keras mask (now held in `mask`): the
            # Embedding does not support masking when `mask_zero=False` and
            # would warn that it drops it.
            inputs = ops.copy(inputs)
        tokens = self.token_embedding(inputs)  # (B, T, E)
        if self.scale_embeddings:
            tokens = tokens * ops.cast(math.sqrt(self.embed_dim), tokens.dtype)
        # The sub-layer validates `start_index` and carries `mask` over.
        return self.position_embedding(
            tokens, mask=mask, start_index=start_index
        )

    def _output_mask(self, inputs, mask):
        """`ids != 0` (with `mask_zero`) AND the incoming mask, or `None`."""
        mask = _masking.check_padding_mask(
            "mask", _masking.resolve_mask(inputs, mask), inputs
        )
        not_padding = ops.not_equal(inputs, 0) if self.mask_zero else None
        return _masking.merge_masks(not_padding, mask)

    def compute_mask(self, inputs, mask=None):
        return self._output_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embed_dim,)

    def quantize(self, mode=None, type_check=True, config=None):
        """Quantize the token embedding table (see `keras.Model.quantize`,
        which reaches it in a model); the position table stays float."""
        _quantization.quantize_sublayers(self, mode, type_check, config)

    def get_config(self):
        config = {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "embed_dim": self.embed_dim,
            "mask_zero": self.mask_zero,
            "position": self.position,
            "scale_embeddings": self.scale_embeddings,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer
            ),
        }
        # A quantized token embedding records its policy (_quantization).
        return _quantization.config_with_quantized(self, config)
