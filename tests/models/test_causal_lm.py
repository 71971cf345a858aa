"""Tests for `CausalLM`: learning, cached generation, padding, saving."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_selfattn import PositionalEncoding
from keras_selfattn.layers.positional_encoding import sinusoids
from keras_selfattn.models import BeamSampler
from keras_selfattn.models import CausalLM
from keras_selfattn.models import TopKSampler
from keras_selfattn.models import TopPSampler
from keras_selfattn.models import next_token_batch
from keras_selfattn.models.causal_lm import left_align

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
# Every size different: vocabulary 23, width 12, 3 heads, feed-forward 11.
V, D, N, F = 23, 12, 3, 11
# Position schemes, each with other block options mixed in.
VARIANTS = {
    "learned": {"position_embedding": "learned"},
    "sinusoidal": {
        "position_embedding": "sinusoidal",
        "block_options": {"normalization": "rms", "gated_feedforward": True},
    },
    "rotary": {
        "position_embedding": "rotary",
        "block_options": {"num_key_value_heads": 1, "qk_norm": True},
    },
    "alibi": {"position_embedding": "alibi", "block_options": {"window": 4}},
    "relative": {
        "position_embedding": "relative",
        "block_options": {"norm_first": False, "use_bias": False},
    },
}
PROMPTS = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 11, 4]]


def _np(x):
    return ops.convert_to_numpy(x)


def _model(variant="learned", **overrides):
    keras.utils.set_random_seed(7)
    options = {
        "vocab_size": V,
        "num_layers": 2,
        "hidden_dim": D,
        "num_heads": N,
        "ff_dim": F,
        "max_length": 24,
        "dropout": 0.0,
        # Wide logits: no near-ties for float32 rounding to flip. A
        # separate output matrix: with random tied embeddings, a token's
        # own logit dominates, and greedy decoding repeats the last token
        # whatever the context (a test of padding could not fail).
        "embeddings_initializer": keras.initializers.RandomNormal(
            stddev=1.0, seed=3
        ),
        "tie_embeddings": False,
        **VARIANTS[variant],
        **overrides,
    }
    model = CausalLM(**options)
    model(np.ones((1, 3), "int32"))
    return model


def _pad(prompts, side, pad_id=0):
    length = max(len(p) for p in prompts)
    rows = []
    for p in prompts:
        fill = [pad_id] * (length - len(p))
        rows.append(fill + p if side == "left" else p + fill)
    return np.array(rows, "int32")


def _greedy_uncached(model, prompt, steps):
    """Greedy decoding that re-runs the model on the whole prefix."""
    tokens = list(prompt)
    for _ in range(steps):
        logits = _np(model(np.array([tokens], "int32")))[0, -1]
        tokens.append(int(np.argmax(logits)))
    return tokens[len(prompt) :]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_generation_equals_uncached(variant):
    model = _model(variant)
    for prompt in PROMPTS[:2]:
        cached = _np(model.generate(np.array([prompt]), 8))[0].tolist()
        assert cached == _greedy_uncached(model, prompt, 8), prompt


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_padded_prompt_generates_what_it_would_alone(variant):
    model = _model(variant)
    alone = [_np(model.generate(np.array([p]), 6))[0] for p in PROMPTS]
    for side in ("left", "right"):
        batch = _np(model.generate(_pad(PROMPTS, side), 6))
        np.testing.assert_array_equal(batch, np.stack(alone), side)


def test_padded_beam_search_generates_what_it_would_alone():
    model = _model("rotary")
    beam = BeamSampler(beam_width=3)
    batch = _np(model.generate(_pad(PROMPTS, "left"), 6, sampler=beam))
    for row, prompt in zip(batch, PROMPTS, strict=True):
        alone = model.generate(np.array([prompt]), 6, sampler=beam)
        np.testing.assert_array_equal(row, _np(alone)[0])


def test_a_pad_id_other_than_zero_and_an_explicit_mask():
    model = _model("learned", pad_id=3)
    prompts = [[1, 5, 0, 7], [1, 9]]  # 0 is a real token here
    padded = _pad(prompts, "right", pad_id=3)
    batch = _np(model.generate(padded, 5))
    for row, prompt in zip(batch, prompts, strict=True):
        alone = _np(model.generate(np.array([prompt]), 5))[0]
        np.testing.assert_array_equal(row, alone)
    # The same with a mask and another filler in the padded slots.
    mask = padded != 3
    filled = np.where(mask, padded, 17)
    np.testing.assert_array_equal(
        _np(model.generate(filled, 5, padding_mask=mask)), batch
    )


def test_left_align_moves_padding_first_and_keeps_order():
    ids = np.array([[4, 5, 0, 0], [0, 6, 0, 7], [8, 9, 1, 2]])
    aligned, mask = left_align(ids, ids != 0, 0)
    assert _np(aligned).tolist() == [
        [0, 0, 4, 5],
        [0, 0, 6, 7],
        [8, 9, 1, 2],
    ]
    assert _np(mask).sum(axis=1).tolist() == [2, 2, 4]


def test_top_k_1_equals_greedy_and_seeds_reproduce_in_tf_function():
    model = _model("rotary")
    prompts = _pad(PROMPTS, "left")
    greedy = _np(model.generate(prompts, 6))
    top1 = model.generate(prompts, 6, sampler=TopKSampler(k=1), seed=4)
    np.testing.assert_array_equal(_np(top1), greedy)
    sampler = TopPSampler(p=0.9, temperature=1.5)
    eager = _np(model.generate(prompts, 6, sampler=sampler, seed=11))

    @tf.function
    def traced(prompts, seed):
        return model.generate(prompts, 6, sampler=sampler, seed=seed)

    np.testing.assert_array_equal(_np(traced(prompts, tf.constant(11))), eager)
    other = _np(traced(prompts, tf.constant(12)))
    assert not np.array_equal(other, eager)
    np.testing.assert_array_equal(_np(traced(prompts, tf.constant(11))), eager)


def test_an_eager_call_compiles_once_and_sees_new_weights(tmp_path):
    # Eagerly on TensorFlow, generate runs a cached XLA function: the same
    # tokens as a plain graph, one function for any seed, weights read at
    # each call (not baked in), and nothing of it in the model's exports.
    model = _model("rotary")
    prompts = _pad(PROMPTS, "left")
    sampler = TopPSampler(p=0.8)
    xla = _np(model.generate(prompts, 5, sampler=sampler, seed=3))
    plain = model.generate(prompts, 5, sampler, seed=3, jit_compile=False)
    np.testing.assert_array_equal(xla, _np(plain))
    model.generate(prompts, 5, sampler=sampler, seed=4)
    assert len(model._generate_functions) == 2  # XLA and plain, any seed
    before = _np(model.generate(prompts, 5))
    model.set_weights([w * 1.5 for w in model.get_weights()])
    assert not np.array_equal(_np(model.generate(prompts, 5)), before)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", model.call, [tf.TensorSpec((None, None), tf.int32)]
    )
    archive.write_out(str(tmp_path / "lm"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "lm"))
    assert not any("generate" in name for name in dir(served))
    np.testing.assert_allclose(
        _np(served.serve(prompts)), _np(model(prompts)), atol=1e-5
    )
    with pytest.raises(TypeError, match="argument `jit_compile`"):
        model.generate(prompts, 5, jit_compile="yes")


def test_stop_tokens_stop_a_row_and_pad_after_it():
    model = _model("learned")
    prompts = _pad(PROMPTS, "left")
    free = _np(model.generate(prompts, 8))
    stop = int(free[0, 2])
    assert stop not in free[0, :2].tolist()
    out = _np(model.generate(prompts, 8, stop_token_ids=[stop]))
    np.testing.assert_array_equal(out[0, :3], free[0, :3])
    assert out[0, 3:].tolist() == [0] * 5
    for row in range(1, len(PROMPTS)):
        hits = np.flatnonzero(free[row] == stop)
        end = hits[0] + 1 if len(hits) else 8
        np.testing.assert_array_equal(out[row, :end], free[row, :end])
        assert not np.any(out[row, end:])


def test_the_loss_ignores_padding():
    model = _model("learned")
    ids = np.array([[1, 5, 6, 7, 2, 0, 0], [1, 9, 10, 11, 12, 13, 2]])
    x, y, w = next_token_batch(ids)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    logits = model(x)
    value = float(_np(loss(y, logits, sample_weight=w)))
    # By hand: the mean over the 4 + 6 real targets.
    log_probs = _np(ops.log_softmax(logits, axis=-1))
    y, w = _np(y), _np(w)
    picked = np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(value, -(picked * w).sum() / w.sum(), 1e-5)
    assert w.sum() == 10
    # Other ids at the padded positions change nothing.
    other = np.where(_np(x) == 0, 17, _np(x))
    mask = _np(x) != 0
    again = model(other, padding_mask=mask)
    np.testing.assert_allclose(
        float(_np(loss(y, again, sample_weight=w))), value, rtol=1e-6
    )


def test_loss_falls_and_the_model_learns_to_copy():
    # Each sequence: a start token, 4 random tokens, then them twice more.
    # The repeats are predictable only by attending 4 positions back; the
    # loss floor is 4 * log(13) / 12 = 0.86, a model that does not learn
    # to copy stays near log(13) = 2.56.
    rng = np.random.default_rng(0)

    def corpus(n):
        x = rng.integers(3, 16, size=(n, 4))
        return np.concatenate([np.ones((n, 1), int), x, x, x], axis=1)

    keras.utils.set_random_seed(0)
    model = CausalLM(16, 2, 32, 2, 64, dropout=0.0)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y, w = next_token_batch(corpus(512))
    history = model.fit(
        x, y, sample_weight=w, batch_size=32, epochs=8, verbose=0
    )
    losses = history.history["loss"]
    assert losses[0] > 2.0 and losses[-1] < 1.0, losses
    test = corpus(16)
    out = _np(model.generate(test[:, :6], 7))
    assert np.mean(out == test[:, 6:]) > 0.9


@pytest.mark.parametrize("tie", [True, False])
def test_keras_round_trip(tmp_path, tie):
    model = _model(
        "rotary",
        tie_embeddings=tie,
        block_options={
            "num_key_value_heads": 1,
            "kernel_initializer": keras.initializers.HeNormal(seed=2),
            "activation": "gelu",
        },
    )
    ids = _pad(PROMPTS, "right")
    path = str(tmp_path / "lm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is CausalLM
    np.testing.assert_array_equal(_np(loaded(ids)), _np(model(ids)))
    np.testing.assert_array_equal(
        _np(loaded.generate(ids, 5)), _np(model.generate(ids, 5))
    )
    assert loaded.get_config() == model.get_config()
    assert len(loaded.weights) == len(model.weights)
    assert (model.token_embedding.embeddings in model.trainable_weights) and (
        hasattr(model, "output_projection") is not tie
    )


def test_logits_carry_the_padding_mask_and_shape():
    model = _model("sinusoidal")
    ids = np.array([[1, 5, 0], [1, 0, 0]])
    logits = model(ids)
    assert tuple(logits.shape) == (2, 3, V)
    assert logits.dtype == "float32"
    assert _np(logits._keras_mask).tolist() == [
        [True, True, False],
        [True, False, False],
    ]
    spec = model.compute_output_spec(keras.KerasTensor((None, 7), "int32"))
    assert spec.shape == (None, 7, V)
    inputs = {"token_ids": ids, "padding_mask": ids != 0}
    np.testing.assert_array_equal(_np(model(inputs)), _np(logits))


def test_per_row_sinusoids_equal_positional_encoding():
    # The model's per-row positions (a left-padded row starts at 0 later)
    # read the layer's table at those positions.
    positions = np.stack([np.arange(9), np.arange(9) + 3])  # (2, 9)
    table = _np(PositionalEncoding()(np.zeros((1, 12, 7), "float32")))[0]
    np.testing.assert_allclose(
        _np(sinusoids(positions, 7)), table[positions], atol=1e-6
    )


def test_call_with_cache_equals_call():
    model = _model("learned")
    ids = np.array([[1, 5, 6, 7, 8, 9]], "int32")
    full = _np(model(ids))
    cache = model.init_cache(1, 8)
    first, cache = model.call_with_cache(ids[:, :4], cache, 0)
    second, _ = model.call_with_cache(ids[:, 4:], cache, 4)
    steps = np.concatenate([_np(first), _np(second)], axis=1)
    np.testing.assert_allclose(steps, full, atol=1e-4)


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"hidden_dim": -1}, "hidden_dim"),
        ({"num_heads": 0}, "num_heads"),
        ({"ff_dim": 0}, "ff_dim"),
        ({"position_embedding": "absolute"}, "position_embedding"),
        ({"position_embedding": "learned", "max_length": None}, "max_length"),
        ({"dropout": 1.0}, "dropout"),
        ({"pad_id": V}, "pad_id"),
        ({"pad_id": -1}, "pad_id"),
        ({"block_options": {"causal": False}}, "block_options"),
        ({"block_options": {"num_head": 2}}, "block_options"),
        ({"block_options": {"num_key_value_heads": 2}}, "num_key_value_heads"),
    ],
)
def test_invalid_arguments_name_the_argument(overrides, name):
    options = {
        "vocab_size": V,
        "num_layers": 1,
        "hidden_dim": D,
        "num_heads": N,
        "ff_dim": F,
        **overrides,
    }
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        CausalLM(**options)


def test_invalid_types_name_the_argument():
    with pytest.raises(TypeError, match="argument `tie_embeddings`"):
        CausalLM(V, 1, D, N, F, tie_embeddings=1)
    with pytest.raises(TypeError, match="argument `block_options`"):
        CausalLM(V, 1, D, N, F, block_options=[("qk_norm", True)])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 23}, "max_new_tokens"),  # past the table
        ({"stop_token_ids": [V]}, "stop_token_ids"),
        ({"stop_token_ids": [-2]}, "stop_token_ids"),
        ({"sampler": "nucleus"}, "sampler"),
        ({"seed": -1}, "seed"),
        ({"prompt_ids": np.zeros((2, 0), "int32")}, "prompt_ids"),
        ({"prompt_ids": np.ones((3,), "int32")}, "prompt_ids"),
    ],
)
def test_invalid_generate_arguments_name_the_argument(kwargs, name):
    model = _model("learned")
    call = {"prompt_ids": np.ones((1, 3), "int32"), "max_new_tokens": 4}
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        model.generate(**{**call, **kwargs})


JAX_SCRIPT = """
import jax
import keras
import numpy as np
from keras import ops
from keras_selfattn.models import CausalLM, TopPSampler
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(1)
model = CausalLM(23, 2, 12, 3, 11, position_embedding="learned",
                 max_length=16, tie_embeddings=False)
prompts = np.array([[1, 5, 6, 7], [1, 9, 0, 0]])
greedy = ops.convert_to_numpy(model.generate(prompts, 5))
alone = ops.convert_to_numpy(model.generate(prompts[1:, :2], 5))
assert (greedy[1] == alone[0]).all(), (greedy, alone)
sampler = TopPSampler(p=0.9)
eager = ops.convert_to_numpy(model.generate(prompts, 5, sampler, seed=3))
jitted = jax.jit(lambda seed: model.generate(prompts, 5, sampler, seed=seed))
assert (ops.convert_to_numpy(jitted(3)) == eager).all()
print("ok")
"""


def test_generation_on_jax():
    # Greedy: a padded prompt generates what it would alone; top-p: the
    # same seed gives the same tokens eagerly and under jax.jit.
    pytest.importorskip("jax")
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT],
        env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
