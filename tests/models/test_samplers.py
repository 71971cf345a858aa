"""Tests for the samplers, on step functions with known distributions."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_selfattn.models import BeamSampler
from keras_selfattn.models import ConfigurableSampler
from keras_selfattn.models import GreedySampler
from keras_selfattn.models import RandomSampler
from keras_selfattn.models import TopKSampler
from keras_selfattn.models import TopPSampler
from keras_selfattn.models import beam_search
from keras_selfattn.models import greedy_search
from keras_selfattn.models import samplers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
# A fixed next-token distribution; the nucleus of p=0.7 is {0, 1, 2}
# (0.35 + 0.25 = 0.60 < 0.7 <= 0.75), of p=0.5 {0, 1}, of p=0.3 {0}.
PROBS = np.array([0.35, 0.25, 0.15, 0.10, 0.08, 0.07])


def _np(x):
    return ops.convert_to_numpy(x)


def constant_step(probs, rows):
    """A step function whose logits never change."""
    logits = np.log(np.tile(probs, (rows, 1))).astype("float32")

    def step(tokens, index, state):
        return ops.convert_to_tensor(logits), state

    return step


def table_step(vocab=7, seed=0, scale=3.0):
    """Logits depending on the last token and the position."""
    table = np.random.default_rng(seed).normal(size=(vocab, 16, vocab))
    constant = ops.convert_to_tensor((table * scale).astype("float32"))

    def step(tokens, index, state):
        rows = ops.take(constant, tokens[:, 0], axis=0)  # (B, 16, V)
        return ops.take(rows, index, axis=1), state

    return step


def _draws(sampler, probs, seeds, rows=16, steps=8):
    step = constant_step(probs, rows)
    prompt = np.zeros((rows, 1), "int32")
    # Traced once, then run per seed (a tensor): fast, and the graph path.
    draw = tf.function(lambda seed: sampler(step, (), prompt, steps, seed=seed))
    return np.concatenate(
        [_np(draw(tf.constant(seed))).ravel() for seed in seeds]
    )


def test_greedy_picks_the_most_likely_token():
    out = GreedySampler()(constant_step(PROBS, 2), (), [[1], [2]], 3)
    assert _np(out).tolist() == [[0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("seed", range(4))
def test_top_k_with_k_1_is_greedy(seed):
    step = table_step(seed=seed)
    prompt = np.array([[1, 2], [3, 4], [0, 6]], "int32")
    greedy = GreedySampler()(step, (), prompt, 10)
    top1 = TopKSampler(k=1, temperature=0.7)(step, (), prompt, 10, seed=seed)
    np.testing.assert_array_equal(_np(top1), _np(greedy))


@pytest.mark.parametrize("p, nucleus", [(0.7, {0, 1, 2}), (0.5, {0, 1})])
def test_top_p_never_draws_outside_the_nucleus(p, nucleus):
    # 40 seeds x 16 rows x 8 steps = 5120 draws from one distribution.
    draws = _draws(TopPSampler(p=p), PROBS, range(40))
    assert set(draws.tolist()) == nucleus  # every member, nothing else
    # In the nucleus, the renormalized probabilities.
    members = sorted(nucleus)
    expected = PROBS[members] / PROBS[members].sum()
    observed = np.array([np.mean(draws == t) for t in members])
    np.testing.assert_allclose(observed, expected, atol=0.03)


def _nucleus_by_sorting(probs, p):
    """The nucleus as the definition reads: sort, keep each token whose
    predecessors' mass is below `p`, plus the tokens tied with the least
    likely one kept. p = 1 keeps every token (however the sum rounds)."""
    if p >= 1.0:
        return np.ones(probs.shape, bool)
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order], dtype=np.float64) - probs[order]
    threshold = probs[order][before < p].min()
    return probs >= threshold


@pytest.mark.parametrize("vocab", [7, 1000])
def test_the_nucleus_equals_the_sorted_definition(vocab):
    # The sampler finds the nucleus by bisection, not by sorting: it must
    # pick the same tokens, with ties, peaked and flat rows, and p = 1.
    rng = np.random.default_rng(vocab)
    rows = [rng.normal(size=vocab) * scale for scale in (0.01, 1.0, 5.0)]
    rows.append(np.round(rng.normal(size=vocab)))  # many tied logits
    rows.append(np.zeros(vocab))  # all tied
    logits = np.stack(rows).astype("float32")
    probs = _np(ops.softmax(logits, axis=-1))
    for p in (0.05, 0.5, 0.9, 0.999, 1.0):
        kept = _np(samplers._keep_top_p(ops.convert_to_tensor(logits), p))
        mask = kept > -1e8
        for row in range(len(rows)):
            expected = _nucleus_by_sorting(probs[row].astype(np.float64), p)
            np.testing.assert_array_equal(mask[row], expected, f"{row} {p}")


def test_top_p_of_a_tiny_mass_is_the_top_token():
    draws = _draws(TopPSampler(p=0.3), PROBS, range(5))
    assert set(draws.tolist()) == {0}


def test_top_p_sees_the_temperature():
    # Temperature 3 flattens PROBS: the 0.7-nucleus then holds 4 tokens.
    flat = np.exp(np.log(PROBS) / 3)
    flat /= flat.sum()
    order = np.argsort(-flat)
    before = np.cumsum(flat[order]) - flat[order]
    nucleus = set(order[before < 0.7].tolist())
    assert len(nucleus) > 3
    draws = _draws(TopPSampler(p=0.7, temperature=3.0), PROBS, range(10))
    assert set(draws.tolist()) == nucleus


def test_top_p_with_k_keeps_the_smaller_set():
    draws = _draws(TopPSampler(p=0.9, k=2), PROBS, range(10))
    assert set(draws.tolist()) == {0, 1}


def test_top_k_draws_only_the_k_most_likely():
    draws = _draws(TopKSampler(k=3), PROBS, range(20))
    assert set(draws.tolist()) == {0, 1, 2}
    expected = PROBS[:3] / PROBS[:3].sum()
    observed = np.array([np.mean(draws == t) for t in range(3)])
    np.testing.assert_allclose(observed, expected, atol=0.03)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_random_sampling_follows_the_softmax(temperature):
    draws = _draws(RandomSampler(temperature=temperature), PROBS, range(40))
    expected = np.exp(np.log(PROBS) / temperature)
    expected /= expected.sum()
    observed = np.bincount(draws, minlength=len(PROBS)) / len(draws)
    np.testing.assert_allclose(observed, expected, atol=0.025)


def test_a_cold_temperature_is_greedy():
    step = table_step(seed=3, scale=1.0)
    prompt = np.array([[1], [2], [5]], "int32")
    greedy = GreedySampler()(step, (), prompt, 12)
    cold = RandomSampler(temperature=1e-3)(step, (), prompt, 12, seed=9)
    np.testing.assert_array_equal(_np(cold), _np(greedy))


@pytest.mark.parametrize(
    "sampler",
    [RandomSampler(), TopKSampler(k=4), TopPSampler(p=0.8)],
    ids=["random", "top_k", "top_p"],
)
def test_same_seed_same_tokens_eagerly_and_in_tf_function(sampler):
    step = table_step(seed=1, scale=1.0)
    prompt = np.array([[1, 2], [3, 4]], "int32")
    eager = _np(sampler(step, (), prompt, 10, seed=5))
    again = _np(sampler(step, (), prompt, 10, seed=5))
    other = _np(sampler(step, (), prompt, 10, seed=6))
    traced = tf.function(lambda seed: sampler(step, (), prompt, 10, seed=seed))
    np.testing.assert_array_equal(again, eager)
    np.testing.assert_array_equal(_np(traced(tf.constant(5))), eager)
    np.testing.assert_array_equal(_np(traced(tf.constant(6))), other)
    assert not np.array_equal(other, eager)


def test_rows_draw_independently():
    draws = _np(RandomSampler()(constant_step(PROBS, 2), (), [[0], [0]], 30))
    assert not np.array_equal(draws[0], draws[1])


def test_no_seed_draws_fresh_tokens():
    step = constant_step(np.full(50, 0.02), 1)
    a = _np(RandomSampler()(step, (), [[0]], 10))
    b = _np(RandomSampler()(step, (), [[0]], 10))
    assert not np.array_equal(a, b)


def test_stop_tokens_stop_a_row_and_pad_after_it():
    # Token t is followed by t + 1 (mod 7): row 0 reaches 4 after two
    # steps, row 1 reaches 5 after one; 4 and 5 both stop.
    def step(tokens, index, state):
        return ops.one_hot((tokens[:, 0] + 1) % 7, 7) * 5.0, state

    calls = []

    def counting(tokens, index, state):
        calls.append(1)
        return step(tokens, index, state)

    prompt = np.array([[9, 2], [3, 4], [1, 6]], "int32")
    for sampler in (GreedySampler(), TopKSampler(k=1)):
        out = _np(sampler(step, (), prompt, 6, stop_token_ids=[4, 5], pad_id=9))
        assert out.tolist() == [
            [3, 4, 9, 9, 9, 9],
            [5, 9, 9, 9, 9, 9],
            [0, 1, 2, 3, 4, 9],
        ]
    # The loop ends once every row has stopped (eagerly: 5 steps, not 6).
    GreedySampler()(counting, (), prompt, 6, stop_token_ids=[4, 5])
    assert len(calls) == 5


def test_the_prompt_is_fed_last_token_first_at_its_index():
    seen = []

    def step(tokens, index, state):
        seen.append((_np(tokens)[:, 0].tolist(), int(_np(index))))
        return ops.one_hot(tokens[:, 0] * 0 + 3, 5), state

    GreedySampler()(step, (), [[7, 8, 1], [7, 7, 2]], 2)
    assert seen == [([1, 2], 2), ([3, 3], 3)]


def test_one_token_prompts_are_the_step_function_world():
    # An encoder-decoder model's start token as the prompt: the same
    # tokens as `greedy_search` and `beam_search` over the same step.
    step = table_step(seed=2)
    start, end = 1, 3
    prompt = np.full((3, 1), start, "int32")
    old = greedy_search(step, (), 3, 8, start, end)
    new = GreedySampler()(step, (), prompt, 8, stop_token_ids=end)
    np.testing.assert_array_equal(_np(new), _np(old))
    old_beam, _ = beam_search(step, (), 3, 8, start, end, beam_width=3)
    new_beam = BeamSampler(beam_width=3)(step, (), prompt, 8, end)
    np.testing.assert_array_equal(_np(new_beam), _np(old_beam))


@pytest.mark.parametrize("seed", range(3))
def test_beam_width_one_is_greedy(seed):
    step = table_step(seed=seed)
    prompt = np.array([[1, 2], [5, 4]], "int32")
    greedy = GreedySampler(repetition_penalty=1.5)(step, (), prompt, 9, 3)
    beam = BeamSampler(beam_width=1, repetition_penalty=1.5)(
        step, (), prompt, 9, 3
    )
    np.testing.assert_array_equal(_np(beam), _np(greedy))


def test_beam_finds_the_better_sequence():
    table = np.full((5, 5), 1e-6)
    table[1, [2, 3]] = [0.6, 0.4]
    table[2, [4, 2]] = [0.3, 0.7]
    table[3, [4, 2]] = [0.9, 0.1]
    table[4, 4] = 1.0
    logits = ops.convert_to_tensor(np.log(table), "float32")

    def step(tokens, index, state):
        return ops.take(logits, tokens[:, 0], axis=0), state

    greedy = GreedySampler()(step, (), [[0, 1]], 3, 4)
    beam = BeamSampler(beam_width=2, length_penalty=0.0)(
        step, (), [[0, 1]], 3, 4
    )
    assert _np(greedy).tolist() == [[2, 2, 2]]
    assert _np(beam).tolist() == [[3, 4, 0]]


def test_repetition_penalty_rescales_seen_logits():
    sampler = GreedySampler(repetition_penalty=2.0)
    logits = ops.convert_to_tensor([[2.0, -1.0, 3.0, -2.0]])
    tokens = ops.convert_to_tensor([[0, 1, 3]])
    valid = ops.convert_to_tensor([[True, True, False]])
    out = _np(sampler.process_logits(logits, tokens, valid, 2))
    # 0 (positive) halves, 1 (negative) doubles; 3 was padding: unchanged.
    np.testing.assert_allclose(out, [[1.0, -2.0, 3.0, -2.0]])


def test_repetition_penalty_counts_the_prompt():
    # Token 0 is the likeliest, but it is in the prompt: with the penalty,
    # greedy takes 1 first.
    step = constant_step(np.array([0.5, 0.3, 0.2]), 1)
    plain = GreedySampler()(step, (), [[0]], 1)
    penalized = GreedySampler(repetition_penalty=3.0)(step, (), [[0]], 1)
    assert _np(plain).tolist() == [[0]]
    assert _np(penalized).tolist() == [[1]]


@pytest.mark.parametrize(
    "sampler",
    [GreedySampler, BeamSampler, lambda **kw: TopKSampler(k=2, **kw)],
    ids=["greedy", "beam", "top_k"],
)
def test_no_repeat_ngram_size_holds_over_prompt_and_output(sampler):
    step = table_step(vocab=5, seed=4)
    prompt = np.array([[1, 2, 3, 1, 2]], "int32")
    out = _np(sampler(no_repeat_ngram_size=2)(step, (), prompt, 10, seed=0))
    text = prompt[0].tolist() + out[0].tolist()
    bigrams = list(zip(text[:-1], text[1:], strict=True))
    assert len(bigrams) == len(set(bigrams)) + 1  # only the prompt's "1 2"
    assert (2, 3) not in bigrams[4:]  # the prompt's bigrams stay banned
    # Without the ban, this step function repeats itself.
    free = _np(GreedySampler()(step, (), prompt, 10))[0].tolist()
    text = prompt[0].tolist() + free
    assert len(set(zip(text[:-1], text[1:], strict=True))) < len(text) - 2


def test_get_and_serialization():
    assert isinstance(samplers.get("greedy"), GreedySampler)
    assert isinstance(samplers.get("beam"), BeamSampler)
    sampler = TopPSampler(p=0.5, k=7, temperature=0.8, repetition_penalty=1.3)
    config = keras.saving.serialize_keras_object(sampler)
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is TopPSampler
    assert again.get_config() == sampler.get_config()
    assert samplers.get(config).get_config() == sampler.get_config()
    assert samplers.get(sampler) is sampler
    assert samplers.get({"class_name": "BeamSampler"}).beam_width == 4


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: TopPSampler(p=0.0), "p"),
        (lambda: TopPSampler(p=1.5), "p"),
        (lambda: TopPSampler(p=-0.1), "p"),
        (lambda: TopPSampler(p=0.5, k=0), "k"),
        (lambda: TopKSampler(k=0), "k"),
        (lambda: TopKSampler(k=2.5), "k"),
        (lambda: RandomSampler(temperature=0.0), "temperature"),
        (lambda: GreedySampler(temperature=-1.0), "temperature"),
        (lambda: GreedySampler(repetition_penalty=0.0), "repetition_penalty"),
        (
            lambda: GreedySampler(no_repeat_ngram_size=-1),
            "no_repeat_ngram_size",
        ),
        (lambda: BeamSampler(beam_width=0), "beam_width"),
        (lambda: BeamSampler(length_penalty=-1.0), "length_penalty"),
        (lambda: samplers.get("nucleus"), "sampler"),
    ],
)
def test_invalid_options_name_the_argument(make, name):
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        make()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": -3}, "max_new_tokens"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"stop_token_ids": "end"}, "stop_token_ids"),
        ({"seed": -1}, "seed"),
        ({"pad_id": -1}, "pad_id"),
        ({"prompt": np.zeros((2, 0), "int32")}, "prompt"),
        ({"prompt": np.zeros((2,), "int32")}, "prompt"),
    ],
)
def test_invalid_call_arguments_name_the_argument(kwargs, name):
    call = {"prompt": np.zeros((2, 1), "int32"), "max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        RandomSampler()(constant_step(PROBS, 2), (), **call)


def test_beam_takes_one_stop_token():
    with pytest.raises(ValueError, match="argument `stop_token_ids`"):
        BeamSampler()(constant_step(PROBS, 1), (), [[0]], 3, [1, 2])


JAX_SCRIPT = """
import json
import numpy as np
from keras import ops
from keras_selfattn.models import ConfigurableSampler
from keras_selfattn.models import GreedySampler, TopPSampler
logits = np.random.default_rng(0).normal(size=(7, 16, 7)).astype("float32")
table = ops.convert_to_tensor(logits)
def step(tokens, index, state):
    return ops.take(ops.take(table, tokens[:, 0], axis=0), index, axis=1), state
