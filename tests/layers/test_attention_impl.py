"""Tests for `MultiHeadSelfAttention(attention_impl=...)`: the chunked path
against the dense one (outputs and gradients), and the harness contract on
the chunked path."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn.layers import _kernels
from keras_selfattn.layers import _masking
from tests import harness

# Every axis a different size: batch 2, length 7, width 12, 3 heads.
BATCH, LENGTH, WIDTH, HEADS = 2, 7, 12, 3


def _inputs(seed=0, shape=(BATCH, LENGTH, WIDTH)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _mask(length=LENGTH):
    # Row 0 partly padded, row 1 fully padded (an empty string).
    mask = np.zeros((BATCH, length), dtype=bool)
    mask[0, : length - 2] = True
    return mask


def _pair(seed=1, **kwargs):
    """A dense and a chunked layer with the same random weights."""
    dense = MultiHeadSelfAttention(HEADS, attention_impl="dense", **kwargs)
    chunked = MultiHeadSelfAttention(
        HEADS, attention_impl="chunked", chunk_size=3, **kwargs
    )
    x = _inputs()
    dense(x)
    chunked(x)
    rng = np.random.default_rng(seed)
    for w in dense.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)
    chunked.set_weights(dense.get_weights())
    return dense, chunked


def _outputs_and_grads(layer, x, **call_kwargs):
    """`{"outputs": y, "inputs": dL/dx, <weight name>: dL/dw, ...}`."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, **call_kwargs)
        loss = tf.reduce_sum(tf.square(y)) + tf.reduce_sum(y)
    weights = layer.trainable_weights
    grads = tape.gradient(loss, [x, *weights])
    names = ["outputs", "inputs"] + [harness.weight_name(w) for w in weights]
    return {
        name: np.asarray(harness.to_numpy(t), dtype="float64")
        for name, t in zip(names, (y, *grads), strict=True)
    }


def _assert_same(actual, expected, rel=1e-5):
    """Every tensor equal to `rel` relative to its largest entry.

    The key bias gets no gradient in exact arithmetic (a softmax row is
    shift-invariant), so its float32 value is pure cancellation noise: it is
    compared relative to the largest gradient instead.
    """
    assert actual.keys() == expected.keys()
    largest = max(
        float(np.max(np.abs(e), initial=0)) for e in expected.values()
    )
    for name, e in expected.items():
        scale = max(1.0, float(np.max(np.abs(e), initial=0)))
        if name == "key_bias":
            scale = max(scale, largest)
        harness.assert_close(actual[name] / scale, e / scale, rel, name)


# --------------------------------------------------------------------------
# Chunked == dense, outputs and gradients.


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"causal": True},
        {"window": 1},
        {"window": 2, "causal": True},
        {"window": 4},
        {"key_dim": 5, "value_dim": 4, "output_dim": 9},
        {"use_bias": False},
    ],
)
@pytest.mark.parametrize("with_attention_mask", [False, True])
def test_chunked_matches_dense(kwargs, with_attention_mask):
    dense, chunked = _pair(**kwargs)
    x = _inputs(seed=2)
    call = {"mask": _mask()}
    if with_attention_mask:
        rng = np.random.default_rng(3)
        attention = rng.random((BATCH, LENGTH, LENGTH)) < 0.7
        attention[0, 1] = False  # a valid query with no allowed key
        call["attention_mask"] = attention
    expected = _outputs_and_grads(dense, x, **call)
    actual = _outputs_and_grads(chunked, x, **call)
    _assert_same(actual, expected)
    # Padded queries, the empty row and the query with no allowed key give
    # exact zeros on both paths.
    padded = ~_mask()
    assert np.all(actual["outputs"][padded] == 0.0)
    if with_attention_mask:
        assert np.all(actual["outputs"][0, 1] == 0.0)
    assert np.all(np.isfinite(actual["inputs"]))
    assert np.all(actual["inputs"][1] == 0.0), "gradient into the empty row"


