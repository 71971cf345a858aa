"""Tests for `TransformerDecoderBlock` (and its private `CrossAttention`)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_selfattn.layers._cross_attention import CrossAttention
from keras_selfattn.layers.transformer_decoder_block import (
    TransformerDecoderBlock,
)
from tests import harness
from tests import reference

# Every axis a different size: batch 2, target length 5, source length 7,
# decoder width 12, encoder width 10, 3 heads, feed-forward 11.
BATCH, TARGET, SOURCE, WIDTH, ENC_WIDTH, HEADS, FF = 2, 5, 7, 12, 10, 3, 11
# Two attentions 2 x 8, three layer norms 3 x 2, two dense layers 2 x 2.
NUM_WEIGHTS = 26


def _normal(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _target(seed=0):
    return _normal((BATCH, TARGET, WIDTH), seed)


def _source(seed=1):
    return _normal((BATCH, SOURCE, ENC_WIDTH), seed)


def _target_mask():
    # Row 0 partly padded, row 1 fully padded.
    return np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)


def _source_mask():
    # Row 0 partly padded, row 1 an empty source.
    return np.array([[1] * 4 + [0] * 3, [0] * SOURCE], dtype=bool)


def _spec(**kwargs):
    init = {"num_heads": HEADS, "ff_dim": FF, "dropout": 0.1, "seed": 3}
    init.update(kwargs)
    return harness.LayerSpec(
        cls=TransformerDecoderBlock,
        init_kwargs=init,
        input_data=_target(),
        extra_inputs={"encoder_outputs": _source()},
        mask=_target_mask(),
        expected_num_trainable_weights=NUM_WEIGHTS,
    )


@pytest.mark.parametrize("check", harness.check_params())
def test_contract_post_norm(check):
    harness.CHECKS[check](_spec())


@pytest.mark.parametrize(
    "check",
    harness.check_params(
        ["weights", "train", "mixed_precision", "masking", "saving"],
        variant=True,
    ),
)
def test_contract_pre_norm(check):
    harness.CHECKS[check](_spec(norm_first=True, activation="gelu"))


def _built(seed=1, **kwargs):
    """A built block with random weights (dropout off)."""
    block = TransformerDecoderBlock(HEADS, FF, dropout=0.0, **kwargs)
    block(_target(), _source())
    rng = np.random.default_rng(seed)
    for w in block.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)
    return block


def _weights(layer):
    return {harness.weight_name(w): harness.to_numpy(w) for w in layer.weights}


def _layer_norm(x, norm):
    gamma, beta = norm.get_weights()
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.epsilon) * gamma + beta


def _numpy_decoder(block, x, enc, mask, enc_mask, norm_first):
    """The decoder from the NumPy attention oracle and NumPy algebra."""

    def self_attention(h):
        return reference.attention(
            h,
            h,
            _weights(block._self_attention),
            HEADS,
            query_mask=mask,
            key_mask=mask,
            causal=True,
        )[0]

    def cross_attention(h):
        return reference.attention(
            h,
            enc,
            _weights(block._cross_attention),
            HEADS,
            query_mask=mask,
            key_mask=enc_mask,
        )[0]

    def feedforward(h):
        w1, b1 = block._feedforward_intermediate.get_weights()
        w2, b2 = block._feedforward_output.get_weights()
        return np.maximum(h @ w1 + b1, 0.0) @ w2 + b2

    x = np.asarray(x, np.float64)
    sublayers = [
        (self_attention, block._self_attention_norm),
        (cross_attention, block._cross_attention_norm),
        (feedforward, block._feedforward_norm),
    ]
    for fn, norm in sublayers:
        if norm_first:
            x = x + fn(_layer_norm(x, norm))
        else:
            x = _layer_norm(x + fn(x), norm)
    return x


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_numpy_composition(norm_first):
    block = _built(norm_first=norm_first)
    x, enc = _target(), _source()
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=bool)
    # Row 1 has an empty source: its cross-attention contributes zeros.
    enc_mask = _source_mask()
    expected = _numpy_decoder(block, x, enc, mask, enc_mask, norm_first)
    actual = harness.to_numpy(
        block(x, enc, mask=mask, encoder_mask=enc_mask, training=True)
    )
    harness.assert_close(actual[mask], expected[mask], 1e-4, "composition")
    assert np.all(actual[~mask] == 0.0)


def test_encoder_padding_values_never_matter():
    block = _built()
    x, enc = _target(), _source()
    enc_mask = np.array([[1] * 4 + [0] * 3, [1, 0, 1, 0, 1, 1, 0]], bool)
    out = harness.to_numpy(block(x, enc, encoder_mask=enc_mask))
    noisy = enc.copy()
    noisy[~enc_mask] = _normal(noisy.shape, 9)[~enc_mask] * 100
    out2 = harness.to_numpy(block(x, noisy, encoder_mask=enc_mask))
    np.testing.assert_allclose(out2, out, atol=1e-5)
    # ... while a valid encoder position does.
    noisy[0, 0] += 1.0
    out3 = harness.to_numpy(block(x, noisy, encoder_mask=enc_mask))
    assert not np.allclose(out3[0], out[0])


def test_future_target_never_changes_the_past():
    block = _built()
    x, enc = _target(), _source()
    for t in range(1, TARGET):
        later = x.copy()
        later[:, t:] += 3.0
        a = harness.to_numpy(block(x, enc))
        b = harness.to_numpy(block(later, enc))
        np.testing.assert_allclose(b[:, :t], a[:, :t], atol=1e-5)
        assert not np.allclose(b[:, t:], a[:, t:])


def test_empty_source_is_finite_and_ignores_the_encoder():
    block = _built()
    x = tf.convert_to_tensor(_target())
    enc = tf.convert_to_tensor(_source())
    enc_mask = _source_mask()  # row 1: empty source
    with tf.GradientTape() as tape:
        tape.watch([x, enc])
        out = block(x, enc, encoder_mask=enc_mask)
        loss = tf.reduce_sum(tf.square(out))
    grad_x, grad_enc = tape.gradient(loss, [x, enc])
    for value in (out, grad_x, grad_enc):
        assert np.all(np.isfinite(harness.to_numpy(value)))
    assert np.all(harness.to_numpy(grad_enc)[~enc_mask] == 0.0)
    other = block(x, enc * 0.0 + 5.0, encoder_mask=enc_mask)
    np.testing.assert_allclose(
        harness.to_numpy(other)[1], harness.to_numpy(out)[1], atol=1e-5
    )


def test_masks_from_keras_masks():
    block = _built()
    x, enc = _target(), _source()
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=bool)
    enc_mask = _source_mask()
    expected = block(x, enc, mask=mask, encoder_mask=enc_mask)
    masked_x = tf.convert_to_tensor(x)
    masked_x._keras_mask = tf.constant(mask)
    masked_enc = tf.convert_to_tensor(enc)
    masked_enc._keras_mask = tf.constant(enc_mask)
    actual = block(masked_x, masked_enc)
    harness.assert_close(actual, expected, 1e-6, "masks from _keras_mask")
    np.testing.assert_array_equal(harness.to_numpy(actual._keras_mask), mask)


def test_functional_seq2seq_with_embedding_masks():
    source_ids = keras.Input((None,), dtype="int32", name="source")
    target_ids = keras.Input((None,), dtype="int32", name="target")
    source_embedding = keras.layers.Embedding(20, ENC_WIDTH, mask_zero=True)
    target_embedding = keras.layers.Embedding(20, WIDTH, mask_zero=True)
    block = TransformerDecoderBlock(HEADS, FF, dropout=0.0)
    outputs = block(target_embedding(target_ids), source_embedding(source_ids))
    model = keras.Model([source_ids, target_ids], outputs)
    source = np.array([[3, 4, 5, 0, 0, 0, 0], [0] * SOURCE], "int32")
    target = np.array([[1, 2, 3, 4, 0], [1, 6, 0, 0, 0]], "int32")
    actual = harness.to_numpy(model([source, target]))
    expected = block(
        target_embedding(target),
        source_embedding(source),
        mask=target != 0,
        encoder_mask=source != 0,
    )
    harness.assert_close(actual, expected, 1e-6, "functional vs eager")
    assert np.all(actual[target == 0] == 0.0)


def test_builds_from_call_shapes_without_shapes_in_config():
    block = _built()
    config = block.get_config()
    assert not any("shape" in key for key in config)
    build_config = block.get_build_config()
    assert build_config["shapes_dict"] == {
        "inputs_shape": (BATCH, TARGET, WIDTH),
        "encoder_outputs_shape": (BATCH, SOURCE, ENC_WIDTH),
    }
    rebuilt = TransformerDecoderBlock.from_config(config)
    rebuilt.build_from_config(json.loads(json.dumps(build_config)))
    rebuilt.set_weights(block.get_weights())
    harness.assert_close(
        rebuilt(_target(), _source()),
        block(_target(), _source()),
        1e-6,
        "rebuilt",
    )


def test_explicit_attention_mask_and_scores():
    block = _built()
    x, enc = _target(), _source()
    attention = np.ones((1, TARGET, TARGET), dtype=bool)
    attention[:, :, 0] = False  # nobody may look at token 0 ...
    attention[:, 0, 0] = True  # ... except token 0 itself
    enc_mask = _source_mask()
    _, self_scores, cross_scores = block(
        x,
        enc,
        encoder_mask=enc_mask,
        attention_mask=attention,
        return_attention_scores=True,
    )
    self_scores = harness.to_numpy(self_scores)
    cross_scores = harness.to_numpy(cross_scores)
    assert self_scores.shape == (BATCH, HEADS, TARGET, TARGET)
    assert cross_scores.shape == (BATCH, HEADS, TARGET, SOURCE)
    assert np.all(self_scores[:, :, 1:, 0] == 0.0)
    assert np.all(np.triu(self_scores, k=1) == 0.0)  # causal
    np.testing.assert_allclose(self_scores.sum(-1), 1.0, rtol=1e-5)
    assert np.all(cross_scores[0, :, :, 4:] == 0.0)
    assert np.all(cross_scores[1] == 0.0)  # empty source
    np.testing.assert_allclose(cross_scores[0].sum(-1), 1.0, rtol=1e-5)


def test_symbolic_attention_scores_shapes():
    x = keras.Input((None, WIDTH))
    enc = keras.Input((None, ENC_WIDTH))
    outputs, self_scores, cross_scores = TransformerDecoderBlock(HEADS, FF)(
        x, enc, return_attention_scores=True
    )
    assert tuple(outputs.shape) == (None, None, WIDTH)
    assert tuple(self_scores.shape) == (None, HEADS, None, None)
    assert tuple(cross_scores.shape) == (None, HEADS, None, None)
    model = keras.Model([x, enc], [outputs, self_scores, cross_scores])
    eager = model([_target(), _source()])
    assert tuple(eager[2].shape) == (BATCH, HEADS, TARGET, SOURCE)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"ff_dim": -1}, "ff_dim"),
        ({"key_dim": 0}, "key_dim"),
        ({"dropout": 1.5}, "dropout"),
        ({"attention_dropout": 1.0}, "attention_dropout"),
        ({"activation": 3}, "activation"),
        ({"layer_norm_epsilon": 0}, "layer_norm_epsilon"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    init = {"num_heads": HEADS, "ff_dim": FF, **kwargs}
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        TransformerDecoderBlock(**init)


def test_invalid_types():
    with pytest.raises(TypeError, match="argument `norm_first`"):
        TransformerDecoderBlock(HEADS, FF, norm_first=1)


@pytest.mark.parametrize(
    "target_shape, source_shape, argument",
    [
        ((BATCH, WIDTH), (BATCH, SOURCE, ENC_WIDTH), "inputs"),
        ((BATCH, TARGET, WIDTH), (BATCH, ENC_WIDTH), "encoder_outputs"),
        ((BATCH, TARGET, WIDTH), (BATCH, 1, SOURCE, 3), "encoder_outputs"),
    ],
)
def test_wrong_rank_raises(target_shape, source_shape, argument):
    block = TransformerDecoderBlock(HEADS, FF)
    with pytest.raises(ValueError, match=f"argument `{argument}`.*rank-3"):
        block(np.zeros(target_shape, "float32"), np.zeros(source_shape))
    # Also once built: the encoder outputs are checked on every call.
    block = _built()
    with pytest.raises(ValueError, match=f"argument `{argument}`.*rank-3"):
        block(np.zeros(target_shape, "float32"), np.zeros(source_shape))


def test_build_needs_the_encoder_shape():
    with pytest.raises(ValueError, match="argument `encoder_outputs`"):
        TransformerDecoderBlock(HEADS, FF).build((None, None, WIDTH))


def test_indivisible_width_raises():
    with pytest.raises(ValueError, match="argument `num_heads`.*divisor"):
        TransformerDecoderBlock(5, FF)(_target(), _source())
    out = TransformerDecoderBlock(5, FF, key_dim=2)(_target(), _source())
    assert tuple(out.shape) == (BATCH, TARGET, WIDTH)


def test_bad_mask_shapes_raise():
    block = TransformerDecoderBlock(HEADS, FF)
    x, enc = _target(), _source()
    with pytest.raises(ValueError, match="argument `mask`"):
        block(x, enc, mask=np.ones((BATCH, SOURCE), bool))
    with pytest.raises(ValueError, match="argument `encoder_mask`"):
        block(x, enc, encoder_mask=np.ones((BATCH, TARGET), bool))
    with pytest.raises(ValueError, match="argument `attention_mask`"):
        block(x, enc, attention_mask=np.ones((BATCH, TARGET, SOURCE), bool))


# CrossAttention: private, but saved inside every decoder block.


def test_cross_attention_matches_numpy_reference():
    layer = CrossAttention(HEADS, key_dim=5, value_dim=4)
    query, context = _target(), _source()
    layer(query, context)
    rng = np.random.default_rng(2)
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)
    query_mask = np.array([[1, 1, 1, 1, 0], [1] * TARGET], dtype=bool)
    context_mask = _source_mask()
    out, probs = layer(
        query,
        context,
        context_mask=context_mask,
        query_mask=query_mask,
        return_attention_scores=True,
    )
    expected, expected_probs = reference.attention(
        query,
        context,
        _weights(layer),
        HEADS,
        query_mask=query_mask,
        key_mask=context_mask,
    )
    harness.assert_close(out, expected, 1e-4, "outputs")
    harness.assert_close(probs, expected_probs, 1e-5, "probs")
    np.testing.assert_array_equal(harness.to_numpy(out._keras_mask), query_mask)


def test_cross_attention_config_round_trip():
    layer = CrossAttention(HEADS, dropout=0.2, seed=5, name="cross")
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    rebuilt = keras.saving.deserialize_keras_object(config)
    assert isinstance(rebuilt, CrossAttention)
    assert rebuilt.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"causal": True}, "causal"), ({"window": 2}, "window")],
)
def test_cross_attention_rejects_ordering(kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        CrossAttention(HEADS, **kwargs)


def test_cross_attention_wrong_rank_raises():
    with pytest.raises(ValueError, match="argument `context`.*rank-3"):
        CrossAttention(HEADS)(_target(), np.zeros((BATCH, ENC_WIDTH)))


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decoding_equals_full_call(norm_first):
    rng = np.random.default_rng(5)
    block = TransformerDecoderBlock(3, 11, norm_first=norm_first, dropout=0.2)
    target = rng.normal(size=(2, 6, 12)).astype("float32")
    source = rng.normal(size=(2, 7, 10)).astype("float32")
    source_mask = np.array([[1] * 4 + [0] * 3, [0] * 7], dtype=bool)
    full = harness.to_numpy(
        block(target, source, encoder_mask=source_mask, training=False)
    )
    # The encoder mask rides on the encoder outputs, as in a model.
    encoded = tf.convert_to_tensor(source)
    encoded._keras_mask = tf.constant(source_mask)
    cache = block.init_cache(encoded, max_length=8)
    for t in range(6):
        out, cache = block.decode_step(target[:, t : t + 1], t, cache)
        harness.assert_close(out[:, 0], full[:, t], 1e-5, f"step {t}")
    with pytest.raises(ValueError, match="argument `cache_update_index`"):
        block.decode_step(target[:, :1], 8, cache)
    with pytest.raises(ValueError, match="argument `max_length`"):
        block.init_cache(source, max_length=0)
