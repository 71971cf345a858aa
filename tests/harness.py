"""One contract, every layer: the shared layer-test harness.

A layer test describes its layer once with a `LayerSpec` and runs every
check with `run_layer_test(spec)` (or parametrizes over `CHECKS`, so each
check reports on its own). The checks:

- `config`: `get_config` is JSON-serializable, `from_config` rebuilds an
  identical config, and every constructor argument appears in the config.
- `weights`: trainable / non-trainable weight counts after build.
- `shapes`: symbolic (functional) output shapes equal eager ones, and
  `compute_output_shape` agrees.
- `train`: every trainable weight gets a finite, non-zero gradient, and one
  `model.fit` step runs.
- `mixed_precision`: `mixed_float16` and `mixed_bfloat16` stay finite and
  close to float32 with the same weights.
- `masking`: the output carries the input mask; random values at padded
  positions leave unpadded outputs unchanged; (for attention layers) padded
  positions and fully padded rows give zeros with finite gradients.
- `saving`: `.keras` save/load in functional, Sequential and subclassed
  models gives identical outputs, with no `custom_objects`.
- `export`: `model.export()` reloads with `tf.saved_model.load` (two batch
  sizes) and `keras.layers.TFSMLayer`, with identical outputs.
- `xla`: `jit_compile=True` equals eager, with a variable sequence length.
"""

import dataclasses
import inspect
import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_selfattn.layers import _masking


@dataclasses.dataclass
class LayerSpec:
    """How to build and feed one layer for the harness.

    Attributes:
        cls: the layer class.
        init_kwargs: constructor arguments.
        input_data: the main input, a NumPy array `(batch, seq_len, ...)`.
        extra_inputs: more tensors passed to `call` by keyword (for example
            `encoder_outputs`); each becomes a named `keras.Input`.
        mask: a `(batch, seq_len)` bool padding mask for the masking checks,
            with at least one row fully padded; `None` skips them.
        expected_num_trainable_weights: trainable weights after build.
        expected_num_non_trainable_weights: non-trainable weights.
        zeros_at_padding: whether padded positions must output zeros (true of
            the attention layers and blocks).
        values_at_padding: whether padded positions may hold arbitrary values
            (false for token ids, where padding *is* the value 0).
        float_tolerance: tolerance for float32 comparisons.
        mixed_tolerance: tolerance for mixed precision against float32.
    """

    cls: type
    init_kwargs: dict
    input_data: np.ndarray
    extra_inputs: dict = dataclasses.field(default_factory=dict)
    mask: np.ndarray = None
    expected_num_trainable_weights: int = None
    expected_num_non_trainable_weights: int = 0
    zeros_at_padding: bool = True
    values_at_padding: bool = True
    float_tolerance: float = 1e-5
    mixed_tolerance: float = 5e-2

    def make(self, **overrides):
        return self.cls(**{**self.init_kwargs, **overrides})

    def call_inputs(self):
        """The inputs as `(args, kwargs)` NumPy structures."""
        return self.input_data, dict(self.extra_inputs)

    def symbolic_inputs(self, variable_length=True):
        """Named `keras.Input`s: the main one and one per extra input."""

        def make_input(name, array):
            shape = list(array.shape[1:])
            if variable_length and shape:
                shape[0] = None
            return keras.Input(
                shape=tuple(shape), dtype=str(array.dtype), name=name
            )

        main = make_input("inputs", self.input_data)
        extras = {k: make_input(k, v) for k, v in self.extra_inputs.items()}
        return main, extras


def weight_name(weight):
    """A layer weight's short name: `query_kernel` for the attention
    projections' `.../query/kernel`, else the last part of its path."""
    parts = weight.path.split("/")
    if parts[-1] in ("kernel", "bias") and len(parts) > 1:
        if parts[-2] in ("query", "key", "value", "output"):
            return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


def to_numpy(x):
    return ops.convert_to_numpy(x)


