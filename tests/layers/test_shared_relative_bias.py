"""One T5 relative-bias table shared by a stack of layers
(`shared_relative_bias=True` and the call's `relative_attention_bias`).

A stack sharing one table must compute exactly what the same stack computes
with a table per layer holding the same values, on every path (dense,
chunked, cached decoding), and the shared table's gradient must be the sum
of what the per-layer tables would get. A model that owns the table saves
and reloads it once.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn import TransformerBlock
from keras_selfattn import TransformerDecoderBlock
from tests import harness

BATCH, LENGTH, WIDTH, HEADS, BUCKETS = 2, 7, 12, 3, 8
RELATIVE = {
    "position_embedding": "relative",
    "relative_num_buckets": BUCKETS,
    "relative_max_distance": 16,
}


@keras.saving.register_keras_serializable(package="keras_selfattn_tests")
class SharedStack(keras.Model):
    """Blocks that read one T5 table the model owns."""

    def __init__(self, depth=2, causal=False, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth
        self.causal = causal
        self.supports_masking = True  # the blocks carry the mask on
        self.blocks = [
            TransformerBlock(
                HEADS,
                ff_dim=11,
                causal=causal,
                shared_relative_bias=True,
                name=f"block_{i}",
                seed=i,
                **RELATIVE,
            )
            for i in range(depth)
        ]

    def build(self, input_shape):
        self.relative_table = self.add_weight(
            name="relative_table",
            shape=(BUCKETS, HEADS),
            initializer=keras.initializers.RandomNormal(seed=7),
        )
        for block in self.blocks:
            block.build(input_shape)

    def call(self, x, mask=None, cache=None, cache_update_index=None):
        table = self.relative_table
        new_caches = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x, mask=mask, relative_attention_bias=table)
            else:
                x, layer_cache = block(
                    x,
                    mask=mask,
                    cache=cache[i],
                    cache_update_index=cache_update_index,
                    relative_attention_bias=table,
                )
                new_caches.append(layer_cache)
        return x if cache is None else (x, new_caches)

    def get_config(self):
        return {
            **super().get_config(),
            "depth": self.depth,
            "causal": self.causal,
        }


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, LENGTH, WIDTH)).astype("float32")
    mask = np.ones((BATCH, LENGTH), dtype=bool)
    mask[1, :2] = False  # left padding
    return x, mask


def _relative_path(weight, block):
    """A weight's path inside `block`."""
    return weight.path.split(block.name + "/", 1)[1]


def _own_tables_copy(shared):
    """The same blocks, each owning a copy of the shared table."""
    blocks = []
    for block in shared.blocks:
        config = block.get_config()
        config["shared_relative_bias"] = False
        own = TransformerBlock.from_config(config)
        own.build((None, LENGTH, WIDTH))
        own_weights = {_relative_path(w, own): w for w in own.weights}
        for weight in block.weights:
            own_weights[_relative_path(weight, block)].assign(weight)
        own._self_attention.relative_attention_bias.assign(
            shared.relative_table
        )
        assert len(own.weights) == len(block.weights) + 1
        blocks.append(own)
    return blocks


@pytest.mark.parametrize("causal", [False, True])
def test_shared_table_equals_a_copy_per_block(causal):
    x, mask = _inputs()
    shared = SharedStack(causal=causal)
    shared.build((None, LENGTH, WIDTH))
    own = _own_tables_copy(shared)
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_shared = shared(x, mask=mask)
        y_own = x
        for block in own:
            y_own = block(y_own, mask=mask)
        weights = tf.range(1.0, 1.0 + WIDTH)
        loss_shared = tf.reduce_sum(y_shared * y_shared * weights)
        loss_own = tf.reduce_sum(y_own * y_own * weights)
    valid = mask[..., None]
    harness.assert_close(
        np.where(valid, y_shared, 0), np.where(valid, y_own, 0), 1e-6, "out"
    )
    # (A gather's gradient may come as `IndexedSlices`.)
    d_shared = tf.convert_to_tensor(
        tape.gradient(loss_shared, shared.relative_table)
    )
    d_own = [
        tf.convert_to_tensor(
            tape.gradient(
                loss_own, block._self_attention.relative_attention_bias
            )
        )
        for block in own
    ]
    # The shared table collects every block's gradient.
    assert float(tf.reduce_max(tf.abs(d_shared))) > 0
    harness.assert_close(d_shared, sum(d_own), 1e-5, "table gradient")


