"""LoRA adapters on the attention projections: `enable_lora(rank)` on
`MultiHeadSelfAttention` and both blocks; afterwards only the adapters
train; saved and reloaded with them."""

import os

import keras
import numpy as np
import pytest

from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn import TransformerBlock
from keras_selfattn import TransformerDecoderBlock
from tests import harness

BATCH, LENGTH, WIDTH, HEADS, FF = 2, 5, 12, 3, 11
SOURCE, SOURCE_WIDTH = 4, 10


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, LENGTH, WIDTH)).astype("float32")
    source = rng.normal(size=(BATCH, SOURCE, SOURCE_WIDTH)).astype("float32")
    return x, source


def _model(kind, **kwargs):
    """A functional model around one layer, and its training inputs."""
    x, source = _data()
    inputs = [keras.Input((LENGTH, WIDTH), name="x")]
    if kind == "attention":
        layer = MultiHeadSelfAttention(HEADS, **kwargs)
    elif kind == "block":
        layer = TransformerBlock(HEADS, FF, **kwargs)
    else:
        layer = TransformerDecoderBlock(HEADS, FF, **kwargs)
        inputs.append(keras.Input((SOURCE, SOURCE_WIDTH), name="source"))
    outputs = keras.layers.Dense(1, name="head")(layer(*inputs))
    model = keras.Model(inputs, outputs)
    data = [x, source] if kind == "decoder" else [x]
    return model, layer, data


def _adapters(layer):
    return [w for w in layer.weights if "_lora_" in w.path]


@pytest.mark.parametrize("kind", ["attention", "block", "decoder"])
@pytest.mark.parametrize("targets", [("query", "value"), ("key", "output")])
def test_only_the_adapters_train(kind, targets):
    model, layer, data = _model(kind)
    before = harness.to_numpy(model(data))
    layer.enable_lora(2, targets=targets)
    # B starts at zero: enabling LoRA changes nothing yet.
    harness.assert_close(model(data), before, 1e-6)
    attentions = 2 if kind == "decoder" else 1
    adapters = _adapters(layer)
    assert len(adapters) == 2 * len(targets) * attentions
    assert {w.path for w in layer.trainable_weights} == {
        w.path for w in adapters
    }
    start = {w.path: harness.to_numpy(w) for w in layer.weights}
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(data, np.ones((BATCH, LENGTH, 1)), epochs=3, verbose=0)
    changed = {
        w.path
        for w in layer.weights
        if not np.allclose(harness.to_numpy(w), start[w.path])
    }
    assert changed == {w.path for w in adapters}


@pytest.mark.parametrize("kind", ["attention", "block", "decoder"])
def test_saved_and_reloaded_with_the_adapters(kind, tmp_path):
    model, layer, data = _model(kind)
    layer.enable_lora(3, lora_alpha=6.0)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(data, np.ones((BATCH, LENGTH, 1)), epochs=2, verbose=0)
    path = os.path.join(tmp_path, "lora.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    harness.assert_close(reloaded(data), model(data), 1e-6, kind)
    again = [
        w
        for w in reloaded.weights
        if w.trainable and not w.path.startswith("head")
    ]
    assert sorted(w.path for w in again) == sorted(
        w.path for w in _adapters(layer)
    )
    same = [x for x in reloaded.layers if type(x) is type(layer)][0]
    assert same.lora_rank == 3 and same.lora_alpha == 6.0


def test_the_update_is_the_scaled_low_rank_product():
    x, _ = _data()
    layer = MultiHeadSelfAttention(HEADS)
    layer(x)
    layer.enable_lora(2, lora_alpha=4.0, targets=("query",))
    rng = np.random.default_rng(1)
    a, b = layer._lora["query"]
    a.assign(rng.normal(size=a.shape).astype("float32"))
    b.assign(rng.normal(size=b.shape).astype("float32"))
    merged = MultiHeadSelfAttention(HEADS)
    merged(x)
    for name in ("query", "key", "value", "output"):
        for kind in ("kernel", "bias"):
            weight = getattr(layer, f"{name}_{kind}")
            getattr(merged, f"{name}_{kind}").assign(weight)
    kernel = harness.to_numpy(layer.query_kernel) + 2.0 * np.tensordot(
        harness.to_numpy(a), harness.to_numpy(b), axes=1
    )
    merged.query_kernel.assign(kernel)
    harness.assert_close(layer(x), merged(x), 1e-5)


def test_lora_errors_name_the_argument():
    x, _ = _data()
    layer = MultiHeadSelfAttention(HEADS)
    with pytest.raises(ValueError, match="is not built"):
        layer.enable_lora(2)
    layer(x)
    with pytest.raises(ValueError, match="argument `lora_rank`"):
        layer.enable_lora(0)
    with pytest.raises(ValueError, match="argument `lora_targets`"):
        layer.enable_lora(2, targets=("query", "gate"))
    with pytest.raises(ValueError, match="argument `lora_targets`"):
        layer.enable_lora(2, targets="query")
    with pytest.raises(ValueError, match="argument `lora_alpha`"):
        layer.enable_lora(2, lora_alpha=-1.0)
    layer.enable_lora(2)
    with pytest.raises(ValueError, match="already enabled"):
        layer.enable_lora(2)
    block = TransformerBlock(HEADS, FF, lora_rank=2)
    block(x)
    with pytest.raises(ValueError, match="already enabled"):
        block.enable_lora(2)
    with pytest.raises(ValueError, match="argument `lora_rank`"):
        TransformerBlock(HEADS, FF, lora_rank=-2)
