"""Greedy and beam-search decoding as graph loops (`keras.ops.while_loop`).

Both searches drive a *step function* and never run Python per token, so
they trace into one TensorFlow graph (and export). A step function maps the
current tokens to next-token logits and carries a state (for example a
decoder's key/value cache):

    step_fn(tokens, index, state) -> (logits, new_state)

with `tokens` int32 `(batch, 1)` (the token at position `index`), `index` a
scalar int32, `logits` float `(batch, vocab_size)`, and `state` any nested
structure of tensors whose leading axis is the batch.
"""

import keras
from keras import ops

from keras_selfattn.layers import _validation

# Log-probability given to impossible continuations; finite, so no NaN.
_NEG_INF = -1e9


def _check_common(max_length, start_id, end_id, pad_id, no_repeat_ngram_size):
    max_length = _validation.positive_int("max_length", max_length)
    start_id = _validation.non_negative_int("start_id", start_id)
    end_id = _validation.non_negative_int("end_id", end_id)
    pad_id = _validation.non_negative_int("pad_id", pad_id)
    no_repeat_ngram_size = _validation.non_negative_int(
        "no_repeat_ngram_size", no_repeat_ngram_size
    )
    return max_length, start_id, end_id, pad_id, no_repeat_ngram_size


def repeated_ngram_mask(tokens, index, ngram_size, vocab_size):
    """Which next tokens would repeat an n-gram already in the prefix.

    Args:
        tokens: int `(rows, length)`, the sequences so far; positions
            `0..index` are filled (position 0 may be the start token).
        index: scalar int, the position of the last filled token; the next
            token goes to `index + 1`.
        ngram_size: int >= 1, the n-gram size `n`.
        vocab_size: int, the vocabulary size.

    Returns:
        bool `(rows, vocab_size)`: `True` for a token `t` when the last
        `n - 1` tokens followed by `t` already occur in `tokens[:, :index+1]`.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models.generation import repeated_ngram_mask
    >>> tokens = np.array([[1, 5, 6, 7, 5, 6]])  # "5 6" was followed by 7
    >>> banned = repeated_ngram_mask(tokens, 5, ngram_size=3, vocab_size=9)
    >>> np.flatnonzero(ops.convert_to_numpy(banned)[0]).tolist()
    [7]
    """
    n = ngram_size
    rows, length = ops.shape(tokens)[0], tokens.shape[1]
    windows = length - n + 1  # candidate n-gram starts j
    if windows <= 0:
        return ops.zeros((rows, vocab_size), dtype="bool")
    index = ops.convert_to_tensor(index, "int32")
    # The context: the last n - 1 tokens, tokens[index - n + 2 .. index].
    context_start = ops.maximum(index - n + 2, 0)
    match = ops.ones((rows, windows), dtype="bool")
    for m in range(n - 1):
        context = ops.take(tokens, context_start + m, axis=1)  # (rows,)
        match = ops.logical_and(
            match, ops.equal(tokens[:, m : m + windows], context[:, None])
        )
    # The n-gram starting at j is complete within the prefix.
    starts = ops.arange(windows, dtype="int32")
    complete = ops.less_equal(starts + n - 1, index)
    enough_context = ops.greater_equal(index, n - 2)
    match = ops.logical_and(
        match, ops.logical_and(complete, enough_context)[None, :]
    )
    followers = tokens[:, n - 1 : n - 1 + windows]  # (rows, windows)
    row_ids = ops.broadcast_to(
        ops.arange(rows, dtype="int32")[:, None], ops.shape(followers)
    )
    indices = ops.stack([row_ids, ops.cast(followers, "int32")], axis=-1)
    counts = ops.scatter(
        ops.reshape(indices, (-1, 2)),
        ops.reshape(ops.cast(match, "float32"), (-1,)),
        (rows, vocab_size),
    )
    return ops.greater(counts, 0.0)


