"""The key/value cache through `call`: step-by-step equals the full call.

`MultiHeadSelfAttention(causal=True)`, `TransformerBlock(causal=True)` and
`TransformerDecoderBlock` take `cache=` and `cache_update_index=` (the
KerasHub convention) and return the new cache with the outputs. Decoding a
sequence step by step, or in chunks after a prefill, must give the outputs
of one full call, padding (left or right) and all, eagerly and traced.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn import TransformerBlock
from keras_selfattn import TransformerDecoderBlock
from tests import harness

BATCH, LENGTH, WIDTH, HEADS, FF = 2, 7, 12, 3, 11
SOURCE, SOURCE_WIDTH = 5, 10


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, LENGTH, WIDTH)).astype("float32")
    source = rng.normal(size=(BATCH, SOURCE, SOURCE_WIDTH)).astype("float32")
    return x, source


# Left padding (a prompt padded in a batch), right padding, none.
MASKS = {
    "left": np.array([[0, 0, 1, 1, 1, 1, 1], [1] * 7], dtype=bool),
    "right": np.array([[1] * 5 + [0] * 2, [1] * 3 + [0] * 4], dtype=bool),
    "none": None,
}
SOURCE_MASK = np.array([[1, 1, 1, 0, 0], [1] * 5], dtype=bool)


def _layer(kind, **options):
    if kind == "attention":
        return MultiHeadSelfAttention(HEADS, causal=True, **options)
    if kind == "block":
        return TransformerBlock(HEADS, FF, causal=True, **options)
    return TransformerDecoderBlock(HEADS, FF, **options)


def _full(layer, kind, x, source, mask):
    if kind == "decoder":
        return layer(x, source, mask=mask, encoder_mask=SOURCE_MASK)
    return layer(x, mask=mask)


def _cache(layer, kind, source, max_length):
    if kind == "decoder":
        return layer.init_cache(source, max_length, encoder_mask=SOURCE_MASK)
    return layer.init_cache(BATCH, max_length)


def _decode(layer, kind, x, source, mask, cuts, max_length=LENGTH + 2):
    """Outputs of the cached calls on `x[:, a:b]` for consecutive (a, b)."""
    cache = _cache(layer, kind, source, max_length)
    outputs = []
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        part_mask = None if mask is None else mask[:, start:stop]
        y, cache = layer(
            x[:, start:stop],
            mask=part_mask,
            cache=cache,
            cache_update_index=start,
        )
        outputs.append(harness.to_numpy(y))
    return np.concatenate(outputs, axis=1), cache


OPTIONS = {
    "attention": [{}, {"window": 2}, {"score": "additive"}, {"key_dim": 5}],
    "block": [{}, {"norm_first": True}, {"window": 3}],
    "decoder": [{}, {"norm_first": True}],
}


@pytest.mark.parametrize(
    "kind, options",
    [(kind, options) for kind in OPTIONS for options in OPTIONS[kind]],
)
@pytest.mark.parametrize("padding", sorted(MASKS))
def test_step_by_step_equals_full_call(kind, options, padding):
    x, source = _inputs()
    mask = MASKS[padding]
    layer = _layer(kind, **options)
    full = harness.to_numpy(_full(layer, kind, x, source, mask))
    steps, _ = _decode(layer, kind, x, source, mask, list(range(LENGTH + 1)))
    harness.assert_close(steps, full, 1e-4, f"{kind} {options} {padding}")


@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(
    kind=st.sampled_from(sorted(OPTIONS)),
    cuts=st.sets(st.integers(1, LENGTH - 1), max_size=4),
    padding=st.sampled_from(sorted(MASKS)),
)
def test_any_prefill_and_chunks_equal_full_call(kind, cuts, padding):
    # A prompt prefilled at once, then chunks of any size: the same outputs.
    x, source = _inputs(1)
    mask = MASKS[padding]
    layer = _layer(kind)
    full = harness.to_numpy(_full(layer, kind, x, source, mask))
    chunks, _ = _decode(
        layer, kind, x, source, mask, [0, *sorted(cuts), LENGTH]
    )
    harness.assert_close(chunks, full, 1e-4, f"{kind} {cuts} {padding}")


@pytest.mark.parametrize("kind", sorted(OPTIONS))
def test_traced_generation_loop_equals_full_call(kind):
    # The way generation runs: a tf.while_loop over the steps, the cache in
    # the loop state, a dynamic batch and index.
    x, source = _inputs(2)
    mask = MASKS["left"]
    layer = _layer(kind)
    full = harness.to_numpy(_full(layer, kind, x, source, mask))

    @tf.function
    def generate(x, mask):
        cache = _cache(layer, kind, source, LENGTH)

        def body(i, cache, outputs):
            step = tf.gather(x, [i], axis=1)
            step_mask = tf.gather(mask, [i], axis=1)
            y, cache = layer(
                step, mask=step_mask, cache=cache, cache_update_index=i
            )
            return i + 1, cache, outputs.write(i, y[:, 0])

        _, _, outputs = tf.while_loop(
            lambda i, *_: i < LENGTH,
            body,
            (0, cache, tf.TensorArray(tf.float32, LENGTH)),
        )
        return tf.transpose(outputs.stack(), (1, 0, 2))

    harness.assert_close(generate(x, mask), full, 1e-4, kind)


def test_cache_holds_what_was_written():
    x, _ = _inputs()
    layer = _layer("attention", key_dim=5, value_dim=4)
    layer(x)
    cache = layer.init_cache(BATCH, 9)
    assert tuple(cache["key"].shape) == (BATCH, HEADS, 9, 5)
    assert tuple(cache["value"].shape) == (BATCH, HEADS, 9, 4)
    assert cache["key_mask"].dtype == "bool"
    assert not np.any(harness.to_numpy(cache["key_mask"]))
    mask = MASKS["left"][:, :3]
    _, cache = layer(x[:, :3], mask=mask, cache=cache, cache_update_index=0)
    key_mask = harness.to_numpy(cache["key_mask"])
    np.testing.assert_array_equal(key_mask[:, :3], mask)
    assert not np.any(key_mask[:, 3:])
    assert np.any(harness.to_numpy(cache["key"])[:, :, :3] != 0)
    assert np.all(harness.to_numpy(cache["key"])[:, :, 3:] == 0)


def test_cached_scores_cover_the_whole_cache():
    x, _ = _inputs()
    layer = _layer("block")
    layer(x)
    cache = layer.init_cache(BATCH, 9)
    y, scores, cache = layer(
        x[:, :4],
        cache=cache,
        cache_update_index=0,
        return_attention_scores=True,
    )
    scores = harness.to_numpy(scores)
    assert scores.shape == (BATCH, HEADS, 4, 9)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    assert np.all(scores[:, :, 1, 2:] == 0)  # position 1 sees 0..1 only


def test_a_padded_step_outputs_zeros_and_stays_masked():
    x, _ = _inputs()
    layer = _layer("block")
    layer(x)
    cache = layer.init_cache(BATCH, LENGTH)
    pad = np.array([[False], [True]])
    y, cache = layer(x[:, :1], mask=pad, cache=cache, cache_update_index=0)
    assert np.all(harness.to_numpy(y)[0] == 0)
    assert y._keras_mask is not None
    np.testing.assert_array_equal(
        harness.to_numpy(cache["key_mask"])[:, 0], [False, True]
    )


def test_cache_errors_name_the_argument():
    x, source = _inputs()
    layer = _layer("attention")
    with pytest.raises(ValueError, match="is not built"):
        layer.init_cache(BATCH, 4)
    layer(x)
    cache = layer.init_cache(BATCH, 4)
    with pytest.raises(ValueError, match="argument `cache_update_index`"):
        layer(x[:, :1], cache=cache)
    with pytest.raises(ValueError, match="argument `cache`"):
        layer(x[:, :1], cache_update_index=0)
    with pytest.raises(ValueError, match="argument `cache_update_index`"):
        layer(x[:, :2], cache=cache, cache_update_index=3)  # past the end
    with pytest.raises(ValueError, match="argument `cache_update_index`"):
        layer(x[:, :1], cache=cache, cache_update_index=-1)
    with pytest.raises(TypeError, match="argument `cache`"):
        layer(x[:, :1], cache={"key": cache["key"]}, cache_update_index=0)
    with pytest.raises(ValueError, match="argument `max_length`"):
        layer.init_cache(BATCH, 0)
    with pytest.raises(ValueError, match="argument `batch_size`"):
        layer.init_cache(0, 4)
    other = MultiHeadSelfAttention(2, causal=True)
    other(x)
    with pytest.raises(ValueError, match="argument `cache`"):
        other(x[:, :1], cache=cache, cache_update_index=0)  # 3 heads, not 2
    bidirectional = MultiHeadSelfAttention(HEADS)
    bidirectional(x)
    with pytest.raises(ValueError, match="argument `causal`"):
        bidirectional.init_cache(BATCH, 4)
    with pytest.raises(ValueError, match="argument `cache`"):
        bidirectional(x[:, :1], cache=cache, cache_update_index=0)
    block = TransformerBlock(HEADS, FF)
    block(x)
    with pytest.raises(ValueError, match="argument `causal`"):
        block.init_cache(BATCH, 4)
    decoder = _layer("decoder")
    with pytest.raises(ValueError, match="argument `encoder_outputs`"):
        decoder(x)
    decoder(x, source)
    with pytest.raises(TypeError, match="argument `cache`"):
        decoder(x[:, :1], cache=cache, cache_update_index=0)


def test_symbolic_call_with_a_cache():
    layer = _layer("block")
    layer.build((None, None, WIDTH))
    cache = layer.init_cache(BATCH, 6)
    spec = {
        k: keras.KerasTensor(v.shape, dtype=v.dtype) for k, v in cache.items()
    }
    out, scores, new = layer.compute_output_spec(
        keras.KerasTensor((BATCH, 1, WIDTH)),
        cache=spec,
        cache_update_index=0,
        return_attention_scores=True,
    )
    assert out.shape == (BATCH, 1, WIDTH)
    assert scores.shape == (BATCH, HEADS, 1, 6)
    assert {k: v.shape for k, v in new.items()} == {
        k: v.shape for k, v in spec.items()
    }
