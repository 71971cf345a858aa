"""Grouped-query attention (`num_key_value_heads`): equal to Keras'
`GroupQueryAttention` with copied weights, plain attention when the head
counts agree, a cache of the key/value heads only, on every layer."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn import TransformerBlock
from keras_selfattn import TransformerDecoderBlock
from tests import harness

BATCH, LENGTH, WIDTH, HEADS, HEAD_DIM = 2, 5, 12, 6, 3


def _inputs(seed=0, length=LENGTH):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(BATCH, length, WIDTH)).astype("float32")


# Row 0 padded at the end, row 1 complete.
MASK = np.array([[1, 1, 1, 0, 0], [1] * 5], dtype=bool)


def _keras_gqa(kv_heads, x):
    layer = keras.layers.GroupQueryAttention(
        head_dim=HEAD_DIM, num_query_heads=HEADS, num_key_value_heads=kv_heads
    )
    layer(x, x)
    return layer


def _copy_from_keras(ours, theirs):
    for name, dense in [
        ("query", theirs._query_dense),
        ("key", theirs._key_dense),
        ("value", theirs._value_dense),
        ("output", theirs._output_dense),
    ]:
        getattr(ours, f"{name}_kernel").assign(dense.kernel)
        getattr(ours, f"{name}_bias").assign(dense.bias)


@pytest.mark.parametrize("kv_heads", [1, 2, 3, 6])
@pytest.mark.parametrize("impl", ["dense", "chunked", "auto"])
@pytest.mark.parametrize("causal", [False, True])
def test_equals_keras_group_query_attention(kv_heads, impl, causal):
    x = _inputs()
    ours = MultiHeadSelfAttention(
        HEADS,
        key_dim=HEAD_DIM,
        num_key_value_heads=kv_heads,
        causal=causal,
        attention_impl=impl,
        chunk_size=2,
    )
    ours(x)
    theirs = _keras_gqa(kv_heads, x)
    _copy_from_keras(ours, theirs)
    expected = theirs(
        x, x, query_mask=MASK, value_mask=MASK, use_causal_mask=causal
    )
    actual = ours(x, mask=MASK)
    # Rows with a valid key (Keras averages padding on the others).
    harness.assert_close(
        harness.to_numpy(actual)[MASK],
        harness.to_numpy(expected)[MASK],
        1e-5,
        f"kv={kv_heads} {impl} causal={causal}",
    )


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(
    causal=st.booleans(),
    score=st.sampled_from(["dot_product", "additive"]),
    window=st.sampled_from([None, 1, 3]),
)
def test_as_many_key_value_heads_as_heads_is_plain_attention(
    causal, score, window
):
    x = _inputs(1)
    options = {"causal": causal, "score": score, "window": window}
    plain = MultiHeadSelfAttention(HEADS, **options)
    grouped = MultiHeadSelfAttention(
        HEADS, num_key_value_heads=HEADS, **options
    )
    plain(x)
    grouped(x)
    grouped.set_weights(plain.get_weights())
    harness.assert_close(
        grouped(x, mask=MASK), plain(x, mask=MASK), 1e-6, str(options)
    )


def test_key_value_heads_shrink_the_weights_and_the_cache():
    x = _inputs()
    layer = MultiHeadSelfAttention(HEADS, num_key_value_heads=2, causal=True)
    layer(x)
    assert tuple(layer.key_kernel.shape) == (WIDTH, 2, WIDTH // HEADS)
    assert tuple(layer.value_bias.shape) == (2, WIDTH // HEADS)
    assert tuple(layer.query_kernel.shape) == (WIDTH, HEADS, WIDTH // HEADS)
    cache = layer.init_cache(BATCH, 8)
    assert tuple(cache["key"].shape) == (BATCH, 2, 8, WIDTH // HEADS)
    assert tuple(cache["value"].shape) == (BATCH, 2, 8, WIDTH // HEADS)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MultiHeadSelfAttention(
            HEADS, num_key_value_heads=2, causal=True
        ),
        lambda: TransformerBlock(HEADS, 11, num_key_value_heads=3, causal=True),
        lambda: TransformerDecoderBlock(HEADS, 11, num_key_value_heads=1),
    ],
    ids=["attention", "block", "decoder"],
)
def test_cached_decoding_with_grouped_heads_equals_full_call(make):
    x = _inputs(2)
    source = np.random.default_rng(3).normal(size=(BATCH, 4, 10))
    source = source.astype("float32")
    layer = make()
    decoder = isinstance(layer, TransformerDecoderBlock)
    full = layer(x, source, mask=MASK) if decoder else layer(x, mask=MASK)
    cache = (
        layer.init_cache(source, LENGTH)
        if decoder
        else layer.init_cache(BATCH, LENGTH)
    )
    steps = []
    for i in range(LENGTH):
        y, cache = layer(
            x[:, i : i + 1],
            mask=MASK[:, i : i + 1],
            cache=cache,
            cache_update_index=i,
        )
        steps.append(harness.to_numpy(y))
    harness.assert_close(
        np.concatenate(steps, axis=1), harness.to_numpy(full), 1e-4
    )


@pytest.mark.parametrize("cls", [TransformerBlock, TransformerDecoderBlock])
def test_blocks_pass_key_value_heads_to_every_attention(cls):
    x = _inputs()
    block = cls(HEADS, 11, num_key_value_heads=2)
    if cls is TransformerDecoderBlock:
        block(x, x)
        layers = [block._self_attention, block._cross_attention]
    else:
        block(x)
        layers = [block._self_attention]
    for layer in layers:
        assert layer.num_key_value_heads == 2
        assert layer.key_kernel.shape[1] == 2
    config = block.get_config()
    assert config["num_key_value_heads"] == 2
    again = cls.from_config(config)
    assert again.num_key_value_heads == 2


@pytest.mark.parametrize("check", ["config", "train", "masking", "saving"])
def test_contract_multi_query(check):
    spec = harness.LayerSpec(
        cls=MultiHeadSelfAttention,
        init_kwargs={"num_heads": HEADS, "num_key_value_heads": 1},
        input_data=_inputs(),
        mask=np.array([[1, 1, 1, 0, 0], [0] * 5], dtype=bool),
        expected_num_trainable_weights=8,
    )
    harness.CHECKS[check](spec)


@pytest.mark.parametrize("cls", [MultiHeadSelfAttention, TransformerBlock])
def test_key_value_heads_must_divide_heads(cls):
    args = (HEADS,) if cls is MultiHeadSelfAttention else (HEADS, 11)
    with pytest.raises(
        ValueError, match="argument `num_key_value_heads`.*num_heads=6"
    ):
        cls(*args, num_key_value_heads=4)
    with pytest.raises(ValueError, match="argument `num_key_value_heads`"):
        cls(*args, num_key_value_heads=0)