prompt = np.array([[1, 2], [3, 4]], "int32")
greedy = GreedySampler()(step, (), prompt, 8)
top_p = TopPSampler(p=0.8)(step, (), prompt, 8, seed=5)
per_row = ConfigurableSampler(
    temperature=ops.convert_to_tensor([0.7, 1.3]),
    k=ops.convert_to_tensor([3, 0], "int32"),
    p=ops.convert_to_tensor([1.0, 0.6]),
    token_limit=ops.convert_to_tensor([8, 5], "int32"),
)(step, (), prompt, 8, seed=ops.convert_to_tensor([5, 9], "int32"))
out = [ops.convert_to_numpy(x).tolist() for x in (greedy, top_p, per_row)]
print(json.dumps(out))
"""


def test_same_tokens_on_jax():
    pytest.importorskip("jax")
    # The hash-based draws use keras.ops integer arithmetic only: the same
    # seed gives the same tokens on TensorFlow and on JAX.
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT],
        env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    namespace = {}
    exec(JAX_SCRIPT.rsplit("print", 1)[0], namespace)  # the same, on TF
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got == namespace["out"]


def test_a_seed_beyond_int32_is_refused():
    def step(tokens, index, state):
        return ops.zeros((1, 5)), state

    with pytest.raises(ValueError, match=r"argument `seed`.*2\*\*31"):
        samplers.RandomSampler()(step, (), [[1]], 2, seed=2**31)
    # The largest allowed seed works.
    out = samplers.RandomSampler()(step, (), [[1]], 2, seed=2**31 - 1)
    assert tuple(out.shape) == (1, 2)


# ConfigurableSampler: the options a served model takes per request.


@pytest.mark.parametrize(
    "configurable, reference",
    [
        (ConfigurableSampler(k=3), TopKSampler(k=3)),
        (ConfigurableSampler(p=0.6), TopPSampler(p=0.6)),
        (ConfigurableSampler(k=4, p=0.7), TopPSampler(p=0.7, k=4)),
        (ConfigurableSampler(temperature=0.5), RandomSampler(0.5)),
        (ConfigurableSampler(k=1), GreedySampler()),
    ],
    ids=["top_k", "top_p", "top_k_top_p", "temperature", "greedy"],
)
def test_configurable_draws_what_the_fixed_samplers_draw(
    configurable, reference
):
    step = table_step(seed=2, scale=1.5)  # no ties among the logits
    prompt = np.array([[1, 2], [3, 4], [0, 5]], "int32")
    expected = _np(reference(step, (), prompt, 12, seed=7))
    np.testing.assert_array_equal(
        _np(configurable(step, (), prompt, 12, seed=7)), expected
    )


def test_configurable_options_per_row_equal_the_scalar_options():
    step = table_step(seed=3, scale=1.0)
    prompt = np.array([[1, 2], [3, 4], [5, 6]], "int32")
    rows = [
        {"temperature": 0.7, "k": 0, "p": 0.8, "seed": 5, "limit": 12},
        {"temperature": 1.3, "k": 3, "p": 1.0, "seed": 9, "limit": 4},
        {"temperature": 1.0, "k": 1, "p": 0.5, "seed": 5, "limit": 1},
    ]

    def column(key, dtype):
        return tf.constant([r[key] for r in rows], dtype)

    sampler = ConfigurableSampler(
        temperature=column("temperature", tf.float32),
        k=column("k", tf.int32),
        p=column("p", tf.float32),
        token_limit=column("limit", tf.int32),
    )
    traced = tf.function(
        lambda seed: sampler(step, (), prompt, 12, seed=seed, pad_id=0)
    )
    together = _np(traced(column("seed", tf.int32)))
    for i, r in enumerate(rows):
        # The batch with row i's options everywhere (a row's draws depend
        # on its index in the batch, so the batch stays the same).
        scalar = ConfigurableSampler(r["temperature"], r["k"], r["p"])(
            step, (), prompt, 12, seed=r["seed"]
        )
        expected = _np(scalar)[i].copy()
        expected[r["limit"] :] = 0  # pad_id after the row's limit
        np.testing.assert_array_equal(together[i], expected)
    # A scalar seed is the same as that seed on every row.
    np.testing.assert_array_equal(
        _np(traced(tf.constant(5)))[[0, 2]], together[[0, 2]]
    )


def test_configurable_token_limit_ends_the_loop_early():
    steps = []

    def step(tokens, index, state):
        steps.append(index)  # eagerly, once per loop iteration
        return ops.zeros((2, 5)), state

    out = _np(ConfigurableSampler(token_limit=3)(step, (), [[1], [1]], 10))
    assert out.shape == (2, 10) and out[:, 3:].max() == 0
    assert len(steps) == 3


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"k": -1}, "k"),
        ({"p": 0.0}, "p"),
        ({"p": 1.5}, "p"),
        ({"token_limit": 0}, "token_limit"),
    ],
)
def test_configurable_invalid_numbers_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        ConfigurableSampler(**kwargs)


def test_configurable_serializes_numbers_only():
    sampler = ConfigurableSampler(temperature=0.8, k=5, p=0.9)
    again = samplers.get(keras.saving.serialize_keras_object(sampler))
    assert isinstance(again, ConfigurableSampler)
    assert (again.temperature, again.k, again.p) == (0.8, 5, 0.9)
    with pytest.raises(TypeError, match="tensor options"):
        ConfigurableSampler(k=tf.constant(3)).get_config()
