"""The layers on other Keras backends: the README quickstart on JAX.

Each run is a fresh interpreter with `KERAS_BACKEND` set (this process runs
TensorFlow). A first step of issue 15; the full harness on every backend is
still to come.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.search(r"## Quickstart.*?```python\n(.*?)```", text, re.S)[1]


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="JAX is not installed (it comes with the `test` extra)",
)
def test_the_readme_quickstart_trains_on_jax():
    # It used to fail on JAX: the learned position table was sliced as a
    # Keras variable ("Triggering __jax_array__() during abstractification").
    code = (
        "import keras\n"
        "assert keras.backend.backend() == 'jax'\n" + _quickstart()
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
