"""Sinusoidal or learned position encodings added to (or concatenated with)
a `(batch, seq_len, features)` sequence."""

import keras
import numpy as np
from keras import ops

from keras_selfattn.layers import _masking
from keras_selfattn.layers import _validation

_KINDS = ("sinusoidal", "learned")
_MERGES = ("add", "concat")


def sinusoids(positions, dim, base=10000.0):
    """The sinusoidal encoding at int `positions` of any shape `(...)`:
    float32 `(..., dim)`, `sin(t / base^(2 (f // 2) / dim))` on even
    features `f`, `cos` on odd ones. `PositionalEncoding(kind=
    "sinusoidal")`'s table, also for per-row positions (a decoder-only
    model numbers each left-padded row from its first real token)."""
    # The frequencies in float64, rounded once to float32: the table then
    # matches the float64 reference to float32 precision. NumPy constants,
    # computed again at each call (E values; no weights).
    pairs = np.arange(dim) // 2
    exponent = 2.0 * pairs / dim
    inverse_frequency = np.power(base, -exponent).astype("float32")
    even = np.arange(dim) % 2 == 0  # (E,)
    # As a tensor: a PyTorch tensor times a NumPy array goes through
    # NumPy's `__array_wrap__` (deprecated in NumPy 2).
    inverse_frequency = ops.convert_to_tensor(inverse_frequency)  # (E,)
    angles = ops.cast(positions, "float32")[..., None] * inverse_frequency
    return ops.where(even, ops.sin(angles), ops.cos(angles))  # (..., E)


