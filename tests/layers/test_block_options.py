"""Block options of modern decoders: RMS normalization, no biases, gated
feed-forward, relative positions, QK-norm and logit soft-capping.

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
    assert config["position_embedding"] is None
    assert config["gated_feedforward"] is False
    assert config["qk_norm"] is False and config["logit_soft_cap"] is None
    new_keys = (
        "normalization",
        "use_bias",
        "position_embedding",
        "rotary_max_wavelength",
        "rotary_scaling_factor",
        "rotary_fraction",
        "qk_norm",
        "logit_soft_cap",
        "gated_feedforward",
    )
    old = {k: v for k, v in config.items() if k not in new_keys}
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


LLAMA = {
    "normalization": "rms",
    "use_bias": False,
    "norm_first": True,
    "activation": "silu",
    "gated_feedforward": True,
    "position_embedding": "rotary",
    "qk_norm": True,
    "logit_soft_cap": 30.0,
    "num_key_value_heads": 1,
    "dropout": 0.0,
}


def test_gated_feedforward_is_activation_gate_times_up():
    x, _ = _data(3)
    block = TransformerBlock(HEADS, FF, gated_feedforward=True)
    block(x)
    gate, up = block._feedforward_gate, block._feedforward_intermediate
    assert up.activation is keras.activations.linear
    y = harness.to_numpy(block._feedforward_norm(x))
    expected = np.maximum(y @ harness.to_numpy(gate.kernel), 0.0) * (
        y @ harness.to_numpy(up.kernel)
    )
    gate.bias.assign(np.zeros(FF, "float32"))
    up.bias.assign(np.zeros(FF, "float32"))
    got = gate(block._feedforward_norm(x)) * up(block._feedforward_norm(x))
    harness.assert_close(got, expected, 1e-5)


@pytest.mark.parametrize("scheme", ["rotary", "alibi", "relative"])
@pytest.mark.parametrize("cls", [TransformerBlock, TransformerDecoderBlock])
def test_a_llama_style_block_decodes_from_its_cache(cls, scheme):
    x, source = _data(4)
    kwargs = {**LLAMA, "position_embedding": scheme}
    if cls is TransformerBlock:
        kwargs["causal"] = True
    block = cls(HEADS, FF, **kwargs)
    full = harness.to_numpy(_call(block, x, source))
    if cls is TransformerBlock:
        cache = block.init_cache(BATCH, LENGTH)
    else:
        cache = block.init_cache(source, LENGTH)
    steps = []
    for i in range(LENGTH):
        step, cache = block(
            x[:, i : i + 1],
            **({} if cls is TransformerBlock else {"encoder_outputs": None}),
            cache=cache,
            cache_update_index=i,
        )
        steps.append(harness.to_numpy(step))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-4)


def test_a_rotary_block_ignores_left_padding():
    x, _ = _data(5)
    block = TransformerBlock(
        HEADS,
        FF,
        causal=True,
        **{k: v for k, v in LLAMA.items() if k != "num_key_value_heads"},
    )
    alone = harness.to_numpy(block(x))
    padded = np.concatenate([np.ones((BATCH, 2, WIDTH), "float32"), x], 1)
    mask = np.concatenate(
        [np.zeros((BATCH, 2), bool), np.ones((BATCH, LENGTH), bool)], 1
    )
    shifted = harness.to_numpy(block(padded, mask=mask))[:, 2:]
    np.testing.assert_allclose(shifted, alone, atol=1e-5)


@pytest.mark.parametrize("check", ["config", "train", "saving"])
def test_contract_t5_style(check):
    spec = harness.LayerSpec(
        cls=TransformerDecoderBlock,
        init_kwargs={
            "num_heads": HEADS,
            "ff_dim": FF,
            "position_embedding": "relative",
            "relative_num_buckets": 8,
            "relative_max_distance": 16,
            "use_bias": False,
            "normalization": "rms",
            "norm_first": True,
        },
        input_data=_data()[0],
        extra_inputs={"encoder_outputs": _data()[1]},
        mask=np.array([[1, 1, 1, 0, 0], [0] * 5], dtype=bool),
        # Self- and cross-attention projections, the bias table, two dense
        # layers and three RMS norms.
        expected_num_trainable_weights=4 + 4 + 1 + 2 + 3,
    )
    harness.CHECKS[check](spec)


@pytest.mark.parametrize("check", ["config", "train", "saving"])
def test_contract_llama_style(check):
    spec = harness.LayerSpec(
        cls=TransformerBlock,
        init_kwargs={"num_heads": HEADS, "ff_dim": FF, "causal": True, **LLAMA},
        input_data=_data()[0],
        mask=np.array([[1, 1, 1, 0, 0], [0] * 5], dtype=bool),
        # Projections q, k, v, o; QK-norm scales; gate, up, down; 2 norms.
        expected_num_trainable_weights=4 + 2 + 3 + 2,
    )
    harness.CHECKS[check](spec)


def test_new_option_errors_name_the_argument():
    for cls in (TransformerBlock, TransformerDecoderBlock):
        with pytest.raises(ValueError, match="argument `position_embedding`"):
            cls(HEADS, FF, position_embedding="t5")
        with pytest.raises(TypeError, match="argument `gated_feedforward`"):
            cls(HEADS, FF, gated_feedforward=1)
        with pytest.raises(ValueError, match="argument `logit_soft_cap`"):
            cls(HEADS, FF, logit_soft_cap=-3.0)


@pytest.mark.parametrize("cls", [TransformerBlock, TransformerDecoderBlock])
def test_pre_norm_rms_block_keeps_an_attached_mask(cls):
    # A mask riding on the input (from an embedding) enters the pre-norm
    # RMS norm first; it must pass through it (Keras' own RMSNormalization
    # does not declare mask support and warns, an error here) and reach
    # the attention.
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, WIDTH, mask_zero=True)(ids)
    block = cls(HEADS, FF, normalization="rms", norm_first=True)
    if cls is TransformerDecoderBlock:
        source = keras.Input((None, SOURCE_WIDTH))
        model = keras.Model([ids, source], block(x, source))
    else:
        model = keras.Model(ids, block(x))
    tokens = np.array([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]], dtype="int32")
    inputs = [tokens, _data()[1]] if cls is TransformerDecoderBlock else tokens
    outputs = harness.to_numpy(model(inputs))
    # Padded positions give zeros (the block's masking contract).
    assert np.all(outputs[tokens == 0] == 0.0)
    assert np.all(np.abs(outputs[tokens != 0]).sum(-1) > 0)
