"""The layers on every Keras backend.

This process runs TensorFlow; each other backend runs in a fresh interpreter
with `KERAS_BACKEND` set (Keras picks its backend once, at import):

- the README quickstart trains on JAX and PyTorch;
- the layer harness (`tests/harness.py`, every check but the
  TensorFlow-only SavedModel export) passes for every public layer on JAX,
  and on PyTorch where it is installed: the tests marked `all_backends`,
  ending with tests/test_harness_coverage.py, which fails unless every
  public layer passed every check that runs there;
- a `.keras` file with every public layer, saved here on TensorFlow, loads
  there with the same outputs (float32 rounding), and the file it saves
  there loads back here with them too.

PyTorch is not part of the `test` extra: a plain `torch` requirement
resolves to the CUDA build (over 1 GB with its libraries). `.ci/run`
installs the CPU wheel (`torch==2.13.0+cpu`) instead; without PyTorch its
tests skip with the reason.
"""

import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import keras
import numpy as np
import pytest

import keras_selfattn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTHER_BACKENDS = ["jax", "torch"]
KERAS_ARRAY_COPY = "__array__ implementation doesn't accept a copy keyword"


def _require(backend):
    if importlib.util.find_spec(backend) is None:
        how = {"jax": "the `test` extra", "torch": "torch==2.13.0+cpu"}
        pytest.skip(f"{backend} is not installed ({how[backend]})")


def _run(backend, args, timeout, **env):
    """`python args...` on `backend`, in the repository root."""
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, **env, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _quickstart():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.search(r"## Quickstart.*?```python\n(.*?)```", text, re.S)[1]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_readme_quickstart_trains_on(backend):
    _require(backend)
    # It used to fail on JAX: the learned position table was sliced as a
    # Keras variable ("Triggering __jax_array__() during abstractification").
    code = (
        "import keras\n"
        f"assert keras.backend.backend() == {backend!r}\n" + _quickstart()
    )
    # Warnings are errors, as in pyproject.toml, with the same exception for
    # Keras' own `Variable.__array__` (NumPy 2 deprecation).
    warnings = f"error,ignore:{KERAS_ARRAY_COPY}:DeprecationWarning"
    result = _run(backend, ["-c", code], 300, PYTHONWARNINGS=warnings)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_harness_passes_for_every_public_layer_on(backend, tmp_path):
    _require(backend)
    report = tmp_path / "report.xml"
    result = _run(
        backend,
        # -n 0: one process, so the coverage test sees every check.
        ["-m", "pytest", "-q", "-n", "0", "-m", "all_backends"]
        + [f"--junitxml={report}"]
        + ["tests/layers", "tests/test_harness_coverage.py"],
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    # Exit code 0 alone could be a session that selected nothing: the
    # coverage test must have run and passed there.
    cases = ElementTree.parse(report).getroot().iter("testcase")
    name = "test_every_public_layer_goes_through_the_harness"
    coverage = [case for case in cases if case.get("name") == name]
    assert len(coverage) == 1, result.stdout[-3000:]
    outcomes = [child.tag for child in coverage[0]]
    assert not {"skipped", "failure", "error"} & set(outcomes), outcomes


# --------------------------------------------------------------------------
# `.keras` files across backends.

VOCAB, MAX_LENGTH, WIDTH, HEADS, FF = 23, 16, 12, 3, 11

# Runs on the other backend: load the TensorFlow file, compare, save again.
_LOAD_COMPARE_SAVE = """
import sys
import keras
import numpy as np
import keras_selfattn

path, data, saved = sys.argv[1:]
assert keras.backend.backend() != "tensorflow"
arrays = np.load(data)
model = keras.saving.load_model(path)
out = keras.ops.convert_to_numpy(model([arrays["ids"], arrays["source"]]))
np.testing.assert_allclose(out, arrays["expected"], rtol=1e-5, atol=1e-5)
model.save(saved)
print("max abs diff", float(np.max(np.abs(out - arrays["expected"]))))
"""


def every_layer_model():
    """Token ids and a source sequence through every public layer."""
    ids = keras.Input((None,), dtype="int32", name="ids")
    source = keras.Input((None, 6), name="source")
    x = keras_selfattn.TokenAndPositionEmbedding(VOCAB, MAX_LENGTH, WIDTH)(ids)
    x = keras_selfattn.PositionalEncoding("learned", max_length=MAX_LENGTH)(x)
    x = keras_selfattn.RotaryEmbedding()(x)
    x = keras_selfattn.MultiHeadSelfAttention(HEADS, causal=True)(x)
    x = keras_selfattn.TransformerBlock(HEADS, FF, norm_first=True)(x)
    x = keras_selfattn.TransformerDecoderBlock(HEADS, FF)(x, source)
    outputs = keras_selfattn.SequencePooling("mean")(x)
    return keras.Model([ids, source], outputs)


def test_every_public_layer_is_in_the_cross_backend_model():
    names = {type(layer).__name__ for layer in every_layer_model().layers}
    public = {
        name
        for name in keras_selfattn.__all__
        if isinstance(getattr(keras_selfattn, name), type)
    }
    assert public <= names, public - names


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_a_keras_file_moves_between_tensorflow_and(backend, tmp_path):
    _require(backend)
    rng = np.random.default_rng(7)
    ids = rng.integers(1, VOCAB, size=(3, 5)).astype("int32")
    ids[0, 3:] = 0  # padded
    ids[1] = 0  # an empty row
    source = rng.normal(size=(3, 7, 6)).astype("float32")
    model = every_layer_model()
    expected = keras.ops.convert_to_numpy(model([ids, source]))
    assert np.all(expected[1] == 0.0) and np.any(expected[0] != 0.0)
    path, saved = tmp_path / "tf.keras", tmp_path / f"{backend}.keras"
    model.save(path)
    data = tmp_path / "data.npz"
    np.savez(data, ids=ids, source=source, expected=expected)
    script = ["-c", _LOAD_COMPARE_SAVE, str(path), str(data), str(saved)]
    result = _run(backend, script, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # And back: the file the other backend saved loads here, same outputs.
    reloaded = keras.saving.load_model(saved)
    out = keras.ops.convert_to_numpy(reloaded([ids, source]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