@keras.saving.register_keras_serializable(package="keras_selfattn")
class PositionalEncoding(keras.layers.Layer):
    """Adds a position encoding to a sequence, or concatenates one to it.

    For the token at position `t` (counted from `start_index`) the encoding
    `PE[t]` has `encoding_dim = E` features. `kind="sinusoidal"` is the fixed
    table of Vaswani et al., with sines on even features, cosines on odd ones:

    `PE[t, f] = sin(t / base^(2 (f // 2) / E))` for even `f`,
    `PE[t, f] = cos(t / base^(2 (f // 2) / E))` for odd `f`.

    It has no weights, works for any `E` (odd too) and, with no `max_length`,
    for any sequence length. `kind="learned"` looks `PE[t]` up in a trainable
    `(max_length, E)` table. Then `merge="add"` gives `x + PE` and
    `merge="concat"` gives `concat([x, PE], axis=-1)`.

    Args:
        kind: str, `"sinusoidal"` (fixed) or `"learned"` (a trainable table).
            Defaults to `"sinusoidal"`.
        max_length: int or `None`, the number of positions: `start_index +
            seq_len` may not exceed it. Required for `kind="learned"` (the
            table's rows); optional for `"sinusoidal"`, where `None` means
            no limit. Defaults to `None`.
        merge: str, `"add"` (output width `features`) or `"concat"` (output
            width `features + encoding_dim`). Defaults to `"add"`.
        encoding_dim: int or `None`, width `E` of the encoding. With
            `merge="add"` it must be `None` or equal `features`. Defaults to
            `None`, meaning `features`.
        base: float, the wavelength base of the sinusoids (only used by
            `kind="sinusoidal"`). Defaults to `10000.0`.
        embeddings_initializer: initializer for the learned table (only used
            by `kind="learned"`). Defaults to `"glorot_uniform"`, as in
            KerasHub's `PositionEmbedding`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(batch_size, seq_len, features)`.
        mask: optional bool tensor of shape `(batch_size, seq_len)`, `True`
            for real tokens. Defaults to the Keras mask carried by `inputs`.
        start_index: int or scalar integer tensor, the position of the first
            token, for incremental decoding: a length-1 input at
            `start_index=t` gets row `t` of the full-length output. Defaults
            to `0`.

    Returns:
        A tensor of shape `(batch_size, seq_len, features)` for
        `merge="add"`, `(batch_size, seq_len, features + encoding_dim)` for
        `merge="concat"`, in the compute dtype. Under mixed precision the
        sinusoids are computed in float32 and then cast; the learned table
        is kept in float32 and read in the compute dtype.

    Raises:
        ValueError: naming `max_length` when `start_index + seq_len` exceeds
            it and both are known when the layer runs (eager calls, a static
            length in a graph or a functional model; an unknown start counts
            as 0). When they are only known at run time (a graph with a
            `None` length, or a tensor `start_index` in a decoding loop), the
            positions are sliced from the `max_length` valid ones, and the
            `Slice` op raises its own `InvalidArgumentError` (also under XLA
            on CPU).

    Masking:
        Consumes no mask: every position, padded or not, gets its encoding
        (positions do not depend on the other tokens, so padding never
        changes a real token's output). The output carries the input's mask
        unchanged.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_selfattn.layers.positional_encoding import (
    ...     PositionalEncoding,
    ... )
    >>> x = np.zeros((2, 5, 12), dtype="float32")
    >>> layer = PositionalEncoding()
    >>> y = keras.ops.convert_to_numpy(layer(x))
    >>> y.shape
    (2, 5, 12)
    >>> # Position 0 is sin(0) = 0 on even features, cos(0) = 1 on odd ones.
    >>> bool(np.all(y[:, 0, 0::2] == 0.0) and np.all(y[:, 0, 1::2] == 1.0))
    True
    >>> step = keras.ops.convert_to_numpy(layer(x[:, :1], start_index=3))
    >>> bool(np.allclose(step[:, 0], y[:, 3]))
    True
    >>> tuple(PositionalEncoding(merge="concat", encoding_dim=4)(x).shape)
    (2, 5, 16)
    >>> learned = PositionalEncoding("learned", max_length=8)
    >>> tuple(learned(x).shape), len(learned.trainable_weights)
    ((2, 5, 12), 1)
    >>> model = keras.Sequential([
    ...     keras.Input((None,), dtype="int32"),
    ...     keras.layers.Embedding(100, 12, mask_zero=True),
    ...     PositionalEncoding(),
    ... ])
    >>> out = model(np.array([[5, 7, 0]]))
    >>> keras.ops.convert_to_numpy(out._keras_mask).tolist()
    [[True, True, False]]

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Gehring et al., 2017](https://arxiv.org/abs/1705.03122) (learned)
    """

    def __init__(
        self,
        kind="sinusoidal",
        max_length=None,
        merge="add",
        encoding_dim=None,
        base=10000.0,
        embeddings_initializer="glorot_uniform",
        **kwargs,
    ):
        kind = _validation.one_of("kind", kind, _KINDS)
        max_length = _validation.positive_int(
            "max_length", max_length, allow_none=True
        )
        if kind == "learned" and max_length is None:
            raise _validation.invalid(
                "max_length",
                "a positive integer (the table size) when kind='learned'",
                max_length,
            )
        merge = _validation.one_of("merge", merge, _MERGES)
        encoding_dim = _validation.positive_int(
            "encoding_dim", encoding_dim, allow_none=True
        )
        base = _validation.positive_float("base", base)
        super().__init__(**kwargs)
        self.kind = kind
        self.max_length = max_length
        self.merge = merge
        self.encoding_dim = encoding_dim
        self.base = base
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )
        self.supports_masking = True
        # The sinusoids have no weights: built now, as Keras' stateless
        # layers (`Dropout`), so the shape checks run in `call` and
        # `compute_output_shape` too. Not for a subclass that defines its
        # own `build`: Keras would never call it.
        own_build = type(self).build is PositionalEncoding.build
        self.built = kind == "sinusoidal" and own_build

    def build(self, input_shape):
        encoding_dim = self._encoding_width(input_shape)
        if self.kind == "learned":
            self.embeddings = self.add_weight(
                name="embeddings",
                shape=(self.max_length, encoding_dim),
                initializer=self.embeddings_initializer,
            )

    def _encoding_width(self, input_shape):
        """Check the input shape; return the encoding width `E`."""
        input_dim = _validation.sequence_shape("inputs", input_shape, self.name)
        if self.merge == "add" and self.encoding_dim not in (None, input_dim):
            raise _validation.invalid(
                "encoding_dim",
                f"None or the input feature size {input_dim} when "
                "merge='add' (use merge='concat' for another width)",
                self.encoding_dim,
            )
        return self.encoding_dim or input_dim

    def call(self, inputs, mask=None, start_index=0):
        encoding_dim = self._encoding_width(inputs.shape)
        mask = _masking.check_padding_mask(
            "mask", _masking.resolve_mask(inputs, mask), inputs
        )
        start = self._check_positions(start_index, inputs.shape[1])
        seq_len = ops.shape(inputs)[1]
        encoding = self._encoding(start, seq_len, encoding_dim)  # (T, E)
        # Sinusoids are computed in float32 and cast once: float16 cannot
        # even represent the positions above 2048.
        encoding = ops.cast(encoding, inputs.dtype)
        if self.merge == "add":
            outputs = inputs + encoding[None, :, :]  # (B, T, D)
        else:
            batch_size = ops.shape(inputs)[0]
            tiled = ops.broadcast_to(
                encoding[None, :, :], (batch_size, seq_len, encoding_dim)
            )  # (B, T, E)
            outputs = ops.concatenate([inputs, tiled], axis=-1)  # (B, T, D+E)
        if mask is not None:
            _masking.set_keras_mask(outputs, mask)
        return outputs

    def _check_positions(self, start_index, seq_len):
        """Validate `start_index`; raise when positions pass `max_length`.

        Returns `start_index` as an int32 scalar (a Python int stays one).
        """
        if ops.is_tensor(start_index):
            dtype = keras.backend.standardize_dtype(start_index.dtype)
            if "int" not in dtype or len(start_index.shape) != 0:
                raise _validation.invalid(
                    "start_index",
                    "a non-negative integer or a scalar integer tensor",
                    start_index,
                    error=TypeError,
                )
            # An eager tensor's value is known now: check it like an int.
            known = _known_int(start_index)
            if known is not None and known < 0:
                raise _validation.invalid(
                    "start_index", "a non-negative integer", known
                )
            start = ops.cast(start_index, "int32")
        else:
            start = known = _validation.non_negative_int(
                "start_index", start_index
            )
        self._check_length(known, seq_len)
        return start

    def _check_length(self, start, seq_len):
        """Raise when `start + seq_len` passes `max_length`; `None` is
        unknown (an unknown start is at least 0)."""
        if self.max_length is None or seq_len is None:
            return
        if (start or 0) + seq_len > self.max_length:
            received = "" if start is None else f"start_index={start}, "
            raise ValueError(
                "Received an input too long for argument `max_length`, "
                "expected start_index + seq_len <= max_length. Received: "
                f"{received}seq_len={seq_len}, max_length={self.max_length}"
            )

    def _encoding(self, start, seq_len, encoding_dim):
        """The `(seq_len, encoding_dim)` encoding from position `start`.

        Sinusoids are float32; the learned table is read in the compute
        dtype (Keras autocasts float32 variables under mixed precision).
        """
        if self.kind == "learned":
            # `Slice` checks its bounds at run time, so a graph with unknown
            # lengths still fails past the end of the table.
            # The variable read as a tensor first: JAX cannot slice a Keras
            # variable directly.
            return ops.slice(
                ops.convert_to_tensor(self.embeddings),
                (start, 0),
                (seq_len, encoding_dim),
            )  # (T, E)
        if self.max_length is None:
            positions = ops.arange(seq_len, dtype="int32") + start  # (T,)
        else:
            # Slicing the valid positions gives the same run-time bounds
            # check as the learned table.
            positions = ops.slice(
                ops.arange(self.max_length, dtype="int32"), (start,), (seq_len,)
            )  # (T,)
        return sinusoids(positions, encoding_dim, self.base)  # (T, E)

    def compute_mask(self, inputs, mask=None):
        return _masking.resolve_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        # Functional models infer shapes here, without running `call` (nor,
        # for the built-at-construction sinusoids, `build`).
        encoding_dim = self._encoding_width(input_shape)
        self._check_length(None, input_shape[1])
        if self.merge == "add":
            return input_shape
        return input_shape[:-1] + (input_shape[-1] + encoding_dim,)

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "max_length": self.max_length,
            "merge": self.merge,
            "encoding_dim": self.encoding_dim,
            "base": self.base,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer
            ),
        }


def _known_int(tensor):
    """The value of a scalar tensor when it is known now (an eager tensor),
    else `None` (a symbolic tensor inside a traced graph)."""
    try:
        return int(ops.convert_to_numpy(tensor))
    except (NotImplementedError, TypeError, ValueError):
        # TensorFlow graph tensors raise NotImplementedError; JAX tracers a
        # TypeError subclass; Keras symbolic tensors a ValueError.
        return None
