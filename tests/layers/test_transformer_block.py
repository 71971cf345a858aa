"""Tests for `TransformerBlock`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_selfattn.layers.transformer_block import TransformerBlock
from tests import harness

# Every axis a different size: batch 2, length 5, width 12, 3 heads, ff 11.
BATCH, LENGTH, WIDTH, HEADS, FF = 2, 5, 12, 3, 11
# Attention 8 (+1 additive), two layer norms 2 x 2, two dense layers 2 x 2.
NUM_WEIGHTS = 16


def _inputs(seed=0, shape=(BATCH, LENGTH, WIDTH)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _mask():
    # Row 0 partly padded, row 1 fully padded (an empty string).
    return np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)


def _spec(**kwargs):
    init = {"num_heads": HEADS, "ff_dim": FF, "dropout": 0.1, "seed": 3}
    init.update(kwargs)
    return harness.LayerSpec(
        cls=TransformerBlock,
        init_kwargs=init,
        input_data=_inputs(),
        mask=_mask(),
        expected_num_trainable_weights=NUM_WEIGHTS
        + (1 if init.get("score") == "additive" else 0),
    )


@pytest.mark.parametrize("check", harness.check_params())
def test_contract_post_norm(check):
    harness.CHECKS[check](_spec())


@pytest.mark.parametrize(
    "check",
    harness.check_params(
        ["config", "weights", "train", "mixed_precision", "masking", "xla"],
        variant=True,
    ),
)
def test_contract_pre_norm_causal(check):
    harness.CHECKS[check](_spec(norm_first=True, causal=True))


@pytest.mark.parametrize(
    "check", harness.check_params(["weights", "train", "masking"], variant=True)
)
def test_contract_additive_window_gelu(check):
    harness.CHECKS[check](
        _spec(score="additive", window=1, activation="gelu", dropout=0.0)
    )


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)


def _copied_dense(source):
    dense = keras.layers.Dense(
        source.units, activation=source.activation, dtype="float32"
    )
    dense.build((None, source.kernel.shape[0]))
    dense.set_weights(source.get_weights())
    return dense


def _copied_norm(source):
    norm = keras.layers.LayerNormalization(epsilon=source.epsilon)
    norm.build((None, WIDTH))
    norm.set_weights(source.get_weights())
    return norm


def _hand_written(block, x, mask, norm_first, causal):
    """The block composed from Keras' own layers, given copied weights."""
    attention = block._self_attention
    mha = keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)
    mha(x, x)
    for name in ("query", "key", "value", "output"):
        dense = getattr(mha, f"_{name}_dense")
        dense.kernel.assign(getattr(attention, f"{name}_kernel"))
        dense.bias.assign(getattr(attention, f"{name}_bias"))
    norm1 = _copied_norm(block._self_attention_norm)
    norm2 = _copied_norm(block._feedforward_norm)
    dense1 = _copied_dense(block._feedforward_intermediate)
    dense2 = _copied_dense(block._feedforward_output)

    def attend(h):
        return mha(
            h, h, query_mask=mask, value_mask=mask, use_causal_mask=causal
        )

    def feedforward(h):
        return dense2(dense1(h))

    x = tf.convert_to_tensor(x)
    if norm_first:
        x = x + attend(norm1(x))
        return x + feedforward(norm2(x))
    x = norm1(x + attend(x))
    return norm2(x + feedforward(x))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"norm_first": True},
        {"causal": True, "activation": "gelu"},
        {"norm_first": True, "causal": True},
    ],
)
def test_matches_hand_written_composition(kwargs):
    block = TransformerBlock(HEADS, FF, dropout=0.0, **kwargs)
    x = _inputs(shape=(BATCH, 7, WIDTH))
    block(x)
    _randomize(block)
    # Every row keeps a valid key, where Keras' MHA paths agree with ours.
    mask = np.array([[1] * 5 + [0, 0], [1] * 7], dtype=bool)
    expected = _hand_written(
        block,
        x,
        mask,
        kwargs.get("norm_first", False),
        kwargs.get("causal", False),
    )
    actual = harness.to_numpy(block(x, mask=mask, training=True))
    harness.assert_close(
        actual[mask], harness.to_numpy(expected)[mask], 1e-4, "composition"
    )
    assert np.all(actual[~mask] == 0.0)


def test_padding_invariance_and_keras_mask():
    block = TransformerBlock(HEADS, FF, norm_first=True)
    x = _inputs()
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=bool)
    out = block(x, mask=mask)
    np.testing.assert_array_equal(harness.to_numpy(out._keras_mask), mask)
    noisy = x.copy()
    noisy[~mask] = 100.0
    out2 = harness.to_numpy(block(noisy, mask=mask))
    np.testing.assert_allclose(out2, harness.to_numpy(out), atol=1e-5)


def test_causal_future_does_not_change_past():
    block = TransformerBlock(HEADS, FF, causal=True, dropout=0.0)
    x = _inputs()
    changed = x.copy()
    changed[:, 3:] += 5.0
    a, b = harness.to_numpy(block(x)), harness.to_numpy(block(changed))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)
    assert not np.allclose(a[:, 3:], b[:, 3:])


