"""Tests for `_kernels.grouped_dense_attention`, the dense fast
path run as independent groups of batch elements, heads and query rows:
the split it picks, and that it equals the ungrouped maths (outputs and
gradients) for every split, mask shape and call mode."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn import TransformerDecoderBlock
from keras_selfattn.layers import _kernels
from tests import harness
from tests.layers.test_attention_impl import _assert_same
from tests.layers.test_attention_impl import _inputs
from tests.layers.test_attention_impl import _mask
from tests.layers.test_attention_impl import _outputs_and_grads
from tests.layers.test_attention_impl import _pair

groups = _kernels.attention_groups


# --------------------------------------------------------------------------
# The split.


def test_groups_at_the_benchmark_shapes():
    # About 2**20 scores per group: batch first, then heads, then rows.
    assert groups(32, 8, 128, 128) == (4, 1, 1)
    assert groups(8, 8, 512, 512) == (8, 2, 1)
    assert groups(2, 8, 2048, 2048) == (2, 8, 4)


def test_small_or_unknown_problems_are_not_split():
    assert groups(1, 8, 64, 64) == (1, 1, 1)
    assert groups(16, 8, 64, 64) == (1, 1, 1)  # exactly 2**19 scores
    assert groups(4, None, 512, 512) == (1, 1, 1)
    assert groups(4, 8, None, 512) == (1, 1, 1)
    assert groups(4, 8, 512, None) == (1, 1, 1)
    # A cached decoding step (one query row) with an unknown batch.
    assert groups(None, 8, 1, 4096) == (1, 1, 1)


def test_unknown_batch_is_estimated_and_never_split():
    # 4,096 tokens assumed: 32 x 128 -> four groups of two heads.
    assert groups(None, 8, 128, 128) == (1, 4, 1)
    nb, nh, nq = groups(None, 8, 2048, 2048)
    assert nb == 1 and nh == 8 and nq == 8


@pytest.mark.parametrize(
    "shape",
    [
        (3, 5, 1500, 1500),
        (1, 8, 8192, 8192),
        (7, 3, 333, 1000),
        (64, 1, 1, 9),
        (6, 8, 256, 342),
        # Batch sizes with no divisor near the wanted count.
        (1000, 8, 64, 64),
        (509, 8, 128, 128),
        (1021, 8, 512, 512),
        (64, 127, 128, 128),
    ],
)
def test_groups_are_valid_and_bounded(shape):
    batch, heads, query_len, _ = shape
    nb, nh, nq = groups(*shape)
    assert 1 <= nb <= batch and 1 <= nh <= heads and 1 <= nq <= query_len
    # Heads are split only within single batch elements (contiguous runs
    # of the flattened (batch, head) pairs).
    assert nh == 1 or nb == batch
    assert nb * nh * nq <= 2 * _kernels._MAX_GROUPS


def test_a_rank_3_mask_is_refused():
    q = tf.zeros((2, 3, 5, 4))
    with pytest.raises(ValueError, match="argument `mask`.*rank-4"):
        _kernels.grouped_dense_attention(q, q, q, tf.ones((2, 5, 5), tf.bool))


# --------------------------------------------------------------------------
# Grouped == ungrouped, on the attention core.


def _core_grads(attend, q, k, v, mask, upstream):
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = attend(q, k, v, mask)
        loss = tf.reduce_sum(out * upstream)
    return [out, *tape.gradient(loss, [q, k, v])]


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 5),
    heads=st.integers(1, 4),
    query_len=st.integers(1, 9),
    key_len=st.integers(1, 9),
    elements=st.sampled_from([1, 5, 17, 60]),
    mask_kind=st.sampled_from(
        ["none", "full", "heads", "batch1", "row1", "key1"]
    ),
    seed=st.integers(0, 2**16),
)
def test_property_grouped_equals_dense(
    batch, heads, query_len, key_len, elements, mask_kind, seed
):
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return tf.constant(rng.normal(size=shape).astype("float32"))

    q = normal(batch, heads, query_len, 4)
    k = normal(batch, heads, key_len, 4)
    v = normal(batch, heads, key_len, 3)
    upstream = normal(batch, heads, query_len, 3)
    mask_shape = {
        "none": None,
        "full": (batch, 1, query_len, key_len),
        "heads": (batch, heads, query_len, key_len),  # a mask per head
        "batch1": (1, 1, query_len, key_len),
        "row1": (batch, 1, 1, key_len),  # padding of the keys only
        "key1": (batch, 1, query_len, 1),  # padding of the queries only
    }[mask_kind]
    mask = None
    if mask_shape is not None:
        mask = tf.constant(rng.random(mask_shape) < 0.7)
    expected = _core_grads(_kernels.dense_attention, q, k, v, mask, upstream)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_kernels, "_GROUP_ELEMENTS", elements)
        actual = _core_grads(
            _kernels.grouped_dense_attention,
            q,
            k,
            v,
            mask,
            upstream,
        )
    for name, a, e in zip(
        ["out", "dq", "dk", "dv"], actual, expected, strict=True
    ):
        harness.assert_close(a, e, 1e-5, name)
        assert np.all(np.isfinite(harness.to_numpy(a))), name
    if mask is not None:
        # A row with no allowed key: exact zeros, as ungrouped.
        empty = ~np.broadcast_to(
            np.any(harness.to_numpy(mask), axis=-1),
            (batch, heads, query_len),
        )
        assert np.all(harness.to_numpy(actual[0])[empty] == 0.0)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    kv_heads=st.integers(1, 3),
    per_kv=st.integers(2, 3),
    query_len=st.integers(1, 7),
    key_len=st.integers(1, 7),
    elements=st.sampled_from([1, 5, 17, 10**6]),
    mask_kind=st.sampled_from(["none", "full", "heads", "row1", "key1"]),
    extra=st.sampled_from(["none", "bias", "learned", "soft_cap"]),
    seed=st.integers(0, 2**16),
)
def test_property_shared_key_value_heads_equal_repeated_ones(
    batch,
    kv_heads,
    per_kv,
    query_len,
    key_len,
    elements,
    mask_kind,
    extra,
    seed,
):
    # Grouped-query heads read their key/value head without a copy (query
    # heads stacked as rows); the result must equal `dense_attention` on
    # keys and values repeated per query head (Keras' way), gradients
    # included (the key/value gradient sums over the group).
    rng = np.random.default_rng(seed)
    heads = kv_heads * per_kv

    def normal(*shape):
        return tf.constant(rng.normal(size=shape).astype("float32"))

    q = normal(batch, heads, query_len, 4)
    k = normal(batch, kv_heads, key_len, 4)
    v = normal(batch, kv_heads, key_len, 3)
    upstream = normal(batch, heads, query_len, 3)
    bias = normal(1, heads, query_len, key_len)
    mask_shape = {
        "none": None,
        "full": (batch, 1, query_len, key_len),
        "heads": (batch, heads, query_len, key_len),
        "row1": (batch, 1, 1, key_len),
        "key1": (batch, 1, query_len, 1),
    }[mask_kind]
    mask = None
    if mask_shape is not None:
        mask = tf.constant(rng.random(mask_shape) < 0.7)
    options = {
        "none": {},
        "bias": {"bias": bias},
        "learned": {"bias": bias, "bias_grad": True},
        "soft_cap": {"bias": bias, "soft_cap": 1.5},
    }[extra]

    def run(attend, repeat):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v, bias])
            keys, values = k, v
            if repeat:
                keys, values = _kernels.repeat_key_value(k, v, heads)
            out = attend(q, keys, values, mask, **options)
            loss = tf.reduce_sum(out * upstream)
        grads = tape.gradient(loss, [q, k, v, bias])
        return [out, *(g for g in grads if g is not None)]

    expected = run(_kernels.dense_attention, repeat=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_kernels, "_GROUP_ELEMENTS", elements)
        for attend in (
            _kernels.dense_attention,
            _kernels.grouped_dense_attention,
        ):
            actual = run(attend, repeat=False)
            assert len(actual) == len(expected)
            for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
                harness.assert_close(a, e, 1e-5, f"{attend.__name__} {i}")


def test_grouped_query_heads_are_split_in_whole_groups(monkeypatch):
    # 2 key/value heads of 3 query heads each: head groups never cut a
    # key/value head's queries apart.
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", 5)
    assert groups(1, 6, 5, 5, kv_heads=2) == (1, 2, 5)
    calls = []
    original = _kernels.dense_attention

    def spy(*args, **kwargs):
        calls.append((args[0].shape, args[1].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(_kernels, "dense_attention", spy)
    q = tf.ones((1, 6, 5, 4))
    k = tf.ones((1, 2, 5, 4))
    _kernels.grouped_dense_attention(q, k, k)
    assert calls and all(
        query[1] == 3 and key[1] == 1 for query, key in calls
    ), calls


def test_grouped_really_splits(monkeypatch):
    # The property test is only worth something if groups are formed.
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", 5)
    calls = []
    original = _kernels.dense_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(_kernels, "dense_attention", spy)
    q = tf.ones((2, 3, 5, 4))
    _kernels.grouped_dense_attention(q, q, q)
    # 150 scores / 5 -> 30 groups: 2 batch x 3 heads x 5 rows.
    assert len(calls) == 30
    assert all(shape == (1, 1, 1, 4) for shape in calls)


def test_mask_of_unknown_size_along_a_split_axis_is_not_split(monkeypatch):
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", 5)
    q = tf.random.normal((2, 3, 5, 4))
    mask = tf.constant(np.random.default_rng(0).random((2, 1, 5, 5)) < 0.7)

    @tf.function(input_signature=[tf.TensorSpec((None, 1, None, 5), tf.bool)])
    def run(mask):
        return _kernels.grouped_dense_attention(q, q, q, mask)

    harness.assert_close(
        run(mask),
        _kernels.dense_attention(q, q, q, mask),
        1e-6,
        "outputs",
    )


# --------------------------------------------------------------------------
# Grouped == reference, through the layers.

BATCH, LENGTH, WIDTH, HEADS = 3, 7, 12, 3


def _layers(**kwargs):
    """The grouped fast path and the autodiff reference, same weights."""
    x = np.random.default_rng(0).normal(size=(BATCH, LENGTH, WIDTH))
    x = x.astype("float32")
    fast = MultiHeadSelfAttention(HEADS, **kwargs)
    fast(x)
    rng = np.random.default_rng(1)
    for w in fast.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)

    def reference(x, **call):
        # Asking for the scores takes the autodiff path.
        return fast(x, return_attention_scores=True, **call)[0]

    reference.trainable_weights = fast.trainable_weights
    return x, fast, reference


def _call_kwargs():
    rng = np.random.default_rng(2)
    mask = rng.random((BATCH, LENGTH)) < 0.7
    mask[1] = False  # a fully padded row
    attention = rng.random((BATCH, LENGTH, LENGTH)) < 0.8
    return {"mask": mask, "attention_mask": attention}


@pytest.mark.parametrize("elements", [1, 7, 40])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"causal": True}, {"window": 2}, {"key_dim": 5, "value_dim": 2}],
)
def test_layer_grouped_matches_autodiff(monkeypatch, elements, kwargs):
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", elements)
    x, fast, reference = _layers(**kwargs)
    call = _call_kwargs()
    actual = _outputs_and_grads(fast, x, **call)
    _assert_same(actual, _outputs_and_grads(reference, x, **call))
    assert np.all(actual["outputs"][~call["mask"]] == 0.0)
    assert np.all(actual["inputs"][1] == 0.0), "gradient into the empty row"


def test_layer_grouped_with_unknown_batch_and_under_xla(monkeypatch):
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", 7)
    x, fast, reference = _layers(causal=True)
    mask = _call_kwargs()["mask"]
    expected = _outputs_and_grads(reference, x, mask=mask)
    names = ["outputs", "inputs"]
    names += [harness.weight_name(w) for w in fast.trainable_weights]

    def step(x, mask):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fast(x, mask=mask)
            loss = tf.reduce_sum(tf.square(y)) + tf.reduce_sum(y)
        return [y, *tape.gradient(loss, [x, *fast.trainable_weights])]

    signature = [
        tf.TensorSpec((None, LENGTH, WIDTH), tf.float32),
        tf.TensorSpec((None, LENGTH), tf.bool),
    ]
    for jit in (False, True):
        run = tf.function(step, input_signature=signature, jit_compile=jit)
        actual = run(tf.constant(x), tf.constant(mask))
        _assert_same(
            {
                n: harness.to_numpy(t)
                for n, t in zip(names, actual, strict=True)
            },
            expected,
            rel=1e-4 if jit else 1e-5,
        )


@pytest.mark.parametrize("elements", [3, 2**20])
def test_decoder_grouped_matches_autodiff(monkeypatch, elements):
    # Self- and cross-attention (T_q != T_k) take the grouped fast path
    # unless the scores are asked for, which takes plain autodiff.
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", elements)
    calls = []
    original = _kernels.grouped_dense_attention

    def spy(query, key, *args, **kwargs):
        calls.append((query.shape[2], key.shape[2]))
        return original(query, key, *args, **kwargs)

    monkeypatch.setattr(_kernels, "grouped_dense_attention", spy)
    rng = np.random.default_rng(3)
    target = tf.constant(rng.normal(size=(3, 5, 8)).astype("float32"))
    source = tf.constant(rng.normal(size=(3, 6, 8)).astype("float32"))
    target_mask = tf.constant(rng.random((3, 5)) < 0.8)
    source_mask = tf.constant(rng.random((3, 6)) < 0.7)
    block = TransformerDecoderBlock(2, 16, dropout=0.0)
    block(target, source)
    for w in block.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)

    def run(scores):
        with tf.GradientTape() as tape:
            tape.watch([target, source])
            y = block(
                target,
                source,
                mask=target_mask,
                encoder_mask=source_mask,
                return_attention_scores=scores,
            )
            y = y[0] if scores else y
            loss = tf.reduce_sum(tf.sin(y))
        variables = [target, source, *block.trainable_weights]
        return [y, *tape.gradient(loss, variables)]

    calls.clear()
    fast = run(False)
    assert sorted(calls) == [(5, 5), (5, 6)], "self- and cross-attention"
    calls.clear()
    reference = run(True)
    assert not calls
    for a, e in zip(fast, reference, strict=True):
        harness.assert_close(a, e, 1e-5, "decoder")


def test_layer_default_groups_with_a_static_batch():
    # No monkeypatch: batch 8 x 4 heads x 256^2 scores -> two batch groups.
    assert groups(8, 4, 256, 256) == (2, 1, 1)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 256, 16)).astype("float32")
    mask = rng.random((8, 256)) < 0.9
    layer = MultiHeadSelfAttention(4, causal=True)
    layer(x)

    def reference(x, **call):
        return layer(x, return_attention_scores=True, **call)[0]

    reference.trainable_weights = layer.trainable_weights
    _assert_same(
        _outputs_and_grads(layer, x, mask=mask),
        _outputs_and_grads(reference, x, mask=mask),
    )


def _chunked_against_dense(
    monkeypatch, kwargs, with_attention_mask, seed, module, name
):
    """Outputs and gradients of the chunked path and of the dense
    reference, and the first argument of every chunked-path call of
    `module.name` (a spy installed after the reference ran)."""
    dense, chunked = _pair(**kwargs)
    x = _inputs(seed=seed)
    call = {"mask": _mask()}
    if with_attention_mask:
        rng = np.random.default_rng(seed + 1)
        call["attention_mask"] = rng.random((2, 7, 7)) < 0.7
    expected = _outputs_and_grads(dense, x, **call)
    calls = []
    original = getattr(module, name)

    def spy(first, *args, **kw):
        calls.append(first)
        return original(first, *args, **kw)

    monkeypatch.setattr(module, name, spy)
    actual = _outputs_and_grads(chunked, x, **call)
    _assert_same(actual, expected)
    assert np.all(actual["outputs"][~_mask()] == 0.0)
    return calls


# 2 x 3 heads x blocks of 3 queries x 9 (padded) keys = 162 scores per
# block: 1 -> one head per group, 100 -> groups of 2 and 1 heads.
@pytest.mark.parametrize("elements", [1, 100])
@pytest.mark.parametrize("kwargs", [{}, {"causal": True}])
@pytest.mark.parametrize("with_attention_mask", [False, True])
def test_chunked_head_groups_match_dense(
    monkeypatch, elements, kwargs, with_attention_mask
):
    # The chunked path also runs each block's heads as independent groups.
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", elements)
    scores = _chunked_against_dense(
        monkeypatch,
        kwargs,
        with_attention_mask,
        8,
        _kernels._masking,
        "fused_masked_softmax",
    )
    heads = {s.shape[1] for s in scores}
    assert heads == ({1} if elements == 1 else {2, 1}), heads


@pytest.mark.parametrize(
    "kwargs", [{"window": 2}, {"window": 1, "causal": True}]
)
@pytest.mark.parametrize("with_attention_mask", [False, True])
def test_banded_groups_match_dense(monkeypatch, kwargs, with_attention_mask):
    # With `window` the folded (batch, heads x blocks) attention is grouped.
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", 7)
    queries = _chunked_against_dense(
        monkeypatch,
        kwargs,
        with_attention_mask,
        10,
        _kernels,
        "dense_attention",
    )
    assert len(queries) > 1, "grouped"


@pytest.mark.parametrize(
    "check", ["train", "mixed_precision", "masking", "export", "xla"]
)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # the dense fast path
        {"attention_impl": "chunked", "chunk_size": 2},  # head groups
        {"attention_impl": "chunked", "chunk_size": 2, "window": 2},
    ],
)
def test_contract_grouped(monkeypatch, check, kwargs):
    monkeypatch.setattr(_kernels, "_GROUP_ELEMENTS", 7)
    rng = np.random.default_rng(4)
    mask = rng.random((BATCH, LENGTH)) < 0.7
    mask[0, 0], mask[0, -1] = True, False
    mask[1] = False  # a fully padded row
    harness.CHECKS[check](
        harness.LayerSpec(
            cls=MultiHeadSelfAttention,
            init_kwargs={"num_heads": HEADS, **kwargs},
            input_data=rng.normal(size=(BATCH, LENGTH, WIDTH)).astype(
                "float32"
            ),
            mask=mask,
            expected_num_trainable_weights=8,
        )
    )
