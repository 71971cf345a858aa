"""Tests for greedy and beam search."""

import math

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_selfattn.models import beam_search
from keras_selfattn.models import greedy_search
from keras_selfattn.models.generation import repeated_ngram_mask

PAD, START, END, A, B = 0, 1, 2, 3, 4

# Next-token probabilities given the last token (rows: last token).
TABLE = np.zeros((5, 5))
TABLE[START, [A, B]] = [0.6, 0.4]
TABLE[A, [END, A, B]] = [0.30, 0.36, 0.34]
TABLE[B, [END, A, B]] = [0.90, 0.05, 0.05]
TABLE[END, END] = 1.0
TABLE[PAD, END] = 1.0
LOG_TABLE = np.log(np.maximum(TABLE, 1e-30)).astype("float32")


def table_step(tokens, index, state):
    """A 'model' whose next-token log-probs depend on the last token."""
    logits = ops.take(ops.convert_to_tensor(LOG_TABLE), tokens[:, 0], axis=0)
    return logits, state


def _np(x):
    return ops.convert_to_numpy(x)


def test_greedy_follows_the_locally_best_token():
    tokens = greedy_search(table_step, (), 1, 4, START, END)
    # A (0.6), then A (0.36) every step: never reaches the end token.
    assert _np(tokens).tolist() == [[A, A, A, A]]


def test_beam_finds_the_better_sequence_by_hand():
    tokens, scores = beam_search(
        table_step, (), 1, 4, START, END, beam_width=2, length_penalty=0.0
    )
    # "B END": 0.4 * 0.9 = 0.36 beats "A END" 0.18 and "A A ..." (< 0.216).
    assert _np(tokens).tolist() == [[B, END, PAD, PAD]]
    np.testing.assert_allclose(_np(scores), [math.log(0.36)], rtol=1e-5)


def test_length_penalty_normalizes_scores():
    _, scores = beam_search(
        table_step, (), 1, 4, START, END, beam_width=2, length_penalty=1.0
    )
    # Two tokens: divide by ((5 + 2) / 6) ** 1.
    np.testing.assert_allclose(
        _np(scores), [math.log(0.36) / (7 / 6)], rtol=1e-5
    )


def _random_step(vocab=7, seed=0):
    table = np.random.default_rng(seed).normal(size=(vocab, 8, vocab))
    table = table.astype("float32") * 3
    constant = ops.convert_to_tensor(table)

    def step(tokens, index, state):
        # Depends on the last token, the position and the state.
        rows = ops.take(constant, tokens[:, 0], axis=0)  # (B, 8, V)
        logits = ops.take(rows, index, axis=1) + state
        return logits, state

    return step


@pytest.mark.parametrize("seed", range(5))
def test_beam_width_one_equals_greedy(seed):
    step = _random_step(seed=seed)
    state = ops.convert_to_tensor(
        np.random.default_rng(seed).normal(size=(3, 7)).astype("float32")
    )
    greedy = greedy_search(step, state, 3, 8, START, END)
    beam, _ = beam_search(step, state, 3, 8, START, END, beam_width=1)
    np.testing.assert_array_equal(_np(beam), _np(greedy))


def test_padding_after_end_and_batched_independence():
    step = _random_step(seed=3)
    state = ops.convert_to_tensor(
        np.random.default_rng(1).normal(size=(4, 7)).astype("float32")
    )
    tokens, _ = beam_search(step, state, 4, 8, START, END, beam_width=3)
    tokens = _np(tokens)
    for row in tokens:
        if END in row.tolist():
            after = row[row.tolist().index(END) + 1 :]
            assert np.all(after == PAD)
    # Each example decodes the same alone as in the batch.
    for i in range(4):
        alone, _ = beam_search(step, state[i : i + 1], 1, 8, START, END, 3)
        np.testing.assert_array_equal(_np(alone)[0], tokens[i])


def test_searches_run_inside_tf_function():
    @tf.function
    def run():
        return beam_search(table_step, (), 2, 4, START, END, beam_width=2)

    tokens, _ = run()
    assert _np(tokens).tolist() == [[B, END, PAD, PAD]] * 2


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"max_length": 0}, "max_length"),
        ({"beam_width": 0}, "beam_width"),
        ({"length_penalty": -1.0}, "length_penalty"),
        ({"start_id": -1}, "start_id"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    args = {"max_length": 4, "start_id": START, "end_id": END, **kwargs}
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        beam_search(table_step, (), 1, **args)


def _naive_banned(row, index, n, vocab):
    """The tokens t for which row[index-n+2..index] + [t] already occurs in
    row[:index+1], by brute force."""
    prefix = list(row[: index + 1])
    banned = set()
    if n == 1:
        return set(prefix)
    if index < n - 2:
        return banned
    context = prefix[len(prefix) - (n - 1) :]
    for j in range(len(prefix) - n + 1):
        if prefix[j : j + n - 1] == context:
            banned.add(prefix[j + n - 1])
    return banned


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_repeated_ngram_mask_matches_brute_force(n):
    rng = np.random.default_rng(n)
    tokens = rng.integers(0, 4, size=(6, 12)).astype("int32")  # many repeats
    for index in range(12):
        got = _np(repeated_ngram_mask(tokens, index, n, 4))
        for r in range(6):
            expected = _naive_banned(tokens[r], index, n, 4)
            assert set(np.flatnonzero(got[r]).tolist()) == expected, (
                n,
                index,
                r,
            )


def _has_repeated_ngram(row, n):
    grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_no_repeat_ngram_size_stops_loops(method):
    def run(n):
        if method == "greedy":
            return _np(
                greedy_search(
                    table_step, (), 1, 6, START, END, no_repeat_ngram_size=n
                )
            )
        tokens, _ = beam_search(
            table_step,
            (),
            1,
            6,
            START,
            END,
            beam_width=2,
            length_penalty=0.0,
            no_repeat_ngram_size=n,
        )
        return _np(tokens)

    if method == "greedy":
        # Without the constraint greedy loops on A forever.
        assert run(0).tolist() == [[A, A, A, A, A, A]]
    # With n = 2, "A A" may occur once: then B (0.34), then END (0.9).
    tokens = run(2)[0].tolist()
    row = [START] + tokens[: tokens.index(END) + 1]
    assert not _has_repeated_ngram(row, 2), row
    if method == "greedy":
        assert tokens == [A, A, B, END, PAD, PAD]


def test_no_repeat_ngram_on_random_models_never_repeats():
    for seed in range(3):
        step = _random_step(seed=seed)
        state = ops.convert_to_tensor(
            np.random.default_rng(seed).normal(size=(3, 7)).astype("float32")
        )
        for n in (2, 3):
            greedy = _np(
                greedy_search(
                    step, state, 3, 8, START, END, no_repeat_ngram_size=n
                )
            )
            beam, _ = beam_search(
                step, state, 3, 8, START, END, 3, no_repeat_ngram_size=n
            )
            for row in list(greedy) + list(_np(beam)):
                row = [START] + row.tolist()
                if END in row:
                    row = row[: row.index(END) + 1]
                assert not _has_repeated_ngram(row, n), (seed, n, row)