@pytest.mark.parametrize("kwargs", [{}, {"causal": True}, {"window": 2}])
def test_chunked_matches_dense_without_masks(kwargs):
    # No padding and a length divisible by the block: the unmasked code.
    dense, chunked = _pair(**kwargs)
    x = _inputs(seed=4, shape=(BATCH, 6, WIDTH))
    _assert_same(_outputs_and_grads(chunked, x), _outputs_and_grads(dense, x))


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 11),
    heads=st.integers(1, 3),
    causal=st.booleans(),
    window=st.one_of(st.none(), st.integers(1, 5)),
    chunk_size=st.integers(1, 6),
    attention=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_chunked_matches_dense(
    batch, length, heads, causal, window, chunk_size, attention, seed
):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, 2 * heads)).astype("float32")
    mask = rng.random((batch, length)) < 0.7
    call = {"mask": mask}
    if attention:
        call["attention_mask"] = rng.random((1, length, length)) < 0.7
    kwargs = {"causal": causal, "window": window}
    dense = MultiHeadSelfAttention(heads, attention_impl="dense", **kwargs)
    chunked = MultiHeadSelfAttention(
        heads, attention_impl="chunked", chunk_size=chunk_size, **kwargs
    )
    dense(x)
    chunked(x)
    chunked.set_weights(dense.get_weights())
    expected = _outputs_and_grads(dense, x, **call)
    actual = _outputs_and_grads(chunked, x, **call)
    _assert_same(actual, expected)
    assert np.all(actual["outputs"][~mask] == 0.0)


def test_chunked_scores_request_uses_dense_weights():
    dense, chunked = _pair()
    x = _inputs()
    y, scores = chunked(x, mask=_mask(), return_attention_scores=True)
    y_dense, scores_dense = dense(x, mask=_mask(), return_attention_scores=True)
    harness.assert_close(scores, scores_dense, 1e-6, "scores")
    harness.assert_close(y, y_dense, 1e-5, "outputs")


def test_chunked_under_xla_with_gradients():
    dense, chunked = _pair(causal=True)
    x = tf.constant(_inputs(seed=5))
    mask = tf.constant(_mask())

    def step(layer):
        def run(x, mask):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, mask=mask)
                loss = tf.reduce_sum(tf.square(y))
            return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

        return run

    expected = step(dense)(x, mask)
    actual = tf.function(step(chunked), jit_compile=True)(x, mask)
    names = ["outputs", "inputs"]
    names += [harness.weight_name(w) for w in dense.trainable_weights]
    _assert_same(
        {n: harness.to_numpy(t) for n, t in zip(names, actual, strict=True)},
        {n: harness.to_numpy(t) for n, t in zip(names, expected, strict=True)},
        rel=1e-4,
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_chunked_mixed_precision_gradients(policy):
    reference, _ = _pair(window=None)
    layer = MultiHeadSelfAttention(
        HEADS, attention_impl="chunked", chunk_size=2, dtype=policy
    )
    x = _inputs(seed=6)
    layer(x)
    layer.set_weights(reference.get_weights())
    expected = _outputs_and_grads(reference, x, mask=_mask())
    actual = _outputs_and_grads(layer, x, mask=_mask())
    assert "float32" not in str(layer(x).dtype)
    tol = 5e-2 * (4 if policy == "mixed_bfloat16" else 1)
    for name, e in expected.items():
        assert np.all(np.isfinite(actual[name])), name
        scale = max(1.0, float(np.max(np.abs(e))))
        if name == "key_bias":
            continue  # zero in exact arithmetic: noise in both
        harness.assert_close(actual[name] / scale, e / scale, tol, name)


# --------------------------------------------------------------------------
# Eager execution: the same numbers as traced, and no taped forward pass.


@pytest.mark.parametrize(
    "kwargs", [{}, {"causal": True}, {"window": 2}, {"use_bias": False}]
)
def test_chunked_eager_matches_traced(kwargs):
    _, chunked = _pair(**kwargs)
    x = tf.constant(_inputs(seed=8))
    mask = tf.constant(_mask())

    def step(x, mask):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = chunked(x, mask=mask)
            loss = tf.reduce_sum(tf.square(y)) + tf.reduce_sum(y)
        return [y, *tape.gradient(loss, [x, *chunked.trainable_weights])]

    names = ["outputs", "inputs"]
    names += [harness.weight_name(w) for w in chunked.trainable_weights]

    def named(tensors):
        return {
            n: harness.to_numpy(t) for n, t in zip(names, tensors, strict=True)
        }

    eager = named(step(x, mask))
    traced = named(tf.function(step)(x, mask))
    _assert_same(eager, traced, rel=1e-6)
    assert np.any(eager["inputs"] != 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attention_impl": "chunked", "chunk_size": 3},
        {"attention_impl": "chunked", "chunk_size": 3, "causal": True},
        # Banded: the blocks run as one grouped `dense_attention`.
        {"attention_impl": "chunked", "chunk_size": 2, "window": 2},
        {"attention_impl": "dense"},
    ],
)
def test_eager_tape_does_not_record_the_custom_forward_pass(
    monkeypatch, kwargs
):
    # Run eagerly under a tape, a `custom_gradient` forward pass is recorded
    # op by op unless its inputs are stopped, and the tape then holds every
    # block's probabilities: the whole `(B, N, T, T)` matrix the chunked
    # path exists to avoid. A score tensor that the tape follows has a
    # gradient with respect to the input; an unrecorded one has none.
    taped = []
    original = _masking.fused_masked_softmax

    def spy(scores, *args, **kwargs):
        taped.append(tf.reduce_sum(scores))
        return original(scores, *args, **kwargs)

    monkeypatch.setattr(_masking, "fused_masked_softmax", spy)
    layer = MultiHeadSelfAttention(HEADS, **kwargs)
    x = tf.constant(_inputs(seed=9))
    layer(x)
    taped.clear()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x, mask=_mask())
        loss = tf.reduce_sum(tf.square(y))
    assert taped, "the forward pass computes its scores"
    assert tape.gradient(taped, x) is None, "the forward pass was taped"
    grad = tape.gradient(loss, x)
    assert grad is not None and np.any(harness.to_numpy(grad) != 0.0)


