"""In-graph checks of serving requests (needs TensorFlow).

TF Serving (and any C API client) feeds a signature's placeholders without
checking the shapes declared in the signature: a scalar reaches a graph
traced for a `(batch,)` vector. Some kernels trust the traced shape and read
out of bounds: tensorflow-text's `FastWordpieceTokenizeWithOffsets` given a
rank-0 string kills the process with signal 11. So each exported signature
checks its inputs first, inside the graph:

- every check is computed with ops that accept a tensor of any shape
  (`tf.raw_ops.Rank`/`Shape`, which are real ops even where the traced shape
  is known, where `tf.rank` would fold to a Python constant and check
  nothing), and one `Assert` reports the first failed check;
- the model never sees the request's tensor unless its rank is right: a
  `tf.cond` hands it an empty batch otherwise, so no kernel can run on a
  malformed tensor, whatever order the runtime picks;
- the model's input waits for the `Assert` (a control dependency), so a
  refused request does no model work.

A malformed request fails with `INVALID_ARGUMENT` and a message that
follows the library's template:

    Received an invalid value for input `text`, expected a string tensor of
    shape (batch_size,). Received: shape=[]
"""

import tensorflow as tf

# The defaults of the export functions' request limits.
DEFAULT_MAX_BATCH_SIZE = 1024
DEFAULT_MAX_TEXT_BYTES = 100_000


def _message(name, expected, *received):
    """The error template as a scalar string tensor; `received` are strings
    and scalar tensors (numbers are formatted)."""
    parts = [
        f"Received an invalid value for input `{name}`, expected "
        f"{expected}. Received: "
    ]
    for item in received:
        item = tf.convert_to_tensor(item)
        if item.dtype != tf.string:
            item = tf.strings.as_string(item)
        parts.append(item)
    return tf.strings.join(parts)


class _Request:
    """The shape facts of one input, computed for a tensor of any rank."""

    def __init__(self, x, rank):
        self.x = x
        self.shape = tf.raw_ops.Shape(input=x, out_type=tf.int64)
        self.rank_ok = tf.equal(tf.raw_ops.Rank(input=x), rank)
        # Padded with -1 so that `dim(i)` exists whatever the actual rank.
        self._padded = tf.concat(
            [self.shape, tf.fill([max(rank, 1)], tf.constant(-1, tf.int64))],
            axis=0,
        )
        self.checks = []  # (ok, message), in the order they are reported
        # When the model may see the tensor itself (else an empty batch).
        self.shape_ok = self.rank_ok

    def dim(self, axis):
        return self._padded[axis]

    def shape_string(self):
        dims = tf.strings.reduce_join(
            tf.strings.as_string(self.shape), separator=", "
        )
        return tf.strings.join(["shape=[", dims, "]"])

    def require(self, ok, message):
        self.checks.append((ok, message))

    def require_size(self, name, axis, maximum, one, up_to, label):
        """Require 1 <= shape[axis] <= `maximum` (no bound when `None`);
        `one`/`up_to` word the expectation without/with the bound."""
        size = self.dim(axis)
        ok = tf.greater_equal(size, 1)
        expected = one
        if maximum is not None:
            ok = tf.logical_and(ok, tf.less_equal(size, maximum))
            expected = up_to.format(maximum)
        self.require(ok, _message(name, expected, f"{label}=", size))

    def require_batch(self, name, max_batch_size):
        self.require_size(
            name,
            0,
            max_batch_size,
            "a batch of at least one row",
            "a batch of 1 to {} rows",
            "batch_size",
        )

    def checked(self, static_shape):
        """The input for the model: the request's tensor if its rank is
        right (else an empty batch), released once every check passed."""
        ok = tf.constant(True)
        message = tf.constant("")
        # Built from the last check to the first: the first failure wins.
        for check_ok, check_message in reversed(self.checks):
            ok = tf.logical_and(ok, check_ok)
            message = tf.where(check_ok, message, check_message)
        failed = tf.debugging.Assert(ok, [message])
        empty = [0 if d is None else d for d in static_shape]
        safe = tf.cond(
            self.shape_ok,
            lambda: tf.identity(self.x),
            lambda: tf.zeros(empty, self.x.dtype),
        )
        with tf.control_dependencies([failed]):
            return tf.ensure_shape(tf.identity(safe), static_shape)


def _expect_rank(request, name, described):
    request.require(
        request.rank_ok, _message(name, described, request.shape_string())
    )


def check_strings(text, name, max_batch_size, max_text_bytes):
    """A batch of strings: rank 1, 1 to `max_batch_size` rows, each at most
    `max_text_bytes` long. Returns the checked `(batch_size,)` tensor."""
    request = _Request(text, rank=1)
    _expect_rank(request, name, "a string tensor of shape (batch_size,)")
    request.require_batch(name, max_batch_size)
    if max_text_bytes is not None:
        # Over all the strings of the request, whatever its shape; a -1
        # entry keeps an empty request valid for max and argmax.
        lengths = tf.concat(
            [
                tf.strings.length(tf.reshape(text, [-1]), unit="BYTE"),
                [-1],
            ],
            axis=0,
        )
        row = tf.argmax(lengths, output_type=tf.int64)
        longest = tf.gather(lengths, row)
        request.require(
            tf.less_equal(longest, max_text_bytes),
            _message(
                name,
                f"strings of at most {max_text_bytes} bytes",
                "a string of ",
                longest,
                " bytes at row ",
                row,
            ),
        )
    return request.checked([None])


