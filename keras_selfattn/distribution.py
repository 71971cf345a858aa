"""Model-parallel layouts for the layers' weights (`keras.distribution`).

`keras.distribution.ModelParallel` places each variable by looking its path
up in a `keras.distribution.LayoutMap`, whose keys are regular expressions
that must match the *whole* path (`re.fullmatch`) and at most one key each.
`layout_map` returns one filled in for the paths our layers create, sharded
Megatron-style over one mesh axis:

- `ATTENTION_QUERY_KERNEL`, `ATTENTION_KEY_VALUE_KERNEL`: the attention's
  query, key and value kernels, `(width, heads, head_dim)`, split over the
  heads: `(None, model, None)`; their biases (`ATTENTION_QUERY_BIAS`,
  `ATTENTION_KEY_VALUE_BIAS`, `(heads, head_dim)`): `(model, None)`.
- `ATTENTION_OUTPUT_KERNEL`: the attention's output kernel,
  `(heads, head_dim, width)`, split over the heads: `(model, None, None)`.
- `FEEDFORWARD_IN_KERNEL`: the feed-forward intermediate (and gate) kernels,
  `(width, ff_dim)`, split over the hidden units: `(None, model)`; their
  biases (`FEEDFORWARD_IN_BIAS`, `(ff_dim,)`): `(model,)`.
- `FEEDFORWARD_OUT_KERNEL`: the feed-forward output kernel, `(ff_dim,
  width)`, split over the hidden units: `(model, None)`.
- `TOKEN_EMBEDDING`: the token table, `(vocab, width)`, split over the
  vocabulary: `(model, None)`.

Each device then holds a slice of the heads and of the feed-forward units;
XLA inserts one all-reduce after the attention output and one after the
feed-forward output. Every other weight (layer norms, output biases,
position tables, LoRA factors, your own layers) is not in the map and is
replicated. The sharded sizes (`num_heads`, `num_key_value_heads`, `ff_dim`,
the vocabulary) must divide by the size of the model axis; with fewer
key/value heads than that (multi-query attention), delete the two
`ATTENTION_KEY_VALUE_*` keys from the map and the key and value
projections are replicated, as Megatron does.

The paths come from the sub-layer names our layers give their weights
(`query`, `key`, `value`, `output`, `feedforward_*_dense`,
`token_embedding`), wherever the layer sits in a model. A layer of your
own named like one of them (a `Dense(name="output")` inside a sub-model)
would match too: give it another name, or add an entry for its exact path
(an exact path wins over the regexes).

Keras implements `ModelParallel` on JAX (tested with two virtual CPU
devices); building the map needs only Keras, on any backend. See the
Distributed training guide.
"""

import keras

# The q/k/v projections of `MultiHeadSelfAttention` (standalone or as a
# block's `self_attention` / `cross_attention`): EinsumDense sub-layers.
# Key and value apart from the query: with fewer key/value heads than
# devices on the model axis, delete these two keys to replicate them.
ATTENTION_QUERY_KERNEL = r".*/query/kernel"
ATTENTION_QUERY_BIAS = r".*/query/bias"
ATTENTION_KEY_VALUE_KERNEL = r".*/(key|value)/kernel"
ATTENTION_KEY_VALUE_BIAS = r".*/(key|value)/bias"
# The attention's output projection. Keras' own MHA names it
# `attention_output`, which `/output/` does not match.
ATTENTION_OUTPUT_KERNEL = r".*/output/kernel"
# The blocks' feed-forward network; the gate of `gated_feedforward=True`
# has the intermediate layer's shape and is sharded the same way.
FEEDFORWARD_IN_KERNEL = r".*/feedforward_(intermediate|gate)_dense/kernel"
FEEDFORWARD_IN_BIAS = r".*/feedforward_(intermediate|gate)_dense/bias"
FEEDFORWARD_OUT_KERNEL = r".*/feedforward_output_dense/kernel"
# `TokenAndPositionEmbedding`'s token table, split over the vocabulary.
TOKEN_EMBEDDING = r".*/token_embedding/embeddings"


def layout_map(device_mesh, model_dim="model"):
    """A `LayoutMap` that shards our layers' weights over `model_dim`.

    Megatron-style tensor parallelism: the attention heads of the query,
    key and value projections and the matching input axis of the output
    projection; the feed-forward network's hidden units (intermediate and
    gate outputs, the output layer's input); the token embedding's
    vocabulary. Everything else is replicated. The regexes are this
    module's constants, documented above.

    Args:
        device_mesh: `keras.distribution.DeviceMesh`, the mesh the layouts
            refer to.
        model_dim: str, the mesh axis to shard over. Defaults to `"model"`.

    Returns:
        A `keras.distribution.LayoutMap`; pass it to
        `keras.distribution.ModelParallel(layout_map=...)`. It is a fresh,
        mutable map: add entries for your own layers with paths that none of
        ours match.

    Example:

    >>> import keras
    >>> mesh = keras.distribution.DeviceMesh(
    ...     (1, 1), ["batch", "model"], keras.distribution.list_devices()[:1]
    ... )
    >>> layouts = layout_map(mesh)
    >>> layouts["block/self_attention/query/kernel"].axes
    (None, 'model', None)
    >>> layouts["block/self_attention/output/kernel"].axes
    ('model', None, None)
    >>> layouts["block/feedforward_output_dense/kernel"].axes
    ('model', None)
    >>> layouts["block/self_attention_layer_norm/gamma"] is None
    True
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise TypeError(
            "Received an invalid value for argument `device_mesh`, expected "
            f"a keras.distribution.DeviceMesh. Received: {device_mesh!r}"
        )
    if model_dim not in device_mesh.axis_names:
        raise ValueError(
            "Received an invalid value for argument `model_dim`, expected "
            f"one of the mesh's axis names {list(device_mesh.axis_names)}. "
            f"Received: model_dim={model_dim!r}"
        )
    layouts = keras.distribution.LayoutMap(device_mesh)
    # (width, heads, head_dim): split the heads.
    layouts[ATTENTION_QUERY_KERNEL] = (None, model_dim, None)
    layouts[ATTENTION_QUERY_BIAS] = (model_dim, None)
    layouts[ATTENTION_KEY_VALUE_KERNEL] = (None, model_dim, None)
    layouts[ATTENTION_KEY_VALUE_BIAS] = (model_dim, None)
    # (heads, head_dim, width): split the heads, the contracted axis.
    layouts[ATTENTION_OUTPUT_KERNEL] = (model_dim, None, None)
    # (width, ff_dim): split the hidden units.
    layouts[FEEDFORWARD_IN_KERNEL] = (None, model_dim)
    layouts[FEEDFORWARD_IN_BIAS] = (model_dim,)
    # (ff_dim, width): split the hidden units, the contracted axis.
    layouts[FEEDFORWARD_OUT_KERNEL] = (model_dim, None)
    # (vocab, width): split the vocabulary.
    layouts[TOKEN_EMBEDDING] = (model_dim, None)
    return layouts