# --------------------------------------------------------------------------
# `attention_impl="auto"`.


def _count_chunked_calls(monkeypatch):
    calls = []
    original = _kernels.chunked_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_kernels, "chunked_attention", spy)
    return calls


def test_auto_switches_to_chunked_at_the_threshold(monkeypatch):
    calls = _count_chunked_calls(monkeypatch)
    monkeypatch.setattr(_kernels, "CHUNKED_MIN_LENGTH", LENGTH)
    layer = MultiHeadSelfAttention(HEADS)
    x = _inputs()
    layer(x[:, : LENGTH - 1])
    assert not calls, "dense below the threshold"
    y = layer(x, mask=_mask())
    assert len(calls) == 1, "chunked from the threshold on"
    dense = MultiHeadSelfAttention(HEADS, attention_impl="dense")
    dense(x)
    dense.set_weights(layer.get_weights())
    harness.assert_close(y, dense(x, mask=_mask()), 1e-5, "auto vs dense")
    # Scores, attention dropout in training and additive scores stay dense.
    layer(x, return_attention_scores=True)
    MultiHeadSelfAttention(HEADS, dropout=0.5)(x, training=True)
    MultiHeadSelfAttention(HEADS, score="additive")(x)
    assert len(calls) == 1


def test_auto_decides_at_run_time_for_unknown_length(monkeypatch):
    monkeypatch.setattr(_kernels, "CHUNKED_MIN_LENGTH", 6)
    layer = MultiHeadSelfAttention(HEADS)
    dense = MultiHeadSelfAttention(HEADS, attention_impl="dense")
    x = _inputs()
    layer(x)
    dense(x)
    dense.set_weights(layer.get_weights())
    calls = _count_chunked_calls(monkeypatch)
    run = tf.function(
        lambda x: layer(x),
        input_signature=[tf.TensorSpec((None, None, WIDTH), "float32")],
    )
    for length in (4, LENGTH):  # one below, one above the threshold
        harness.assert_close(
            run(x[:, :length]), dense(x[:, :length]), 1e-5, str(length)
        )
    assert len(calls) == 1, "traced once, inside a run-time condition"


