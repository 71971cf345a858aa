"""Files saved by an earlier release reload and compute the same outputs.

`tests/data/saved_0_1/` holds models written by `tests/data/make_saved_files.py`
at commit e01dc30 (release 0.1 with the cache, grouped-query heads and LoRA):
every layer, the post- and pre-norm blocks, GQA, RMS norm without biases,
additive scores, a window and LoRA adapters. A change to how a layer stores
its weights must keep these loading.
"""

import os

import keras
import numpy as np
import pytest

import keras_selfattn  # noqa: F401  (registers the layers)

DATA = os.path.join(os.path.dirname(__file__), "data", "saved_0_1")
NAMES = ("encoder_stack", "decoder_stack", "lora_attention")


@pytest.mark.parametrize("name", NAMES)
def test_a_file_saved_by_release_0_1_reloads_and_computes_the_same(name):
    model = keras.saving.load_model(os.path.join(DATA, f"{name}.keras"))
    arrays = np.load(os.path.join(DATA, f"{name}.npz"))
    inputs = [arrays[f"input_{i}"] for i in range(len(model.inputs))]
    feed = inputs if len(inputs) > 1 else inputs[0]
    outputs = keras.ops.convert_to_numpy(model(feed, training=False))
    np.testing.assert_allclose(outputs, arrays["outputs"], atol=1e-5)


def test_the_lora_file_reloads_with_only_its_adapters_trainable():
    model = keras.saving.load_model(os.path.join(DATA, "lora_attention.keras"))
    attention = model.layers[-1]
    assert len(attention.lora_weights) == 8
    assert {id(w) for w in attention.trainable_weights} == {
        id(w) for w in attention.lora_weights
    }