def test_attention_mask_and_scores():
    block = TransformerBlock(HEADS, FF)
    x = _inputs()
    attention = np.ones((1, LENGTH, LENGTH), dtype=bool)
    attention[:, :, 2] = False  # nobody may look at token 2
    padding = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=bool)
    masked = tf.convert_to_tensor(x)
    masked._keras_mask = tf.constant(padding)
    # Two tensor arguments: Keras leaves `mask=None`, the block must still
    # use the mask carried by `inputs`.
    _, scores = block(
        masked, attention_mask=attention, return_attention_scores=True
    )
    scores = harness.to_numpy(scores)
    assert scores.shape == (BATCH, HEADS, LENGTH, LENGTH)
    assert np.all(scores[:, :, :, 2] == 0.0)
    assert np.all(scores[0, :, :, 4] == 0.0)
    np.testing.assert_allclose(scores[1].sum(-1), 1.0, rtol=1e-5)


def test_symbolic_attention_scores_shape():
    inputs = keras.Input((None, WIDTH))
    outputs, scores = TransformerBlock(HEADS, FF)(
        inputs, return_attention_scores=True
    )
    assert tuple(outputs.shape) == (None, None, WIDTH)
    assert tuple(scores.shape) == (None, HEADS, None, None)
    model = keras.Model(inputs, [outputs, scores])
    eager = model(_inputs())
    assert tuple(eager[1].shape) == (BATCH, HEADS, LENGTH, LENGTH)


def test_dropout_rates():
    x = _inputs()
    block = TransformerBlock(HEADS, FF, dropout=0.2)
    block(x)
    assert block.attention_dropout == 0.2
    assert block._self_attention.dropout == 0.2
    block = TransformerBlock(
        HEADS, FF, dropout=0.0, attention_dropout=0.5, seed=1
    )
    block(x)
    assert block._self_attention.dropout == 0.5
    assert block._self_attention_dropout.rate == 0.0
    assert block._feedforward_dropout.rate == 0.0
    # Attention dropout alone still changes the training output.
    trained = harness.to_numpy(block(x, training=True))
    assert not np.allclose(trained, harness.to_numpy(block(x)))


def test_pre_norm_has_no_final_norm():
    # Pre-norm output is a residual sum, not unit-variance per position.
    block = TransformerBlock(HEADS, FF, norm_first=True, dropout=0.0)
    x = _inputs() * 10.0
    out = harness.to_numpy(block(x))
    assert np.all(out.std(-1) > 2.0)
    post = harness.to_numpy(TransformerBlock(HEADS, FF, dropout=0.0)(x))
    np.testing.assert_allclose(post.std(-1), 1.0, atol=1e-2)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"num_heads": 1.5}, "num_heads"),
        ({"ff_dim": 0}, "ff_dim"),
        ({"ff_dim": None}, "ff_dim"),
        ({"key_dim": -2}, "key_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"attention_dropout": -0.1}, "attention_dropout"),
        ({"activation": "no_such_activation"}, "activation"),
        ({"layer_norm_epsilon": 0.0}, "layer_norm_epsilon"),
        ({"layer_norm_epsilon": -1e-6}, "layer_norm_epsilon"),
        ({"window": 0}, "window"),
        ({"score": "cosine"}, "score"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    init = {"num_heads": HEADS, "ff_dim": FF, **kwargs}
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        TransformerBlock(**init)


@pytest.mark.parametrize("argument", ["norm_first", "causal"])
def test_invalid_types(argument):
    with pytest.raises(TypeError, match=f"argument `{argument}`"):
        TransformerBlock(HEADS, FF, **{argument: "yes"})


@pytest.mark.parametrize(
    "shape", [(BATCH, WIDTH), (BATCH, LENGTH, 2, WIDTH)], ids=["rank2", "rank4"]
)
def test_wrong_rank_raises(shape):
    with pytest.raises(ValueError, match="argument `inputs`.*rank-3"):
        TransformerBlock(HEADS, FF)(np.zeros(shape, "float32"))


def test_indivisible_width_raises():
    with pytest.raises(ValueError, match="argument `num_heads`.*divisor"):
        TransformerBlock(5, FF)(_inputs())
    assert TransformerBlock(5, FF, key_dim=4)(_inputs()).shape[-1] == WIDTH


def test_bad_mask_shapes_raise():
    block = TransformerBlock(HEADS, FF)
    x = _inputs()
    with pytest.raises(ValueError, match="argument `mask`"):
        block(x, mask=np.ones((BATCH, LENGTH + 1), bool))
    with pytest.raises(ValueError, match="argument `attention_mask`"):
        block(x, attention_mask=np.ones((BATCH, LENGTH, LENGTH + 2), bool))


def test_seeded_dropouts_draw_different_masks():
    # One `seed` for the block, but no two dropout layers share a mask.
    block = TransformerBlock(HEADS, FF, dropout=0.5, seed=4)
    block(_inputs())
    ones = np.ones((BATCH, LENGTH, WIDTH), "float32")
    first = block._self_attention_dropout(ones, training=True)
    second = block._feedforward_dropout(ones, training=True)
    assert not np.array_equal(harness.to_numpy(first), harness.to_numpy(second))


def test_kernels_matches_dense():
    x = np.random.default_rng(4).normal(size=(2, 9, 12)).astype("float32")
    mask = np.array([[1] * 6 + [0] * 3, [1] * 9], dtype=bool)
    dense = TransformerBlock(3, 11, dropout=0.0, attention_impl="dense")
    chunked = TransformerBlock(3, 11, dropout=0.0, attention_impl="chunked")
    a = harness.to_numpy(dense(x, mask=mask))
    chunked(x, mask=mask)
    chunked.set_weights(dense.get_weights())
    harness.assert_close(chunked(x, mask=mask), a, 1e-5, "chunked vs dense")
    with pytest.raises(ValueError, match="argument `attention_impl`"):
        TransformerBlock(3, 11, attention_impl="flash")