# --------------------------------------------------------------------------
# The harness contract on the chunked path (blocks of 2: 5 -> 3 blocks).


def _spec(**kwargs):
    return harness.LayerSpec(
        cls=MultiHeadSelfAttention,
        init_kwargs={
            "num_heads": HEADS,
            "attention_impl": "chunked",
            "chunk_size": 2,
            **kwargs,
        },
        input_data=_inputs(shape=(BATCH, 5, WIDTH)),
        mask=_mask(5),
        expected_num_trainable_weights=8,
    )


# A variant of MultiHeadSelfAttention's main spec: the light checks run on
# JAX and PyTorch too.
@pytest.mark.parametrize("check", harness.check_params(variant=True))
def test_contract_chunked(check):
    harness.CHECKS[check](_spec())


@pytest.mark.parametrize("check", ["config", "train", "masking", "xla"])
def test_contract_chunked_causal_window(check):
    harness.CHECKS[check](_spec(causal=True, window=2))


# --------------------------------------------------------------------------
# Argument checks.


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"attention_impl": "flash"}, "attention_impl"),
        ({"attention_impl": "chunked", "score": "additive"}, "attention_impl"),
        ({"attention_impl": "chunked", "dropout": 0.1}, "attention_impl"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 2.0}, "chunk_size"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        MultiHeadSelfAttention(HEADS, **kwargs)


def test_config_round_trip_keeps_impl():
    layer = MultiHeadSelfAttention(
        HEADS, attention_impl="chunked", chunk_size=4
    )
    config = layer.get_config()
    assert config["attention_impl"] == "chunked"
    assert config["chunk_size"] == 4
    rebuilt = MultiHeadSelfAttention.from_config(config)
    assert rebuilt.attention_impl == "chunked"
    assert rebuilt.chunk_size == 4


def test_block_size_is_a_bounded_power_of_two():
    assert _kernels.block_size(8, 1, 8192) == 256
    assert _kernels.block_size(8, 1, 2**20) == 16
    assert _kernels.block_size(8, None, None) == 64
    assert _kernels.block_size(8, 1, 8192, window=100) == 64
    for args in [(3, 5, 999), (1, 1, 7), (16, 64, 100000)]:
        size = _kernels.block_size(*args)
        assert size & (size - 1) == 0
        assert 16 <= size <= 512


def test_keras_mha_comparison_with_chunked_path():
    # The chunked path computes keras.layers.MultiHeadAttention exactly.
    layer = MultiHeadSelfAttention(
        HEADS, attention_impl="chunked", chunk_size=3
    )
    x = _inputs()
    layer(x)
    mha = keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)
    mha(x, x)
    mha._query_dense.kernel.assign(layer.query_kernel)
    mha._query_dense.bias.assign(layer.query_bias)
    mha._key_dense.kernel.assign(layer.key_kernel)
    mha._key_dense.bias.assign(layer.key_bias)
    mha._value_dense.kernel.assign(layer.value_kernel)
    mha._value_dense.bias.assign(layer.value_bias)
    mha._output_dense.kernel.assign(layer.output_kernel)
    mha._output_dense.bias.assign(layer.output_bias)
    harness.assert_close(layer(x), mha(x, x), 1e-5, "vs Keras MHA")


@pytest.mark.parametrize(
    "kwargs", [{}, {"causal": True}, {"window": 2}, {"use_bias": False}]
)
def test_dense_fast_path_gradients_match_autodiff(kwargs):
    # Without scores the dense path uses a hand-written backward pass; with
    # `return_attention_scores=True` it is plain autodiff of the same maths.
    dense, _ = _pair(**kwargs)
    x = _inputs(seed=7)
    fast = _outputs_and_grads(dense, x, mask=_mask())

    def with_scores(x, **kwargs):
        return dense(x, return_attention_scores=True, **kwargs)[0]

    with_scores.trainable_weights = dense.trainable_weights
    _assert_same(fast, _outputs_and_grads(with_scores, x, mask=_mask()))
