"""Our rotary embedding and ALiBi slopes against KerasHub's, on the same data.

Four checks, each printed as a table row with the largest absolute
difference:

1. `keras_selfattn.RotaryEmbedding` vs `keras_hub.layers.RotaryEmbedding`
   on the same random tensors: 3-D and 4-D inputs, other sequence axes,
   `start_index`, `max_wavelength`, `scaling_factor`, explicit
   `positions`.
2. `MultiHeadSelfAttention(position_embedding="rotary", causal=True)` vs
   the same attention written out in NumPy with the same weights, whose
   queries and keys `(B, T, N, H)` are rotated by KerasHub's layer.
3. `keras_selfattn.layers._positions.alibi_slopes(n)` vs KerasHub's
   `AlibiBias` slopes (`alibi_bias_max=8`) for `n = 1 .. 16`.
4. Causal softmax probabilities with our ALiBi bias (`-m_h |i - j|`) vs
   with `AlibiBias` (`m_h (j - T + 1)`, the same up to a constant per
   row, which the softmax removes under a causal mask).

KerasHub is imported when it works (`pip install keras-hub`); otherwise
its two module files, `rotary_embedding.py` and `alibi_bias.py`, are loaded
by path from `--kerashub-src` (a folder holding `keras_hub/src/layers/
modeling/`, e.g. an unpacked wheel, or the `modeling` folder itself), with
their `keras_hub_export` decorator stubbed out: the package's own
`__init__` needs `tokenizers` and more.

Usage:

    python benchmarks/check_kerashub_positions.py
    python benchmarks/check_kerashub_positions.py --kerashub-src /tmp/khub
"""

import argparse
import importlib.util
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_selfattn import MultiHeadSelfAttention  # noqa: E402
from keras_selfattn import RotaryEmbedding  # noqa: E402
from keras_selfattn.layers import _kernels  # noqa: E402
from keras_selfattn.layers import _positions  # noqa: E402

MODULES = ("rotary_embedding", "alibi_bias")
MODELING = os.path.join("keras_hub", "src", "layers", "modeling")
# Rotary cases: (input shape, RotaryEmbedding kwargs, call kwargs).
ROTARY_CASES = (
    ((2, 7, 16), {}, {}),
    ((2, 9, 4, 32), {}, {}),
    ((2, 9, 4, 32), {}, {"start_index": 5}),
    ((1, 6, 3, 64), {}, {"start_index": 1000}),
    ((2, 9, 4, 32), {"max_wavelength": 500000}, {"start_index": 3}),
    ((2, 9, 4, 32), {"scaling_factor": 4.0}, {"start_index": 17}),
    (
        (2, 9, 4, 32),
        {"max_wavelength": 1000, "scaling_factor": 2.5},
        {"start_index": 100},
    ),
    ((3, 4, 11, 8), {"sequence_axis": 2}, {"start_index": 2}),
    ((2, 8, 5, 6), {"sequence_axis": 2, "feature_axis": 1}, {}),
    ((2, 9, 4, 32), {}, {"positions": np.arange(9) * 3 + 7}),
)
ROTARY_TOLERANCE = 1e-5
SLOPE_TOLERANCE = 1e-7  # relative: float32 rounding of float64 slopes


def _module_path(src, name):
    for folder in (os.path.join(src, MODELING), src):
        path = os.path.join(folder, f"{name}.py")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{name}.py neither in {os.path.join(src, MODELING)} nor in {src}"
    )


def load_from_source(src):
    """`(RotaryEmbedding, AlibiBias)` loaded from KerasHub's module files.

    Each file starts with `from keras_hub.src.api_export import
    keras_hub_export` and decorates its class with it; a stub module with
    an identity decorator stands in for the package while they load.
    """
    stub_names = ("keras_hub", "keras_hub.src", "keras_hub.src.api_export")
    saved = {name: sys.modules.get(name) for name in stub_names}
    for name in stub_names:
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so that submodules resolve
        sys.modules[name] = module
    sys.modules["keras_hub.src.api_export"].keras_hub_export = (
        lambda *args, **kwargs: lambda obj: obj
    )
    try:
        classes = {}
        for name in MODULES:
            spec = importlib.util.spec_from_file_location(
                f"_kerashub_{name}", _module_path(src, name)
            )
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            classes[name] = module
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return (
        classes["rotary_embedding"].RotaryEmbedding,
        classes["alibi_bias"].AlibiBias,
    )


def kerashub_layers(src):
    """`(RotaryEmbedding, AlibiBias, where they came from)`."""
    try:
        import keras_hub
    except Exception as error:  # ImportError, or a broken dependency
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        rotary, alibi = load_from_source(src)
        return rotary, alibi, f"module files in {src} ({reason})"
    return (
        keras_hub.layers.RotaryEmbedding,
        keras_hub.layers.AlibiBias,
        f"keras_hub {keras_hub.__version__}",
    )


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def check_rotary(theirs_cls, rng):
    rows = []
    for shape, layer_kwargs, call_kwargs in ROTARY_CASES:
        x = rng.normal(size=shape).astype("float32")
        ours = to_numpy(RotaryEmbedding(**layer_kwargs)(x, **call_kwargs))
        theirs = to_numpy(theirs_cls(**layer_kwargs)(x, **call_kwargs))
        diff = float(np.max(np.abs(ours - theirs)))
        shown = {**layer_kwargs, **call_kwargs}
        if "positions" in shown:
            shown["positions"] = "3t+7"
        label = ", ".join([str(shape)] + [f"{k}={v}" for k, v in shown.items()])
        rows.append((f"rotary {label}", diff, ROTARY_TOLERANCE))
    return rows