def greedy_search(
    step_fn,
    state,
    batch_size,
    max_length,
    start_id,
    end_id,
    pad_id=0,
    no_repeat_ngram_size=0,
):
    """Pick the most likely next token until `end_id` or `max_length`.

    Args:
        step_fn: the step function (see the module docstring).
        state: its initial state (batch-leading tensors).
        batch_size: int or scalar tensor, the batch size.
        max_length: int, the most tokens to generate (end token included).
        start_id: int, the token fed at position 0.
        end_id: int, the end token; a sequence stops after emitting it.
        pad_id: int, emitted after the end token. Defaults to `0`.
        no_repeat_ngram_size: int, when `n > 0` no n-gram of this size is
            generated twice in a sequence (the tokens that would repeat one
            are never picked). Defaults to `0` (off).

    Returns:
        int32 tensor `(batch_size, max_length)`: the generated tokens (the
        start token excluded), `pad_id` after each sequence's end token.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import greedy_search
    >>> def step_fn(tokens, index, state):
    ...     # Always prefers token (last + 1); token 3 is the end.
    ...     logits = ops.one_hot(tokens[:, 0] + 1, 5)
    ...     return logits, state
    >>> out = greedy_search(step_fn, (), 2, max_length=4, start_id=1,
    ...                     end_id=3)
    >>> ops.convert_to_numpy(out).tolist()
    [[2, 3, 0, 0], [2, 3, 0, 0]]
    """
    max_length, start_id, end_id, pad_id, no_repeat = _check_common(
        max_length, start_id, end_id, pad_id, no_repeat_ngram_size
    )
    tokens = ops.full((batch_size, max_length + 1), pad_id, dtype="int32")
    tokens = ops.slice_update(
        tokens, (0, 0), ops.full((batch_size, 1), start_id, dtype="int32")
    )
    finished = ops.zeros((batch_size,), dtype="bool")

    def cond(index, tokens, finished, state):
        return ops.logical_and(
            ops.less(index, max_length), ops.logical_not(ops.all(finished))
        )

    def body(index, tokens, finished, state):
        current = ops.slice(tokens, (0, index), (batch_size, 1))  # (B, 1)
        logits, state = step_fn(current, index, state)
        if no_repeat:
            banned = repeated_ngram_mask(
                tokens, index, no_repeat, ops.shape(logits)[-1]
            )
            logits = ops.where(banned, _NEG_INF, ops.cast(logits, "float32"))
        best = ops.cast(ops.argmax(logits, axis=-1), "int32")  # (B,)
        best = ops.where(finished, pad_id, best)
        tokens = ops.slice_update(tokens, (0, index + 1), best[:, None])
        finished = ops.logical_or(finished, ops.equal(best, end_id))
        return index + 1, tokens, finished, state

    _, tokens, _, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), tokens, finished, state)
    )
    return tokens[:, 1:]


def length_penalty_factor(length, alpha):
    """The GNMT length normalizer `((5 + length) / 6) ** alpha`."""
    length = ops.cast(length, "float32")
    return ops.power((5.0 + length) / 6.0, alpha)


