"""The fused dense path (`keras.ops.dot_product_attention`, on JAX and
PyTorch) equals our own kernels, outputs and gradients, under every mask.

The test process runs TensorFlow (where the fused path is off: TensorFlow's
`dot_product_attention` is not fused, and ours is faster on a CPU), so each
backend runs in a subprocess that compares the two paths of the same layer
(`_kernels.use_fused(False)` switches the fused one off) and prints the
largest differences.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_selfattn.layers import _kernels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

SCRIPT = textwrap.dedent(
    """
    import json

    import keras
    import numpy as np
    from keras import ops

    from keras_selfattn import MultiHeadSelfAttention
    from keras_selfattn.layers import _kernels

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    B, T, D, N = 3, 7, 12, 4
    x = rng.normal(size=(B, T, D)).astype("float32")
    mask = np.ones((B, T), dtype=bool)
    mask[1, 4:] = False
    mask[2, :] = False  # a fully padded row
    CASES = {
        "padding": {},
        "causal": {"causal": True},
        "window_gqa": {"window": 2, "num_key_value_heads": 2},
        "causal_mqa": {"causal": True, "num_key_value_heads": 1},
    }
    backend = keras.backend.backend()
    # On a CPU the fused path is off by default (slower there): force it.
    default_on_cpu = _kernels._fused_backend()
    _kernels.use_fused(True)


    def loss_and_grads(layer, x):
        weights = [ops.convert_to_tensor(v) for v in layer.trainable_variables]

        def loss_fn(values, x):
            out, _ = layer.stateless_call(
                values, [v.value for v in layer.non_trainable_variables],
                x, mask=mask,
            )
            scale = ops.arange(1, D + 1, dtype="float32")
            return ops.sum(out * out * scale), out

        if backend == "jax":
            import jax

            (loss, out), grads = jax.value_and_grad(
                loss_fn, argnums=(0, 1), has_aux=True
            )(weights, ops.convert_to_tensor(x))
            grads = list(grads[0]) + [grads[1]]
        else:
            import torch

            xt = torch.tensor(x, requires_grad=True)
            ws = [w.detach().clone().requires_grad_(True) for w in weights]
            loss, out = loss_fn(ws, xt)
            loss.backward()
            grads = [w.grad for w in ws] + [xt.grad]
        return [ops.convert_to_numpy(out)] + [
            ops.convert_to_numpy(g) for g in grads
        ]


    result = {"backend": backend, "cases": {}, "default": default_on_cpu}
    for name, kwargs in CASES.items():
        layer = MultiHeadSelfAttention(N, attention_impl="dense", **kwargs)
        layer.build((None, T, D))
        calls = []
        original = _kernels.fused_attention

        def spy(*args, **kw):
            calls.append(1)
            return original(*args, **kw)

        _kernels.fused_attention = spy
        fused = loss_and_grads(layer, x)
        _kernels.fused_attention = original
        _kernels.use_fused(False)
        ours = loss_and_grads(layer, x)
        _kernels.use_fused(True)
        diffs = [float(np.max(np.abs(a - b))) for a, b in zip(fused, ours)]
        finite = all(bool(np.all(np.isfinite(a))) for a in fused)
        result["cases"][name] = {
            "fused_calls": len(calls),
            "max_diff": max(diffs),
            "finite": finite,
            "padded_row_zero": bool(np.all(fused[0][2] == 0.0)),
        }
    # A cached decoding step (one query against the cache) takes it too.
    layer = MultiHeadSelfAttention(N, causal=True, num_key_value_heads=2)
    full = ops.convert_to_numpy(layer(x))
    cache = layer.init_cache(B, T)
    steps = []
    for t in range(T):
        y, cache = layer(x[:, t : t + 1], cache=cache, cache_update_index=t)
        steps.append(ops.convert_to_numpy(y))
    result["cached_diff"] = float(
        np.max(np.abs(np.concatenate(steps, 1) - full))
    )
    print("RESULT " + json.dumps(result))
    """
)


def _run(backend):
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "CUDA_VISIBLE_DEVICES": "",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line[-1][len("RESULT ") :])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_fused_path_equals_our_kernels(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    result = _run(backend)
    assert result["backend"] == backend
    assert result["default"] is False  # off on a CPU unless forced
    for name, case in result["cases"].items():
        # The fused kernel really ran, once per call.
        assert case["fused_calls"] >= 1, name
        assert case["finite"], name
        assert case["padded_row_zero"], name
        assert case["max_diff"] < 2e-4, (name, case)
    assert result["cached_diff"] < 1e-5, result


def test_tensorflow_keeps_its_own_kernel():
    # On TensorFlow `dot_product_attention` is ordinary ops, slower on a
    # CPU than the grouped dense kernel: the fused path stays off, even
    # when forced.
    assert "tensorflow" not in _kernels.FUSED_BACKENDS
    previous = _kernels.use_fused(True)
    try:
        assert not _kernels._fused_backend()
    finally:
        _kernels.use_fused(previous)
