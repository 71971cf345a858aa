"""Keras layer conventions, over every public layer.

- A layer without weights is built when constructed (Keras' stateless
  layers, `Dropout`, are), unless a subclass brings its own `build`.
- `trainable = False` set before a layer is built freezes every weight it
  creates when built, also in sub-layers created in `build`.
- Keras' own `run_layer_test` passes.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_selfattn
from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn import PositionalEncoding
from keras_selfattn import RotaryEmbedding
from keras_selfattn import SequencePooling
from keras_selfattn import TokenAndPositionEmbedding
from keras_selfattn import TransformerBlock
from keras_selfattn import TransformerDecoderBlock
from keras_selfattn.text import SentencePieceTokenizer
from keras_selfattn.text import WordPieceTokenizer
from keras_selfattn.text import learn_sentencepiece_model

try:
    # Keras' layer test harness lives in a private module: it may move.
    from keras.src.testing.test_case import TestCase as KerasTestCase
except ImportError:  # pragma: no cover - depends on the Keras version
    KerasTestCase = None

# Every axis a different size: batch 2, length 5, source length 7, width 12,
# encoder width 10, 3 heads, feed-forward 11, vocabulary 20, table 8 rows.
B, T, S, D, E, N, F, V, L = 2, 5, 7, 12, 10, 3, 11, 20, 8
VOCAB = ["[PAD]", "[UNK]", "[START]", "[END]", "the", "cat", "sat", "##s"]
# A SentencePiece model (trained in milliseconds) for its tokenizer.
PROTO = learn_sentencepiece_model(["the cats sat", "the cat"], 270)


def _x():
    return np.random.default_rng(0).normal(size=(B, T, D)).astype("float32")


def _encoded():
    return np.random.default_rng(1).normal(size=(B, S, E)).astype("float32")


def _ids():
    return np.arange(1, B * T + 1).reshape(B, T).astype("int32") % V


# name: (factory, call arguments, number of weights once built).
LAYERS = {
    "SequencePooling": (lambda: SequencePooling("max"), lambda: [_x()], 0),
    "PositionalEncoding-sinusoidal": (PositionalEncoding, lambda: [_x()], 0),
    "PositionalEncoding-sinusoidal-concat": (
        lambda: PositionalEncoding(merge="concat", encoding_dim=4),
        lambda: [_x()],
        0,
    ),
    "RotaryEmbedding": (
        lambda: RotaryEmbedding(),
        lambda: [_x()],
        0,
    ),
    "PositionalEncoding-learned": (
        lambda: PositionalEncoding("learned", max_length=L),
        lambda: [_x()],
        1,
    ),
    "TokenAndPositionEmbedding-learned": (
        lambda: TokenAndPositionEmbedding(V, L, D),
        lambda: [_ids()],
        2,
    ),
    # The token table is a weight even with fixed sinusoidal positions.
    "TokenAndPositionEmbedding-sinusoidal": (
        lambda: TokenAndPositionEmbedding(V, L, D, position="sinusoidal"),
        lambda: [_ids()],
        1,
    ),
    # Query, key, value and output kernels and biases.
    "MultiHeadSelfAttention": (
        lambda: MultiHeadSelfAttention(N),
        lambda: [_x()],
        8,
    ),
    # Attention (8), two layer norms (2 x 2), two dense layers (2 x 2).
    "TransformerBlock": (
        lambda: TransformerBlock(N, F, seed=0),
        lambda: [_x()],
        16,
    ),
    # Two attentions (2 x 8), three layer norms, two dense layers.
    "TransformerDecoderBlock": (
        lambda: TransformerDecoderBlock(N, F, seed=0),
        lambda: [_x(), _encoded()],
        26,
    ),
    "WordPieceTokenizer": (
        lambda: WordPieceTokenizer(VOCAB, sequence_length=6),
        lambda: [np.array(["the cats sat", ""])],
        0,
    ),
    "SentencePieceTokenizer": (
        lambda: SentencePieceTokenizer(PROTO, sequence_length=6),
        lambda: [np.array(["the cats sat", ""])],
        0,
    ),
}

BLOCKS = ["TransformerBlock", "TransformerDecoderBlock"]
WEIGHTLESS = [name for name, (_, _, count) in LAYERS.items() if count == 0]
# The layers that create weights in `build` (or own sub-layers that do).
WITH_WEIGHTS = [name for name in LAYERS if name not in WEIGHTLESS]


def test_every_public_layer_is_covered():
    public = {
        getattr(module, name)
        for module in (keras_selfattn, keras_selfattn.text)
        for name in module.__all__
    }
    layers = {
        cls
        for cls in public
        if isinstance(cls, type) and issubclass(cls, keras.layers.Layer)
    }
    covered = {type(factory()) for factory, _, _ in LAYERS.values()}
    assert layers == covered


@pytest.mark.parametrize("name", WEIGHTLESS)
def test_weightless_layer_is_built_at_construction(name):
    factory, inputs, _ = LAYERS[name]
    layer = factory()
    assert layer.built
    # Keras calls `build` only on an unbuilt layer: one built at
    # construction must indeed need no weights.
    layer(*inputs())
    assert layer.weights == []


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_layer_with_weights_is_built_by_its_first_call(name):
    factory, inputs, count = LAYERS[name]
    layer = factory()
    assert not layer.built
    layer(*inputs())
    assert layer.built
    assert len(layer.weights) == count


@pytest.mark.parametrize(
    "cls",
    [
        SequencePooling,
        PositionalEncoding,
        WordPieceTokenizer,
        SentencePieceTokenizer,
    ],
)
def test_subclass_with_its_own_build_is_built_by_keras(cls):
    # Keras never calls the `build` of a layer that is already built, so a
    # subclass adding a weight must not start built.
    class WithScale(cls):
        def build(self, *args, **kwargs):
            self.scale = self.add_weight(shape=(), initializer="ones")

    args = {WordPieceTokenizer: (VOCAB,), SentencePieceTokenizer: (PROTO,)}
    args = args.get(cls, ())
    layer = WithScale(*args)
    assert not layer.built
    layer(np.array(["the cat"]) if args else _x())
    assert len(layer.weights) == 1


def _trainable_flags(layer):
    # What a model holding the layer reads: `Layer.trainable_weights` is []
    # for any frozen layer, whatever the flags of the variables under it.
    return [w.path for w in layer.weights if w.trainable]


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_frozen_before_build_freezes_every_weight(name):
    factory, inputs, count = LAYERS[name]
    layer = factory()
    layer.trainable = False
    layer(*inputs())
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == len(layer.weights) == count
    assert _trainable_flags(layer) == []
    # Unfreezing reaches every weight again.
    layer.trainable = True
    assert len(layer.trainable_weights) == count
    assert len(_trainable_flags(layer)) == count


@pytest.mark.parametrize("name", BLOCKS)
def test_frozen_block_config_rebuilds_frozen(name):
    # A `.keras` file reloads a frozen block from its config, then builds it.
    factory, inputs, count = LAYERS[name]
    frozen = factory()
    frozen.trainable = False
    revived = type(frozen).from_config(frozen.get_config())
    revived(*inputs())
    assert len(revived.weights) == count
    assert _trainable_flags(revived) == []


def _model_around(block, inputs):
    symbolic = [keras.Input(x.shape[1:], dtype=x.dtype) for x in inputs]
    outputs = keras.layers.Dense(1, name="head")(block(*symbolic))
    return keras.Model(symbolic, outputs)


@pytest.mark.parametrize("name", BLOCKS)
def test_fit_leaves_a_block_frozen_before_build_unchanged(name):
    factory, inputs, count = LAYERS[name]
    block = factory()
    block.trainable = False
    data = inputs()
    model = _model_around(block, data)
    # Only the head's kernel and bias.
    assert len(model.trainable_weights) == 2
    before = [keras.ops.convert_to_numpy(w) for w in block.weights]
    head = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    model.compile(optimizer="sgd", loss="mse", jit_compile=False)
    model.fit(data, np.ones((B, T, 1), "float32"), epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in block.weights]
    assert len(after) == count
    for w, old, new in zip(block.weights, before, after, strict=True):
        np.testing.assert_array_equal(old, new, err_msg=w.path)
    trained = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    assert not np.array_equal(head, trained)


# Keras' `run_layer_test` arguments per layer: what passes.
_SHUFFLE = pytest.mark.filterwarnings(
    # Keras' harness fits on a generator with `shuffle=True` (the default),
    # which Keras itself then warns about.
    "ignore:`shuffle=True` was passed:UserWarning"
)
_NOTHING_TO_TRAIN = pytest.mark.filterwarnings(
    # The harness's fit step on a weightless layer: Keras warns that the
    # model has no trainable weights. The step still runs forward and back.
    "ignore:The model does not have any trainable weights:UserWarning"
)
KERAS_CASES = [
    pytest.param(
        SequencePooling,
        {"mode": mode},
        {"input_shape": (B, T, D), "expected_output_shape": (B, D)},
        0,
        id=f"SequencePooling-{mode}",
        marks=_NOTHING_TO_TRAIN,
    )
    for mode in ("mean", "max", "first", "last")
] + [
    pytest.param(
        PositionalEncoding,
        {},
        {"input_shape": (B, T, D), "expected_output_shape": (B, T, D)},
        0,
        id="PositionalEncoding-sinusoidal",
        marks=_NOTHING_TO_TRAIN,
    ),
    pytest.param(
        PositionalEncoding,
        {"merge": "concat", "encoding_dim": 4, "max_length": L},
        {"input_shape": (B, T, D), "expected_output_shape": (B, T, D + 4)},
        0,
        id="PositionalEncoding-sinusoidal-concat",
        marks=_NOTHING_TO_TRAIN,
    ),
    pytest.param(
        PositionalEncoding,
        {"kind": "learned", "max_length": L},
        {"input_shape": (B, T, D), "expected_output_shape": (B, T, D)},
        1,
        id="PositionalEncoding-learned",
    ),
    pytest.param(
        TokenAndPositionEmbedding,
        {"vocab_size": V, "max_length": L, "embed_dim": D},
        # Integer ids: `input_shape` would give float inputs.
        {"input_data": _ids(), "expected_output_shape": (B, T, D)},
        2,
        id="TokenAndPositionEmbedding",
    ),
    pytest.param(
        MultiHeadSelfAttention,
        {"num_heads": N, "causal": True},
        {"input_shape": (B, T, D), "expected_output_shape": (B, T, D)},
        8,
        id="MultiHeadSelfAttention",
    ),
    pytest.param(
        TransformerBlock,
        {"num_heads": N, "ff_dim": F, "seed": 0},
        {"input_shape": (B, T, D), "expected_output_shape": (B, T, D)},
        16,
        id="TransformerBlock",
    ),
    pytest.param(
        TransformerDecoderBlock,
        {"num_heads": N, "ff_dim": F, "seed": 0},
        {
            # Keyword shapes, as Keras passes them to `build`.
            "input_shape": {
                "inputs_shape": (B, T, D),
                "encoder_outputs_shape": (B, S, E),
            },
            "expected_output_shape": (B, T, D),
            # Skipped: the harness's training model calls `layer(x)` with
            # the dict of inputs as one argument, so a layer with two
            # tensor inputs cannot take it. `tests/harness.py` trains it.
            "run_training_check": False,
        },
        26,
        id="TransformerDecoderBlock",
    ),
    pytest.param(
        WordPieceTokenizer,
        {"vocabulary": VOCAB, "sequence_length": 6},
        {
            # A string tensor: the harness reads its Keras dtype.
            "input_data": tf.constant(["the cats sat", ""]),
            "expected_output_shape": (B, 6),
            "expected_output_dtype": "int32",
            # Skipped: strings in, int32 ids out, no weights; nothing to
            # differentiate. (The subclass check of
            # `assert_built_after_instantiation` fails: see above.)
            "run_training_check": False,
        },
        0,
        id="WordPieceTokenizer",
    ),
    pytest.param(
        SentencePieceTokenizer,
        {"proto": PROTO, "sequence_length": 6},
        {
            "input_data": tf.constant(["the cats sat", ""]),
            "expected_output_shape": (B, 6),
            "expected_output_dtype": "int32",
            # Skipped, as for WordPieceTokenizer: nothing to differentiate.
            "run_training_check": False,
        },
        0,
        id="SentencePieceTokenizer",
    ),
]


@pytest.mark.skipif(
    KerasTestCase is None,
    reason="keras.src.testing.test_case is not importable in this Keras",
)
@_SHUFFLE
@pytest.mark.parametrize("cls, init_kwargs, kwargs, count", KERAS_CASES)
def test_keras_run_layer_test(cls, init_kwargs, kwargs, count):
    # Without `setUp`: it clears the Keras session (and the seed) of this
    # process.
    case = KerasTestCase()
    case.run_layer_test(
        cls,
        init_kwargs,
        expected_num_trainable_weights=count,
        expected_num_non_trainable_weights=0,
        supports_masking=cls
        not in (WordPieceTokenizer, SentencePieceTokenizer),
        # Built at construction, and not when a subclass overrides `build`.
        assert_built_after_instantiation=(count == 0),
        **kwargs,
    )