def check_rotary_attention(theirs_cls, rng, batch=2, length=11, width=24):
    """The layer's output vs NumPy attention with KerasHub's rotation."""
    heads = 3
    layer = MultiHeadSelfAttention(
        heads, causal=True, position_embedding="rotary", attention_impl="dense"
    )
    x = rng.normal(size=(batch, length, width)).astype("float32")
    layer(x)
    for target in ("query", "key", "value", "output"):
        # Non-zero biases, so that a bias added after the rotation shows.
        bias = getattr(layer, f"{target}_bias")
        bias.assign(rng.normal(size=bias.shape).astype("float32") * 0.5)
    ours = to_numpy(layer(x))

    def project(target):
        kernel = to_numpy(getattr(layer, f"{target}_kernel"))
        bias = to_numpy(getattr(layer, f"{target}_bias"))
        return np.einsum("btd,dnh->btnh", x, kernel) + bias  # (B, T, N, H)

    rope = theirs_cls()
    query = to_numpy(rope(project("query")))  # rotated (B, T, N, H)
    key = to_numpy(rope(project("key")))
    value = project("value")
    key_dim = query.shape[-1]
    scores = np.einsum("bqnh,bknh->bnqk", query, key) / np.sqrt(key_dim)
    causal = np.tril(np.ones((length, length), dtype=bool))
    scores = np.where(causal, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("bnqk,bknv->bqnv", probs, value)
    theirs = np.einsum(
        "bqnv,nvo->bqo", context, to_numpy(layer.output_kernel)
    ) + to_numpy(layer.output_bias)
    diff = float(np.max(np.abs(ours - theirs)))
    label = (
        f"MultiHeadSelfAttention rotary, causal, ({batch}, {length}, "
        f"{width}), {heads} heads, vs NumPy + KerasHub rotation"
    )
    return [(label, diff, 1e-4)]


def kerashub_slopes(alibi_cls, n):
    return np.asarray(alibi_cls()._get_slopes(n), dtype="float64")


def check_slopes(alibi_cls):
    rows = []
    for n in range(1, 17):
        ours = _positions.alibi_slopes(n).astype("float64")
        theirs = kerashub_slopes(alibi_cls, n)
        if ours.shape != theirs.shape:
            rows.append((f"ALiBi slopes n={n}", float("inf"), 0.0, n, 0))
            continue
        diff = float(np.max(np.abs(ours - theirs)))
        relative = float(np.max(np.abs(ours - theirs) / theirs))
        same32 = int(np.sum(ours == theirs.astype("float32")))
        rows.append((f"ALiBi slopes n={n}", diff, relative, n, same32))
    return rows


def check_alibi_softmax(alibi_cls, rng, heads=8, length=13):
    """Causal softmax with our bias vs with KerasHub's `AlibiBias`."""
    scores = rng.normal(size=(2, heads, length, length)).astype("float32")
    causal = np.tril(np.ones((length, length), dtype=bool))
    mod = _kernels.ScoreMod(_positions.alibi_slopes(heads))
    positions = ops.arange(length, dtype="int32")
    ours = scores + to_numpy(mod.bias(positions, positions))
    theirs = to_numpy(alibi_cls()(scores))

    def softmax(s):
        s = np.where(causal, s.astype("float64"), -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True)

    diff = float(np.max(np.abs(softmax(ours) - softmax(theirs))))
    label = f"ALiBi causal softmax, {heads} heads, {length} x {length}"
    return [(label, diff, 1e-6)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kerashub-src",
        default="/tmp/khub",
        help="folder with keras_hub/src/layers/modeling/ (or that folder "
        "itself), used when `import keras_hub` fails",
    )
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    rotary_cls, alibi_cls, origin = kerashub_layers(args.kerashub_src)
    print(f"Keras {keras.__version__}; KerasHub from {origin}\n")
    ok = True
    print("| check | max abs diff | tolerance | equal |")
    print("|---|---|---|---|")
    rows = check_rotary(rotary_cls, rng)
    rows += check_rotary_attention(rotary_cls, rng)
    rows += check_alibi_softmax(alibi_cls, rng)
    for label, diff, tolerance in rows:
        equal = diff <= tolerance
        ok = ok and equal
        print(f"| {label} | {diff:.2e} | {tolerance:.0e} | {equal} |")
    print("\n| heads | max abs diff | max rel diff | equal in float32 |")
    print("|---|---|---|---|")
    for _, diff, relative, n, same32 in check_slopes(alibi_cls):
        equal = relative <= SLOPE_TOLERANCE
        ok = ok and equal
        print(
            f"| {n} | {diff:.1e} | {relative:.1e} "
            f"| {same32}/{n} slopes identical |"
        )
    print(f"\nall equal within tolerance: {ok}")
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