def test_shared_table_on_the_chunked_path_and_the_cache():
    x, _ = _inputs(1)
    table = tf.constant(
        np.random.default_rng(2).normal(size=(BUCKETS, HEADS)), tf.float32
    )
    layers = {
        impl: MultiHeadSelfAttention(
            HEADS,
            causal=True,
            attention_impl=impl,
            chunk_size=2 if impl == "chunked" else None,
            shared_relative_bias=True,
            seed=3,
            **RELATIVE,
        )
        for impl in ("dense", "chunked")
    }
    for layer in layers.values():
        layer.build((None, LENGTH, WIDTH))
    layers["chunked"].set_weights(layers["dense"].get_weights())
    dense = layers["dense"](x, relative_attention_bias=table)
    chunked = layers["chunked"](x, relative_attention_bias=table)
    harness.assert_close(chunked, dense, 1e-5, "chunked")
    # Step by step against the cache equals the full call.
    cache = layers["dense"].init_cache(BATCH, LENGTH)
    steps = []
    for t in range(LENGTH):
        y, cache = layers["dense"](
            x[:, t : t + 1],
            cache=cache,
            cache_update_index=t,
            relative_attention_bias=table,
        )
        steps.append(y)
    harness.assert_close(np.concatenate(steps, 1), dense, 1e-5, "cached")
    # A different table changes the outputs: the call's table is used.
    other = layers["dense"](x, relative_attention_bias=table * 3.0)
    assert np.max(np.abs(harness.to_numpy(other) - dense)) > 1e-3


def test_cached_stack_with_a_shared_table_equals_the_full_call():
    x, mask = _inputs(3)
    mask = np.ones_like(mask)
    model = SharedStack(causal=True)
    model.build((None, LENGTH, WIDTH))
    full = model(x, mask=mask)
    caches = [block.init_cache(BATCH, LENGTH) for block in model.blocks]
    y_prompt, caches = model(
        x[:, :3], mask=mask[:, :3], cache=caches, cache_update_index=0
    )
    steps = [y_prompt]
    for t in range(3, LENGTH):
        y, caches = model(
            x[:, t : t + 1],
            mask=mask[:, t : t + 1],
            cache=caches,
            cache_update_index=t,
        )
        steps.append(y)
    harness.assert_close(np.concatenate(steps, 1), full, 1e-5, "cached")


def test_a_model_owning_the_table_saves_it_once(tmp_path):
    x, mask = _inputs(4)
    model = SharedStack()
    model.build((None, LENGTH, WIDTH))
    expected = harness.to_numpy(model(x, mask=mask))
    # One table: the blocks own none.
    names = [harness.weight_name(w) for w in model.weights]
    assert names.count("relative_table") == 1
    assert "relative_attention_bias" not in names
    path = os.path.join(tmp_path, "shared.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    harness.assert_close(loaded(x, mask=mask), expected, 0.0, "reloaded")
    assert all(block.shared_relative_bias for block in loaded.blocks)


def test_decoder_block_reads_a_shared_table():
    x, _ = _inputs(5)
    encoder = np.random.default_rng(6).normal(size=(BATCH, 4, WIDTH))
    table = tf.ones((BUCKETS, HEADS))
    block = TransformerDecoderBlock(
        HEADS, ff_dim=11, shared_relative_bias=True, **RELATIVE
    )
    y = block(x, encoder.astype("float32"), relative_attention_bias=table)
    assert y.shape == (BATCH, LENGTH, WIDTH)
    assert "relative_attention_bias" not in [
        harness.weight_name(w) for w in block.weights
    ]
    assert block.get_config()["shared_relative_bias"] is True


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="`shared_relative_bias`.*relative"):
        MultiHeadSelfAttention(HEADS, shared_relative_bias=True)
    with pytest.raises(ValueError, match="`shared_relative_bias`.*relative"):
        TransformerBlock(
            HEADS,
            ff_dim=11,
            position_embedding="alibi",
            shared_relative_bias=True,
        )
    x, _ = _inputs()
    shared = MultiHeadSelfAttention(
        HEADS, shared_relative_bias=True, **RELATIVE
    )
    with pytest.raises(ValueError, match="`relative_attention_bias`.*None"):
        shared(x)
    with pytest.raises(ValueError, match=r"`relative_attention_bias`.*\(8, 3"):
        shared(x, relative_attention_bias=tf.ones((BUCKETS, HEADS + 1)))
    own = MultiHeadSelfAttention(HEADS, **RELATIVE)
    with pytest.raises(ValueError, match="`relative_attention_bias`.*owns"):
        own(x, relative_attention_bias=tf.ones((BUCKETS, HEADS)))
    plain = TransformerBlock(HEADS, ff_dim=11)
    with pytest.raises(ValueError, match="`relative_attention_bias`"):
        plain(x, relative_attention_bias=tf.ones((BUCKETS, HEADS)))