def assert_close(actual, expected, tol, what=""):
    actual = np.asarray(to_numpy(actual), dtype=np.float64)
    expected = np.asarray(to_numpy(expected), dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    diff = np.max(np.abs(actual - expected)) if actual.size else 0.0
    assert diff <= tol, f"{what}: max abs diff {diff} > {tol}"


def functional_model(spec, layer=None, variable_length=True):
    """`inputs (+ extras) -> layer -> output` as a functional model."""
    layer = layer or spec.make()
    main, extras = spec.symbolic_inputs(variable_length)
    outputs = layer(main, **extras)
    inputs = [main, *extras.values()] if extras else main
    return keras.Model(inputs, outputs)


def model_inputs(spec):
    """The NumPy inputs matching `functional_model(spec)`."""
    if spec.extra_inputs:
        return [spec.input_data, *spec.extra_inputs.values()]
    return spec.input_data


class _Subclassed(keras.Model):
    """A subclassed model wrapping one layer (for the saving check)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs):
        return self.layer(inputs)

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **config)


keras.saving.register_keras_serializable(package="keras_selfattn_tests")(
    _Subclassed
)


# --------------------------------------------------------------------------
# The checks.


def check_config(spec):
    layer = spec.make()
    config = layer.get_config()
    # The config must survive JSON, as it does inside a `.keras` file.
    config = json.loads(json.dumps(config))
    rebuilt = spec.cls.from_config(config)
    assert rebuilt.get_config() == layer.get_config()
    params = inspect.signature(spec.cls.__init__).parameters
    names = [
        n
        for n, p in params.items()
        if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    missing = [n for n in names if n not in config]
    assert not missing, f"constructor arguments missing from config: {missing}"
    for name in spec.init_kwargs:
        assert name in config, name


def check_weights(spec):
    model = functional_model(spec)
    layer = model.layers[-1]
    if spec.expected_num_trainable_weights is not None:
        assert (
            len(layer.trainable_weights) == spec.expected_num_trainable_weights
        ), [w.path for w in layer.trainable_weights]
    assert (
        len(layer.non_trainable_weights)
        == spec.expected_num_non_trainable_weights
    ), [w.path for w in layer.non_trainable_weights]


def check_shapes(spec):
    layer = spec.make()
    main, extras = spec.symbolic_inputs()
    symbolic = layer(main, **extras)
    args, kwargs = spec.call_inputs()
    eager = layer(args, **kwargs)
    sym_shape = tuple(symbolic.shape)
    eager_shape = tuple(eager.shape)
    assert len(sym_shape) == len(eager_shape)
    for s, e in zip(sym_shape, eager_shape, strict=True):
        assert s is None or s == e, (sym_shape, eager_shape)
    assert sym_shape[-1] == eager_shape[-1]
    extra_shapes = [v.shape for v in spec.extra_inputs.values()]
    computed = layer.compute_output_shape(spec.input_data.shape, *extra_shapes)
    assert tuple(computed) == eager_shape


def check_train(spec):
    model = functional_model(spec)
    inputs = model_inputs(spec)
    if not model.trainable_weights:
        # Nothing to train (`fit` would warn): gradients must still flow.
        _check_input_gradient(model, inputs)
        return
    with tf.GradientTape() as tape:
        out = model(inputs, training=True)
        loss = tf.reduce_sum(tf.square(out)) + tf.reduce_sum(out)
    grads = tape.gradient(loss, model.trainable_weights)
    for weight, grad in zip(model.trainable_weights, grads, strict=True):
        assert grad is not None, f"no gradient for {weight.path}"
        g = to_numpy(grad)
        assert np.all(np.isfinite(g)), f"non-finite gradient for {weight.path}"
        assert np.any(g != 0), f"zero gradient for {weight.path}"
    target = np.zeros(tuple(out.shape), dtype="float32")
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(inputs, target, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _check_input_gradient(model, inputs):
    x = tf.convert_to_tensor(inputs)
    if not x.dtype.is_floating:
        return  # integer inputs have no gradient
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x, training=True))
    grad = to_numpy(tape.gradient(loss, x))
    assert np.all(np.isfinite(grad)), "non-finite input gradient"
    assert np.any(grad != 0), "zero input gradient"


def check_mixed_precision(spec):
    reference = functional_model(spec)
    expected = to_numpy(reference(model_inputs(spec)))
    for policy in ("mixed_float16", "mixed_bfloat16"):
        layer = spec.make(dtype=policy)
        model = functional_model(spec, layer)
        model.set_weights(reference.get_weights())
        out = model(model_inputs(spec))
        expected_dtype = policy.split("_")[1]
        actual_dtype = keras.backend.standardize_dtype(out.dtype)
        assert actual_dtype == expected_dtype, (policy, actual_dtype)
        values = to_numpy(ops.cast(out, "float32"))
        assert np.all(np.isfinite(values)), policy
        scale = max(1.0, float(np.max(np.abs(expected))))
        tol = spec.mixed_tolerance * (4 if policy == "mixed_bfloat16" else 1)
        assert_close(values / scale, expected / scale, tol, policy)
        if spec.mask is not None:
            # With padding (and a fully padded row): the masking constant and
            # softmax must stay finite in low precision.
            _check_masked_mixed(spec, reference.layers[-1], layer, scale, tol)


def _check_masked_mixed(spec, reference_layer, layer, scale, tol):
    mask = np.asarray(spec.mask, dtype=bool)
    args, kwargs = spec.call_inputs()
    expected = to_numpy(reference_layer(args, mask=mask, **kwargs))
    out = to_numpy(ops.cast(layer(args, mask=mask, **kwargs), "float32"))
    assert np.all(np.isfinite(out)), "non-finite output with a mask"
    per_position = out.ndim >= 3 and out.shape[1] == mask.shape[1]
    kept = mask if per_position else slice(None)  # pooled: every row
    assert_close(out[kept] / scale, expected[kept] / scale, tol, "masked")
    if spec.zeros_at_padding and per_position:
        assert np.all(out[~mask] == 0.0), "padded outputs must be zero"


def check_masking(spec):
    if spec.mask is None:
        return
    mask = np.asarray(spec.mask, dtype=bool)
    assert not mask.all(axis=1).all(), "spec.mask needs a padded position"
    empty_rows = ~mask.any(axis=1)
    assert empty_rows.any(), "spec.mask needs a fully padded row"
    layer = spec.make()
    args, kwargs = spec.call_inputs()
    out = layer(args, mask=mask, **kwargs)
    values = to_numpy(out)
    # Per-position outputs keep the mask; pooled outputs consume it.
    per_position = values.ndim >= 3 and values.shape[1] == mask.shape[1]
    kept = mask if per_position else np.ones(values.shape[:1], dtype=bool)
    out_mask = _masking.get_keras_mask(out)
    if per_position:
        assert out_mask is not None, "output lost the mask"
        np.testing.assert_array_equal(to_numpy(out_mask), mask)
    else:
        assert out_mask is None, "a pooled output must not carry a mask"
    if spec.values_at_padding:
        rng = np.random.default_rng(0)
        noisy = np.array(args, copy=True)
        noise = rng.normal(size=noisy.shape).astype(noisy.dtype) * 10
        noisy[~mask] = noise[~mask]
        out2 = to_numpy(layer(noisy, mask=mask, **kwargs))
        assert_close(
            out2[kept], values[kept], spec.float_tolerance, "padding leaked"
        )
    if spec.zeros_at_padding:
        padded = ~mask if per_position else empty_rows
        assert np.all(values[padded] == 0.0), "padded outputs must be zero"
        x = tf.convert_to_tensor(args)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, mask=mask, **kwargs)
            loss = tf.reduce_sum(tf.square(y)) + tf.reduce_sum(y)
        grad = to_numpy(tape.gradient(loss, x))
        assert np.all(np.isfinite(grad)), "non-finite gradient"
        assert np.all(grad[empty_rows] == 0.0), "gradient into empty rows"
    # The mask is also honoured when it only rides on the input tensor.
    x = tf.convert_to_tensor(args)
    _masking.set_keras_mask(x, tf.constant(mask))
    out3 = to_numpy(layer(x, **kwargs))
    assert_close(out3, values, spec.float_tolerance, "mask from _keras_mask")


def check_saving(spec):
    inputs = model_inputs(spec)
    with tempfile.TemporaryDirectory() as tmp:
        models = {"functional": functional_model(spec)}
        if not spec.extra_inputs:
            main, _ = spec.symbolic_inputs()
            models["sequential"] = keras.Sequential([main, spec.make()])
            sub = _Subclassed(spec.make())
            sub(spec.input_data)
            models["subclassed"] = sub
        for kind, model in models.items():
            expected = to_numpy(model(inputs))
            path = os.path.join(tmp, f"{kind}.keras")
            model.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
            assert_close(loaded(inputs), expected, 1e-6, f"{kind} reload")
            names = [type(x).__name__ for x in loaded.layers]
            assert spec.cls.__name__ in names or kind == "subclassed", names


def check_export(spec):
    model = functional_model(spec)
    inputs = model_inputs(spec)
    expected = to_numpy(model(inputs))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "exported")
        model.export(path, verbose=False)
        reloaded = tf.saved_model.load(path)
        assert_close(reloaded.serve(inputs), expected, 1e-5, "serve")
        # A different batch size through the same signature.
        single = (
            [x[:1] for x in inputs] if isinstance(inputs, list) else inputs[:1]
        )
        assert_close(reloaded.serve(single), expected[:1], 1e-5, "batch 1")
        tfsm = keras.layers.TFSMLayer(path, call_endpoint="serve")
        assert_close(tfsm(inputs), expected, 1e-5, "TFSMLayer")
    if spec.mask is not None:
        _check_masked_export(spec)


def _masked_call_signature(spec):
    """The spec's call inputs and mask, with a `tf.function` signature of
    `None` batch and length: `(x, mask, *kwargs values)`."""
    args, kwargs = spec.call_inputs()
    mask = np.asarray(spec.mask, dtype=bool)
    names = list(kwargs)

    def spec_of(array):
        shape = (None, None) + tuple(array.shape[2:])
        return tf.TensorSpec(shape, tf.as_dtype(array.dtype))

    signature = [spec_of(args), tf.TensorSpec((None, None), tf.bool)]
    signature += [spec_of(kwargs[n]) for n in names]
    return args, kwargs, mask, names, signature


def _check_masked_export(spec):
    """A SavedModel whose signature takes the padding mask: the reloaded
    function gives the eager masked outputs, for `None` batch and length."""
    layer = spec.make()
    args, kwargs, mask, names, signature = _masked_call_signature(spec)
    expected = to_numpy(layer(args, mask=mask, **kwargs))
    module = tf.Module()
    module.layer = layer

    @tf.function(input_signature=signature)
    def serve(x, m, *extras):
        return layer(x, mask=m, **dict(zip(names, extras, strict=True)))

    module.serve = serve
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp)
        reloaded = tf.saved_model.load(tmp)
        actual = reloaded.serve(args, mask, *kwargs.values())
        assert_close(actual, expected, 1e-5, "masked export")
        first = reloaded.serve(
            args[:1], mask[:1], *(v[:1] for v in kwargs.values())
        )
        assert_close(first, expected[:1], 1e-5, "masked export, batch 1")


def check_xla(spec):
    model = functional_model(spec)
    inputs = model_inputs(spec)
    eager = to_numpy(model(inputs))
    compiled = tf.function(model, jit_compile=True)
    assert_close(compiled(inputs), eager, 1e-4, "jit_compile")
    # Variable length: a shorter sequence through the same model.
    shorter = (
        [x[:, :3] for x in inputs]
        if isinstance(inputs, list)
        else inputs[:, :3]
    )
    assert_close(
        compiled(shorter), to_numpy(model(shorter)), 1e-4, "jit shorter"
    )
    if spec.mask is not None:
        _check_masked_xla(spec)


def _check_masked_xla(spec):
    """A masked call compiled once for a `None` length, then two lengths."""
    layer = spec.make()
    args, kwargs, mask, names, signature = _masked_call_signature(spec)

    @tf.function(jit_compile=True, input_signature=signature)
    def compiled(x, m, *extras):
        return layer(x, mask=m, **dict(zip(names, extras, strict=True)))

    for length in (mask.shape[1], 3):
        cut = {n: v[:, :length] for n, v in kwargs.items()}
        expected = to_numpy(
            layer(args[:, :length], mask=mask[:, :length], **cut)
        )
        actual = compiled(args[:, :length], mask[:, :length], *cut.values())
        assert_close(actual, expected, 1e-4, f"masked jit length {length}")


CHECKS = {
    "config": check_config,
    "weights": check_weights,
    "shapes": check_shapes,
    "train": check_train,
    "mixed_precision": check_mixed_precision,
    "masking": check_masking,
    "saving": check_saving,
    "export": check_export,
    "xla": check_xla,
}


def run_layer_test(spec, checks=None):
    """Run the named checks (all by default) on `spec`."""
    for name in checks or CHECKS:
        CHECKS[name](spec)
