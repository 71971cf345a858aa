"""Tests for `PositionalEncoding`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_selfattn.layers import _masking
from keras_selfattn.layers.positional_encoding import PositionalEncoding
from keras_selfattn.layers.sequence_pooling import SequencePooling
from tests import harness
from tests import reference

# Every axis a different size: batch 2, length 5, width 12, table 7 rows.
BATCH, LENGTH, WIDTH, MAX_LENGTH = 2, 5, 12, 7

VARIANTS = {
    "sinusoidal-add": {},
    # An odd encoding width: the last feature is a lone sine.
    "sinusoidal-concat": {"merge": "concat", "encoding_dim": 5},
    "sinusoidal-max-length": {"max_length": MAX_LENGTH, "base": 100.0},
    "learned-add": {"kind": "learned", "max_length": MAX_LENGTH},
    "learned-concat": {
        "kind": "learned",
        "max_length": MAX_LENGTH,
        "merge": "concat",
        "encoding_dim": 4,
    },
}


def _inputs(seed=0, shape=(BATCH, LENGTH, WIDTH)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _mask():
    # Row 0 partly padded, row 1 fully padded (an empty string).
    return np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)


def _spec(kwargs):
    return harness.LayerSpec(
        cls=PositionalEncoding,
        init_kwargs=kwargs,
        input_data=_inputs(),
        mask=_mask(),
        expected_num_trainable_weights=int(kwargs.get("kind") == "learned"),
        # Positions are added at padded positions too.
        zeros_at_padding=False,
    )


@pytest.mark.parametrize("check", harness.check_params(variant=True))
@pytest.mark.parametrize(
    "variant",
    # "learned-add" is the main spec on JAX and PyTorch.
    [
        pytest.param(v, marks=pytest.mark.all_backends)
        if v == "learned-add"
        else v
        for v in VARIANTS
    ],
)
def test_contract(variant, check):
    # Weight-free variants: the harness checks input gradients instead.
    harness.CHECKS[check](_spec(VARIANTS[variant]))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_flow_through_the_layer(variant):
    x = tf.constant(_inputs())
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = PositionalEncoding(**VARIANTS[variant])(x)
        loss = tf.reduce_sum(tf.square(y)) + tf.reduce_sum(y)
    # The encoding does not depend on x: dy/dx is the identity on the
    # input features, so d loss / dx = 2 y + 1 there.
    expected = 2.0 * _numpy(y)[..., :WIDTH] + 1.0
    harness.assert_close(tape.gradient(loss, x), expected, 1e-5, "grad")
    # A trainable layer in front of it still trains.
    model = keras.Sequential(
        [
            keras.Input((None, WIDTH)),
            keras.layers.Dense(WIDTH),
            PositionalEncoding(**VARIANTS[variant]),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    before = _numpy(model.layers[0].kernel)
    target = np.zeros(tuple(model(x).shape), "float32")
    model.fit(_inputs(), target, epochs=1, batch_size=2, verbose=0)
    assert np.all(np.isfinite(_numpy(model.layers[0].kernel)))
    assert np.any(_numpy(model.layers[0].kernel) != before)


def _numpy(x):
    return harness.to_numpy(x)


@pytest.mark.parametrize("width", [WIDTH, 7])
@pytest.mark.parametrize("start", [0, 3])
@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_sinusoidal_matches_reference(width, start, base):
    x = _inputs(shape=(BATCH, LENGTH, width))
    out = PositionalEncoding(base=base)(x, start_index=start)
    expected = x + reference.sinusoidal(LENGTH, width, start, base)[None]
    harness.assert_close(out, expected, 1e-5, "sinusoidal")


def test_sinusoidal_far_positions_match_reference():
    # float32 angles near position 1000 are accurate to about 1e-4.
    x = np.zeros((1, LENGTH, WIDTH), "float32")
    out = PositionalEncoding()(x, start_index=1000)
    expected = reference.sinusoidal(LENGTH, WIDTH, 1000)[None]
    harness.assert_close(out, expected, 1e-4, "far positions")


def test_learned_adds_table_rows():
    layer = PositionalEncoding("learned", max_length=MAX_LENGTH)
    x = _inputs()
    out = layer(x, start_index=2)
    table = _numpy(layer.embeddings)
    assert table.shape == (MAX_LENGTH, WIDTH)
    harness.assert_close(out, x + table[None, 2 : 2 + LENGTH], 1e-6, "rows")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_start_index_equals_slice_of_full_output(variant):
    layer = PositionalEncoding(**VARIANTS[variant])
    x = _inputs()
    full = _numpy(layer(x))
    step = tf.function(lambda x, t: layer(x, start_index=t))
    for t in range(LENGTH):
        one = x[:, t : t + 1]
        for start in (t, np.int64(t), tf.constant(t)):
            out = layer(one, start_index=start)
            harness.assert_close(out[:, 0], full[:, t], 1e-6, f"{start!r}")
        # A tensor start inside a graph (the incremental-decoding loop).
        out = step(tf.constant(one), tf.constant(t, "int64"))
        harness.assert_close(out[:, 0], full[:, t], 1e-6, "graph")


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_concat_shape_and_values(kind):
    layer = PositionalEncoding(
        kind, max_length=MAX_LENGTH, merge="concat", encoding_dim=5
    )
    x = _inputs()
    out = _numpy(layer(x, start_index=1))
    assert out.shape == (BATCH, LENGTH, WIDTH + 5)
    assert layer.compute_output_shape(x.shape) == out.shape
    np.testing.assert_array_equal(out[..., :WIDTH], x)
    if kind == "sinusoidal":
        expected = reference.sinusoidal(LENGTH, 5, start=1)
    else:
        expected = _numpy(layer.embeddings)[1 : 1 + LENGTH]
    for b in range(BATCH):
        harness.assert_close(out[b, :, WIDTH:], expected, 1e-6, "concat")


def test_concat_defaults_to_input_width():
    out = PositionalEncoding(merge="concat")(_inputs())
    assert tuple(out.shape) == (BATCH, LENGTH, 2 * WIDTH)


def test_add_accepts_matching_encoding_dim():
    x = _inputs()
    out = PositionalEncoding(encoding_dim=WIDTH)(x)
    harness.assert_close(out, PositionalEncoding()(x), 0.0, "same")


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_longest_input_fits(kind):
    layer = PositionalEncoding(kind, max_length=MAX_LENGTH)
    x = _inputs(shape=(BATCH, MAX_LENGTH, WIDTH))
    assert tuple(layer(x).shape) == x.shape
    assert tuple(layer(x[:, :2], start_index=MAX_LENGTH - 2).shape)[1] == 2


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_over_length_raises_naming_max_length(kind):
    layer = PositionalEncoding(kind, max_length=MAX_LENGTH)
    too_long = _inputs(shape=(BATCH, MAX_LENGTH + 1, WIDTH))
    match = "argument `max_length`"
    with pytest.raises(ValueError, match=match):
        layer(too_long)
    # start_index + seq_len counts, as a Python int or an eager tensor.
    for start in (3, tf.constant(3)):
        with pytest.raises(ValueError, match=match):
            layer(_inputs(), start_index=start)
    # A static length inside a graph fails while tracing.
    traced = tf.function(lambda x: layer(x))
    with pytest.raises(ValueError, match=match):
        traced(tf.constant(too_long))
    # And so does a functional model with a static length.
    with pytest.raises(ValueError, match=match):
        layer(keras.Input((MAX_LENGTH + 1, WIDTH)))


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_over_length_in_graph_with_unknown_length_fails_at_run_time(kind):
    layer = PositionalEncoding(kind, max_length=MAX_LENGTH)
    graph = tf.function(
        lambda x, t: layer(x, start_index=t),
        input_signature=[
            tf.TensorSpec((None, None, WIDTH)),
            tf.TensorSpec((), tf.int32),
        ],
    )
    assert tuple(graph(_inputs(), 2).shape) == (BATCH, LENGTH, WIDTH)
    # The Slice op's own bounds check: no garbage rows past the table.
    with pytest.raises(tf.errors.InvalidArgumentError, match="size"):
        graph(_inputs(), 3)


def test_mask_passes_through_to_a_mask_consumer():
    ids = np.array([[4, 9, 2, 0, 0], [0, 0, 0, 0, 0]], dtype="int32")
    embedding = keras.layers.Embedding(20, WIDTH, mask_zero=True)
    encoding = PositionalEncoding()
    inputs = keras.Input((None,), dtype="int32")
    symbolic = encoding(embedding(inputs))
    # Functional models take the symbolic mask from `compute_mask`.
    assert _masking.get_keras_mask(symbolic) is not None
    model = keras.Model(inputs, SequencePooling("mean")(symbolic))
    hidden = encoding(embedding(ids))
    np.testing.assert_array_equal(_numpy(hidden._keras_mask), ids != 0)
    hidden = _numpy(hidden)
    # The mean over real tokens only; the empty row pools to zeros (with a
    # lost mask, padded positions, non-zero here, would enter the mean).
    expected = np.stack([hidden[0, :3].mean(0), np.zeros(WIDTH)])
    harness.assert_close(model(ids), expected, 1e-6, "pooled")


def test_explicit_mask_is_emitted_as_bool():
    mask = _mask().astype("int32")
    out = PositionalEncoding()(_inputs(), mask=mask)
    emitted = out._keras_mask
    assert keras.backend.standardize_dtype(emitted.dtype) == "bool"
    np.testing.assert_array_equal(_numpy(emitted), _mask())


def test_no_mask_in_no_mask_out():
    out = PositionalEncoding()(_inputs())
    assert getattr(out, "_keras_mask", None) is None


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_mixed_precision_dtype(policy, kind):
    layer = PositionalEncoding(kind, max_length=MAX_LENGTH, dtype=policy)
    out = layer(_inputs())
    assert keras.backend.standardize_dtype(out.dtype) == policy[6:]
    if kind == "learned":
        assert layer.embeddings.dtype == "float32"


def test_mixed_float16_sinusoids_are_computed_in_float32():
    # float16 cannot hold positions 3001 and 3003 (its spacing there is 2),
    # so a table computed in float16 is off by whole radians.
    x = np.zeros((1, LENGTH, WIDTH), "float32")
    out = PositionalEncoding(dtype="mixed_float16")(x, start_index=3000)
    expected = reference.sinusoidal(LENGTH, WIDTH, 3000)[None]
    harness.assert_close(out, expected, 2e-3, "float16")


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"kind": "rotary"}, "kind"),
        ({"merge": "sum"}, "merge"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": 2.5}, "max_length"),
        ({"kind": "learned"}, "max_length"),
        ({"encoding_dim": 0}, "encoding_dim"),
        ({"merge": "concat", "encoding_dim": -3}, "encoding_dim"),
        ({"base": 0.0}, "base"),
        ({"base": "big"}, "base"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        PositionalEncoding(**kwargs)


def test_add_with_other_encoding_dim_raises():
    with pytest.raises(ValueError, match="argument `encoding_dim`.*concat"):
        PositionalEncoding(encoding_dim=WIDTH + 1)(_inputs())


@pytest.mark.parametrize("shape", [(BATCH, WIDTH), (BATCH, 3, LENGTH, WIDTH)])
def test_wrong_rank_raises(shape):
    with pytest.raises(ValueError, match="argument `inputs`.*rank-3"):
        PositionalEncoding()(np.zeros(shape, "float32"))


@pytest.mark.parametrize("start", [-1, 1.0, True, tf.constant(-1)])
def test_invalid_start_index_value(start):
    with pytest.raises(ValueError, match="argument `start_index`"):
        PositionalEncoding()(_inputs(), start_index=start)


@pytest.mark.parametrize("start", [tf.constant(1.0), tf.constant([1, 2])])
def test_invalid_start_index_tensor(start):
    with pytest.raises(TypeError, match="argument `start_index`"):
        PositionalEncoding()(_inputs(), start_index=start)


def test_bad_mask_shape_raises():
    with pytest.raises(ValueError, match="argument `mask`"):
        PositionalEncoding()(_inputs(), mask=np.ones((BATCH, 4), bool))


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_add_with_other_encoding_dim_raises_in_a_functional_model(kind):
    # The sinusoids are built at construction: `compute_output_shape`, not
    # `build`, sees the input shape first and must reject it.
    layer = PositionalEncoding(
        kind, max_length=MAX_LENGTH, encoding_dim=WIDTH + 1
    )
    with pytest.raises(ValueError, match="argument `encoding_dim`.*concat"):
        layer(keras.Input((LENGTH, WIDTH)))


@pytest.mark.parametrize(
    "shape, match", [((WIDTH,), "rank-3"), ((LENGTH, None), "feature")]
)
def test_bad_shape_raises_in_a_functional_model(shape, match):
    with pytest.raises(ValueError, match=f"argument `inputs`.*{match}"):
        PositionalEncoding()(keras.Input(shape))


def test_build_still_checks_the_shape():
    # `TokenAndPositionEmbedding.build` builds its sub-layer explicitly.
    with pytest.raises(ValueError, match="argument `encoding_dim`"):
        PositionalEncoding(encoding_dim=WIDTH + 1).build((None, None, WIDTH))


def test_sinusoids_follow_the_width_of_each_call():
    # No table is fixed at a first build: the same layer encodes any width.
    layer = PositionalEncoding()
    for width in (WIDTH, 7):
        x = np.zeros((BATCH, LENGTH, width), "float32")
        expected = reference.sinusoidal(LENGTH, width)
        harness.assert_close(layer(x)[0], expected, 1e-5, f"width {width}")