def check_token_ids(ids, name, max_batch_size, vocabulary_size, max_length):
    """A batch of token ids: rank 2, 1 to `max_batch_size` rows, 1 to
    `max_length` columns (any length when `None`), every id in
    `[0, vocabulary_size)`. Returns the checked `(batch_size, length)`
    tensor."""
    request = _Request(ids, rank=2)
    _expect_rank(request, name, "an int32 tensor of shape (batch_size, length)")
    request.require_batch(name, max_batch_size)
    request.require_size(
        name,
        1,
        max_length,
        "at least one token per row",
        "1 to {} tokens per row",
        "length",
    )
    # Over all the ids, whatever the shape. An empty request passes this
    # check (its min and max are the dtype's extremes), not the batch one.
    flat = tf.reshape(ids, [-1])
    low, high = tf.reduce_min(flat), tf.reduce_max(flat)
    request.require(
        tf.logical_and(
            tf.greater_equal(low, 0), tf.less(high, vocabulary_size)
        ),
        _message(
            name,
            f"token ids in [0, {vocabulary_size})",
            "min=",
            low,
            ", max=",
            high,
        ),
    )
    return request.checked([None, None])


def describe_shape(shape):
    """`(batch_size, None, 6)` for a `keras.Input` shape `(None, None, 6)`."""
    dims = ["batch_size"] + ["None" if d is None else str(d) for d in shape[1:]]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def check_tensor(x, name, spec, max_batch_size):
    """An input of `export_model`: the rank and fixed sizes of `spec`, 1 to
    `max_batch_size` rows, finite values for floats. Returns the checked
    tensor, of `spec`'s shape."""
    dims = list(spec.shape)
    described = f"a {spec.dtype.name} tensor of shape {describe_shape(dims)}"
    request = _Request(x, rank=len(dims))
    fixed = [
        tf.equal(request.dim(axis), size)
        for axis, size in enumerate(dims)
        if axis > 0 and size is not None
    ]
    ok = request.rank_ok
    if fixed:
        ok = tf.logical_and(ok, tf.reduce_all(tf.stack(fixed)))
    request.shape_ok = ok
    request.require(ok, _message(name, described, request.shape_string()))
    if dims:
        request.require_batch(name, max_batch_size)
    if x.dtype.is_floating:
        bad = tf.math.count_nonzero(
            tf.logical_not(tf.math.is_finite(x)), dtype=tf.int64
        )
        request.require(
            tf.equal(bad, 0),
            _message(name, "finite values", bad, " NaN or infinite values"),
        )
    return request.checked(dims)


def check_option(value, name, batch_size, default, valid, expected):
    """A per-request option (a sampling option of `export_causal_lm`): a
    scalar for every row, one value per row `(batch_size,)`, or an empty
    tensor `(0,)` for `default`; every value must satisfy `valid` (a
    function of a 1-D tensor to a bool one), worded by `expected`.

    Returns the checked `(batch_size,)` values, released once the checks
    passed. Only the first element (or, for a `(batch_size,)` tensor, the
    rows) of the request's tensor is ever read, whatever its shape.
    """
    batch_size = tf.cast(batch_size, tf.int64)
    rank = tf.raw_ops.Rank(input=value)
    size = tf.raw_ops.Size(input=value, out_type=tf.int64)
    shape = tf.raw_ops.Shape(input=value, out_type=tf.int64)
    vector = tf.equal(rank, 1)
    per_row = tf.logical_and(vector, tf.equal(size, batch_size))
    shape_ok = tf.logical_or(
        tf.equal(rank, 0),
        tf.logical_or(per_row, tf.logical_and(vector, tf.equal(size, 0))),
    )
    dims = tf.strings.reduce_join(tf.strings.as_string(shape), separator=", ")
    shape_message = _message(
        name,
        f"a {value.dtype.name} scalar, a tensor of shape (batch_size,) or an "
        f"empty tensor (for the default, {default})",
        "shape=[",
        dims,
        "] with batch_size=",
        batch_size,
    )
    flat = tf.reshape(value, [-1])
    # The first invalid value; a trailing False makes an empty flat valid.
    flags = tf.concat([valid(flat), [False]], axis=0)
    first = tf.argmin(tf.cast(flags, tf.int32), output_type=tf.int64)
    padded = tf.concat([flat, tf.constant([default], value.dtype)], axis=0)
    values_ok = tf.equal(first, size)
    values_message = _message(
        name, expected, f"{name}=", tf.gather(padded, first)
    )
    ok = tf.logical_and(shape_ok, values_ok)
    message = tf.where(shape_ok, values_message, shape_message)
    failed = tf.debugging.Assert(ok, [message])
    # Row i reads element i of a per-row tensor, else element 0: the
    # scalar, or the default appended after an empty tensor.
    rows = tf.range(batch_size)
    index = tf.where(per_row, rows, tf.zeros_like(rows))
    with tf.control_dependencies([failed]):
        return tf.ensure_shape(tf.gather(padded, index), [None])