def beam_search(
    step_fn,
    state,
    batch_size,
    max_length,
    start_id,
    end_id,
    beam_width=4,
    length_penalty=0.6,
    pad_id=0,
    no_repeat_ngram_size=0,
):
    """Beam search with the GNMT length penalty.

    Keeps the `beam_width` best partial sequences per example, ranked by
    `sum(log p) / ((5 + length) / 6) ** length_penalty` (Wu et al., 2016);
    `length_penalty=0` ranks by the plain sum of log-probabilities. A beam
    that emitted `end_id` is finished: it keeps its score and only extends
    with `pad_id`. With `beam_width=1` this is exactly `greedy_search`.

    Args:
        step_fn: the step function (see the module docstring); it is called
            with `batch_size * beam_width` rows.
        state: the initial state for `batch_size` rows; it is repeated per
            beam here, and reordered (gathered on axis 0) as beams move.
        batch_size: int or scalar tensor.
        max_length: int, the most tokens to generate (end token included).
        start_id: int, the token fed at position 0.
        end_id: int, the end token.
        beam_width: int, beams per example. Defaults to `4`.
        length_penalty: float >= 0, the GNMT `alpha`. Defaults to `0.6`.
        pad_id: int, emitted after the end token. Defaults to `0`.
        no_repeat_ngram_size: int, when `n > 0` no beam generates the same
            n-gram twice. Defaults to `0` (off).

    Returns:
        `(tokens, scores)`: int32 `(batch_size, max_length)` (the best beam,
        start token excluded) and float32 `(batch_size,)` its normalized
        score.

    Example:

    >>> from keras import ops
    >>> from keras_selfattn.models import beam_search
    >>> def step_fn(tokens, index, state):
    ...     logits = ops.one_hot(tokens[:, 0] + 1, 5) * 4.0
    ...     return logits, state
    >>> tokens, scores = beam_search(step_fn, (), 1, max_length=4,
    ...                              start_id=1, end_id=3, beam_width=2)
    >>> ops.convert_to_numpy(tokens).tolist()
    [[2, 3, 0, 0]]

    References:
        - [Wu et al., 2016, Google's Neural Machine Translation System](
          https://arxiv.org/abs/1609.08144)
    """
    max_length, start_id, end_id, pad_id, no_repeat = _check_common(
        max_length, start_id, end_id, pad_id, no_repeat_ngram_size
    )
    beam_width = _validation.positive_int("beam_width", beam_width)
    if isinstance(length_penalty, bool) or not isinstance(
        length_penalty, (int, float)
    ):
        raise _validation.invalid(
            "length_penalty", "a float >= 0", length_penalty, TypeError
        )
    if length_penalty < 0:
        raise _validation.invalid(
            "length_penalty", "a float >= 0", length_penalty
        )
    k = beam_width
    rows = batch_size * k
    # Every beam starts from the same state and the start token.
    state = keras.tree.map_structure(lambda x: ops.repeat(x, k, axis=0), state)
    tokens = ops.full((rows, max_length + 1), pad_id, dtype="int32")
    tokens = ops.slice_update(
        tokens, (0, 0), ops.full((rows, 1), start_id, dtype="int32")
    )
    # Only beam 0 is alive at first, so step 1 does not pick k copies.
    first = ops.concatenate(
        [ops.zeros((1,)), ops.full((k - 1,), _NEG_INF)], axis=0
    )
    log_probs = ops.tile(first[None, :], (batch_size, 1))  # (B, K)
    lengths = ops.zeros((batch_size, k), dtype="int32")
    finished = ops.zeros((batch_size, k), dtype="bool")

    def cond(index, tokens, log_probs, lengths, finished, state):
        return ops.logical_and(
            ops.less(index, max_length), ops.logical_not(ops.all(finished))
        )

    def body(index, tokens, log_probs, lengths, finished, state):
        current = ops.slice(tokens, (0, index), (rows, 1))  # (B*K, 1)
        logits, state = step_fn(current, index, state)
        vocab = ops.shape(logits)[-1]
        step = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        if no_repeat:
            banned = repeated_ngram_mask(tokens, index, no_repeat, vocab)
            step = ops.where(banned, _NEG_INF, step)
        step = ops.reshape(step, (batch_size, k, vocab))  # (B, K, V)
        # A finished beam extends only with padding, at no cost.
        pad_only = ops.where(
            ops.equal(ops.arange(vocab), pad_id), 0.0, _NEG_INF
        )  # (V,)
        step = ops.where(finished[:, :, None], pad_only, step)
        total = log_probs[:, :, None] + step  # (B, K, V)
        new_length = ops.where(finished, lengths, lengths + 1)  # (B, K)
        normalized = (
            total
            / length_penalty_factor(new_length, length_penalty)[:, :, None]
        )
        flat = ops.reshape(normalized, (batch_size, k * vocab))
        _, best = ops.top_k(flat, k)  # (B, K) indices into K * V
        best = ops.cast(best, "int32")
        beam = best // vocab  # (B, K): which parent beam
        token = best % vocab  # (B, K): which token
        log_probs = ops.take_along_axis(
            ops.reshape(total, (batch_size, k * vocab)), best, axis=1
        )
        lengths = ops.take_along_axis(new_length, beam, axis=1)
        was_finished = ops.take_along_axis(finished, beam, axis=1)
        finished = ops.logical_or(was_finished, ops.equal(token, end_id))
        # Reorder the rows (B*K) by parent beam: tokens and state alike.
        parent = ops.reshape(
            beam + ops.arange(batch_size, dtype="int32")[:, None] * k, (-1,)
        )
        tokens = ops.take(tokens, parent, axis=0)
        state = keras.tree.map_structure(
            lambda x: ops.take(x, parent, axis=0), state
        )
        tokens = ops.slice_update(
            tokens, (0, index + 1), ops.reshape(token, (rows, 1))
        )
        return index + 1, tokens, log_probs, lengths, finished, state

    _, tokens, log_probs, lengths, _, _ = ops.while_loop(
        cond,
        body,
        (
            ops.convert_to_tensor(0, "int32"),
            tokens,
            log_probs,
            lengths,
            finished,
            state,
        ),
    )
    scores = log_probs / length_penalty_factor(lengths, length_penalty)
    winner = ops.cast(ops.argmax(scores, axis=1), "int32")  # (B,)
    rows_index = ops.arange(batch_size, dtype="int32") * k + winner
    best_tokens = ops.take(tokens, rows_index, axis=0)[:, 1:]
    best_scores = ops.take_along_axis(scores, winner[:, None], axis=1)[:, 0]
    return best_tokens, best_scores
