"""Quantized sub-layers in configs: Keras' `DTypePolicyMap`, keyed by paths
relative to the layer that owns the sub-layers.

`model.quantize(mode)` quantizes the leaf layers (`Dense`, `EinsumDense`,
`Embedding`) and records the mode in their dtype policies. A layer that
creates such sub-layers in `build` must carry those policies in its config,
or a reloaded model rebuilds them in float and cannot take the quantized
weights. Keras' recipe (`DTypePolicyMap` keyed by `layer.path`) breaks when
the path changes between saving and loading (a `Sequential` model's layers
are reloaded under a new name scope), so the keys here are relative to the
owning layer, and the owner hands each sub-layer its own policy.
"""

import keras

_PolicyMap = keras.dtype_policies.DTypePolicyMap


def sublayer_dtype(layer, name):
    """The dtype policy for `layer`'s sub-layer `name`.

    Args:
        layer: the owning layer, whose `dtype_policy` may be a map loaded
            from a config written by `config_with_quantized`.
        name: str, the sub-layer's name.

    Returns:
        A policy: the sub-layer's own entry, a map of the entries below it
        (for a sub-layer that has sub-layers), or the default policy.
    """
    policy = layer.dtype_policy
    if not isinstance(policy, _PolicyMap):
        return policy
    keys = list(policy.keys())
    prefix = f"{name}/"
    nested = {
        key[len(prefix) :]: policy[key]
        for key in keys
        if key.startswith(prefix)
    }
    if nested:
        return _PolicyMap(
            default_policy=policy.default_policy, policy_map=nested
        )
    if name in keys:
        return policy[name]
    return policy.default_policy


def config_with_quantized(layer, config):
    """`config` with `dtype` a map of `layer`'s quantized sub-layers'
    policies (unchanged when none is quantized)."""
    if not layer.built:
        return config
    entries = {}
    for sublayer in layer._flatten_layers(include_self=False):
        if sublayer.quantization_mode is None or not sublayer.path:
            continue
        relative = sublayer.path.removeprefix(f"{layer.path}/")
        entries[relative] = sublayer.dtype_policy
    if not entries:
        return config
    policy = layer.dtype_policy
    if isinstance(policy, _PolicyMap):
        policy = policy.default_policy
    return {
        **config,
        "dtype": keras.dtype_policies.serialize(
            _PolicyMap(default_policy=policy, policy_map=entries)
        ),
    }


def quantize_sublayers(layer, mode, type_check, config):
    """`layer.quantize(...)` for a layer with sub-layers: quantize each
    leaf sub-layer that Keras can quantize (as `Model.quantize` does)."""
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} is not built: call it once or `build(...)` "
            "before `quantize` (its weights' sizes depend on the input width)."
        )
    leaves = [
        sublayer
        for sublayer in layer._flatten_layers(include_self=False)
        if isinstance(sublayer, _QUANTIZABLE)
        and len(list(sublayer._flatten_layers())) == 1
    ]
    done = [leaf.name for leaf in leaves if leaf.quantization_mode]
    if done:
        raise ValueError(
            f"Layer {layer.name!r} is already quantized (its sub-layers "
            f"{done} are): quantize a float layer. Received: mode={mode}"
        )
    for leaf in leaves:
        leaf.quantize(mode, type_check=type_check, config=config)


_QUANTIZABLE = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Embedding,
)
