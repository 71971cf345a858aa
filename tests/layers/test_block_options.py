"""Block options of modern decoders: RMS normalization and no biases.

Defaults stay as in release 0.1 (layer norm, biases), so existing configs
and `.keras` files load and compute the same.
"""

import keras
import numpy as np
import pytest

from keras_selfattn import TransformerBlock
from keras_selfattn import TransformerDecoderBlock
from tests import harness

BATCH, LENGTH, WIDTH, HEADS, FF = 2, 5, 12, 3, 11
SOURCE, SOURCE_WIDTH = 7, 10


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, LENGTH, WIDTH)).astype("float32")
    source = rng.normal(size=(BATCH, SOURCE, SOURCE_WIDTH)).astype("float32")
    return x, source


def _call(block, x, source):
    if isinstance(block, TransformerDecoderBlock):
        return block(x, source)
    return block(x)


@pytest.mark.parametrize("cls", [TransformerBlock, TransformerDecoderBlock])
def test_rms_normalization_is_scale_only(cls):
    x, source = _data()
    block = cls(HEADS, FF, normalization="rms", norm_first=True)
    _call(block, x, source)
    norms = [w for w in block.weights if "_norm" in w.path]
    assert norms and all(w.path.endswith("rms_norm/scale") for w in norms)
    norm = block._self_attention_norm
    norm.scale.assign(np.linspace(0.5, 2.0, WIDTH).astype("float32"))
    expected = (
        x
        / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6)
        * np.linspace(0.5, 2.0, WIDTH)
    )
    harness.assert_close(norm(x), expected, 1e-5)


@pytest.mark.parametrize("cls", [TransformerBlock, TransformerDecoderBlock])
def test_no_bias_anywhere(cls):
    x, source = _data()
    block = cls(HEADS, FF, use_bias=False)
    _call(block, x, source)
    names = [harness.weight_name(w) for w in block.weights]
    assert not [n for n in names if "bias" in n or n == "beta"], names
    with_bias = cls(HEADS, FF)
    _call(with_bias, x, source)
    attentions = 2 if cls is TransformerDecoderBlock else 1
    # 4 biases per attention, 2 feed-forward biases, one beta per norm.
    norms = attentions + 1
    assert len(with_bias.weights) - len(block.weights) == (
        4 * attentions + 2 + norms
    )


@pytest.mark.parametrize("cls", [TransformerBlock, TransformerDecoderBlock])
def test_defaults_are_release_0_1(cls):
    x, source = _data()
    block = cls(HEADS, FF, seed=1)
    _call(block, x, source)
    config = block.get_config()
    assert config["normalization"] == "layer" and config["use_bias"] is True
    old = {
        k: v
        for k, v in config.items()
        if k not in ("normalization", "use_bias")
    }
    again = cls.from_config(old)  # a config saved before the options
    _call(again, x, source)
    again.set_weights(block.get_weights())
    harness.assert_close(_call(again, x, source), _call(block, x, source), 0)


@pytest.mark.parametrize("check", ["config", "train", "mixed_precision"])
def test_contract_rms_without_bias(check):
    spec = harness.LayerSpec(
        cls=TransformerBlock,
        init_kwargs={
            "num_heads": HEADS,
            "ff_dim": FF,
            "normalization": "rms",
            "use_bias": False,
            "causal": True,
        },
        input_data=_data()[0],
        mask=np.array([[1, 1, 1, 0, 0], [0] * 5], dtype=bool),
        expected_num_trainable_weights=4 + 2 + 2,
    )
    harness.CHECKS[check](spec)


def test_options_survive_saving(tmp_path):
    x, _ = _data()
    inputs = keras.Input((LENGTH, WIDTH))
    block = TransformerBlock(HEADS, FF, normalization="rms", use_bias=False)
    model = keras.Model(inputs, block(inputs))
    path = str(tmp_path / "block.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    harness.assert_close(reloaded(x), model(x), 1e-6)


def test_option_errors_name_the_argument():
    with pytest.raises(ValueError, match="argument `normalization`"):
        TransformerBlock(HEADS, FF, normalization="batch")
    with pytest.raises(TypeError, match="argument `use_bias`"):
        TransformerDecoderBlock(HEADS, FF, use_bias="no")
