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
- `export` (TensorFlow only): `model.export()` reloads with
  `tf.saved_model.load` (two batch sizes) and `keras.layers.TFSMLayer`, with
  identical outputs; a masked SavedModel signature with `None` dimensions.
- `xla`: the backend's compiler (`tf.function(jit_compile=True)`,
  `jax.jit`) equals eager, with a variable sequence length.

Every check but `export` is backend-neutral: gradients go through
`gradients(...)`, a small per-backend helper (TensorFlow's `GradientTape`,
`jax.grad`, `torch.autograd.grad`) around a `stateless_call`, so the same
checks run under `KERAS_BACKEND=jax` and `torch` (tests/test_backends.py
runs them there). On another backend `export` skips with the reason, and
so does `xla` on PyTorch (Keras compiles with `torch.compile` there, which is
not XLA). Each check that passes is recorded in `RAN`, which
tests/test_harness_coverage.py reads to check that every public layer went
through the harness in the session.
"""

import dataclasses
import functools
import inspect
import json
import os
import tempfile

import keras
import numpy as np
import pytest
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


# --------------------------------------------------------------------------
# The per-backend pieces: gradients and the compiler.


def _backend():
    return keras.backend.backend()


def gradients(loss_fn, values):
    """The gradients of `loss_fn(values)` (a scalar) with respect to each of
    `values` (a list of tensors or arrays), on the current backend.

    An input the loss does not depend on gets `None` on TensorFlow and
    PyTorch and zeros on JAX; the checks refuse both.
    """
    backend = _backend()
    values = [ops.convert_to_tensor(v) for v in values]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = loss_fn(values)
        return tape.gradient(loss, values)
    if backend == "jax":
        import jax

        return jax.grad(loss_fn)(values)
    if backend == "torch":
        import torch

        values = [v.detach().requires_grad_(True) for v in values]
        loss = loss_fn(values)
        return torch.autograd.grad(loss, values, allow_unused=True)
    raise NotImplementedError(f"no gradients on the {backend} backend")


def _variable_values(layer):
    return (
        [v.value for v in layer.trainable_variables],
        [v.value for v in layer.non_trainable_variables],
    )


def compiled(layer):
    """`layer`'s call, compiled with XLA: `tf.function(jit_compile=True)` on
    TensorFlow, `jax.jit` of a `stateless_call` on JAX (the layer must be
    built). Skips elsewhere: on PyTorch, Keras' `jit_compile=True` means
    `torch.compile`, not XLA."""
    backend = _backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(layer, jit_compile=True)
    if backend == "jax":
        import jax

        @jax.jit
        def pure(trainable, non_trainable, args, kwargs):
            outputs, _ = layer.stateless_call(
                trainable, non_trainable, *args, **kwargs
            )
            return outputs

        def call(*args, **kwargs):
            return pure(*_variable_values(layer), args, kwargs)

        return call
    pytest.skip(f"no XLA compiler on the {backend} backend")


def _loss(out):
    # Square plus identity: a plain sum would not do, since the features of
    # a normalized output sum to a constant (a zero gradient behind it).
    return ops.sum(ops.square(out)) + ops.sum(out)


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
    trainable, non_trainable = _variable_values(model)

    def loss_fn(values):
        out, _ = model.stateless_call(
            values, non_trainable, inputs, training=True
        )
        return _loss(out)

    grads = gradients(loss_fn, trainable)
    out = model(inputs)
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
    if not np.issubdtype(np.asarray(inputs).dtype, np.floating):
        return  # integer inputs have no gradient
    (grad,) = gradients(lambda v: ops.sum(model(v[0], training=True)), [inputs])
    assert grad is not None, "no input gradient"
    grad = to_numpy(grad)
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
        (grad,) = gradients(
            lambda v: _loss(layer(v[0], mask=mask, **kwargs)), [args]
        )
        assert grad is not None, "no input gradient"
        grad = to_numpy(grad)
        assert np.all(np.isfinite(grad)), "non-finite gradient"
        assert np.all(grad[empty_rows] == 0.0), "gradient into empty rows"
    # The mask is also honoured when it only rides on the input tensor.
    x = ops.convert_to_tensor(args)
    _masking.set_keras_mask(x, ops.convert_to_tensor(mask))
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
    # TensorFlow only (the SavedModel format, `tf.saved_model.load`):
    # `CHECKS["export"]` skips on another backend.
    import tensorflow as tf

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
    import tensorflow as tf

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
    import tensorflow as tf

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
    jitted = compiled(model)
    assert_close(jitted(inputs), eager, 1e-4, "jit_compile")
    # Variable length: a shorter sequence through the same model.
    shorter = (
        [x[:, :3] for x in inputs]
        if isinstance(inputs, list)
        else inputs[:, :3]
    )
    assert_close(jitted(shorter), to_numpy(model(shorter)), 1e-4, "jit shorter")
    if spec.mask is not None:
        _check_masked_xla(spec)


def _check_masked_xla(spec):
    """A masked call compiled, then run at two lengths: on TensorFlow one
    trace for a `None` length; on JAX one trace per length."""
    layer = spec.make()
    if _backend() == "tensorflow":
        import tensorflow as tf

        args, kwargs, mask, names, signature = _masked_call_signature(spec)

        @tf.function(jit_compile=True, input_signature=signature)
        def jitted(x, m, *extras):
            return layer(x, mask=m, **dict(zip(names, extras, strict=True)))

    else:
        args, kwargs = spec.call_inputs()
        mask = np.asarray(spec.mask, dtype=bool)
        layer(args, mask=mask, **kwargs)  # build before compiling
        call = compiled(layer)
        names = list(kwargs)

        def jitted(x, m, *extras):
            return call(x, mask=m, **dict(zip(names, extras, strict=True)))

    for length in (mask.shape[1], 3):
        cut = {n: v[:, :length] for n, v in kwargs.items()}
        expected = to_numpy(
            layer(args[:, :length], mask=mask[:, :length], **cut)
        )
        actual = jitted(args[:, :length], mask[:, :length], *cut.values())
        assert_close(actual, expected, 1e-4, f"masked jit length {length}")


# Checks that need TensorFlow itself; the others run on every backend.
TENSORFLOW_ONLY = ("export",)

# The (layer class, check name) pairs that passed in this process.
RAN = set()
# How many tests of tests/layers/ the session selected (set by conftest.py).
LAYER_TESTS_SELECTED = pytest.StashKey[int]()
# Whether the session selected the coverage test (set by conftest.py).
COVERAGE_SELECTED = pytest.StashKey[bool]()


def public_layers():
    """The layer classes `keras_selfattn` exports."""
    import keras_selfattn

    return [
        getattr(keras_selfattn, name)
        for name in keras_selfattn.__all__
        if isinstance(getattr(keras_selfattn, name), type)
        and issubclass(getattr(keras_selfattn, name), keras.layers.Layer)
    ]


def missing_checks(ran):
    """{layer name: [checks]} of the public layers' checks for this backend
    that are not among `ran`, (layer class name, check name) pairs."""
    checks = checks_on_this_backend()
    missing = {
        cls.__name__: [c for c in checks if (cls.__name__, c) not in ran]
        for cls in public_layers()
    }
    return {name: names for name, names in missing.items() if names}


def _unavailable(name):
    """Why check `name` cannot run on this backend, or `None`."""
    backend = _backend()
    if name in TENSORFLOW_ONLY and backend != "tensorflow":
        return f"the `{name}` check is TensorFlow-only (SavedModel)"
    if name == "xla" and backend == "torch":
        # Keras' `jit_compile=True` means `torch.compile` on PyTorch.
        return "no XLA compiler on the torch backend"
    return None


def _recorded(name, check):
    """`check`, skipped where it cannot run on this backend, recorded in
    `RAN` when it passes."""

    @functools.wraps(check)
    def run(spec):
        reason = _unavailable(name)
        if reason:
            pytest.skip(reason)
        check(spec)
        RAN.add((spec.cls, name))

    return run


def checks_on_this_backend():
    """The names of the checks that run on the current backend."""
    return [name for name in _CHECKS if _unavailable(name) is None]


_CHECKS = {
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

CHECKS = {name: _recorded(name, check) for name, check in _CHECKS.items()}


# Cheap enough to run for every variant of a layer on every backend; the
# others (a second precision, a `.keras` file, export, a compile) run on
# JAX and PyTorch once per layer, for its main spec.
LIGHT_CHECKS = ("config", "weights", "shapes", "train", "masking")


def check_params(names=None, *, variant=False):
    """Check names (all by default) as `pytest.param`s for a contract
    test, marked `all_backends` where tests/test_backends.py also runs them
    on JAX and PyTorch: every check for a layer's main spec, the light ones
    for a `variant`."""
    everywhere = LIGHT_CHECKS if variant else tuple(_CHECKS)
    return [
        pytest.param(name, marks=pytest.mark.all_backends)
        if name in everywhere
        else name
        for name in (names or _CHECKS)
    ]


def run_layer_test(spec, checks=None):
    """Run the named checks (all that run on this backend by default) on
    `spec`."""
    for name in checks or checks_on_this_backend():
        CHECKS[name](spec)
