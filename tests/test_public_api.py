"""The public surface: exports, docstrings, registration, light imports."""

import ast
import os
import subprocess
import sys

import keras
import pytest

import keras_selfattn

PACKAGE = os.path.dirname(keras_selfattn.__file__)
from keras_selfattn import text  # noqa: E402

PUBLIC = [n for n in keras_selfattn.__all__ if n != "__version__"]
PUBLIC_TEXT = list(text.__all__)


def test_version():
    assert keras_selfattn.__version__.count(".") >= 2
    from keras_selfattn.version import __version__

    assert keras_selfattn.__version__ == __version__


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_runnable_docstring(name):
    obj = getattr(keras_selfattn, name)
    doc = obj.__doc__ or ""
    assert ">>>" in doc, f"{name} needs a runnable example"
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc, f"{name} docstring lacks {section}"


@pytest.mark.parametrize("name", PUBLIC)
def test_layers_are_registered(name):
    obj = getattr(keras_selfattn, name)
    if isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
        key = f"keras_selfattn>{name}"
        assert keras.saving.get_registered_object(key) is obj


def test_layers_package_exports_match():
    from keras_selfattn import layers

    for name in layers.__all__:
        assert getattr(keras_selfattn, name) is getattr(layers, name)


def _imports(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_layers_use_keras_ops_only():
    folder = os.path.join(PACKAGE, "layers")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            for module in _imports(os.path.join(folder, name)):
                top = module.split(".")[0]
                assert top not in ("tensorflow", "tensorflow_text"), (
                    name,
                    module,
                )


def test_import_stays_light():
    code = (
        "import sys, keras_selfattn; "
        "assert 'tensorflow_text' not in sys.modules, 'tensorflow_text'"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("name", PUBLIC_TEXT)
def test_text_names_have_runnable_docstrings(name):
    doc = getattr(text, name).__doc__ or ""
    assert "Args:" in doc and "Returns" in doc, name
    if name != "normalize_text":
        assert ">>>" in doc, f"{name} needs a runnable example"


@pytest.mark.parametrize(
    "name", ["WordPieceTokenizer", "SentencePieceTokenizer"]
)
def test_tokenizer_is_registered_after_plain_import(name):
    obj = keras.saving.get_registered_object(f"keras_selfattn>{name}")
    assert obj is getattr(text, name)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_layer_docstrings_have_call_masking_and_example(name):
    # That each layer goes through the harness is checked by what ran:
    # tests/test_harness_coverage.py.
    obj = getattr(keras_selfattn, name)
    if not (isinstance(obj, type) and issubclass(obj, keras.layers.Layer)):
        return
    doc = obj.__doc__
    for section in ("Call arguments:", "Masking:", "Example:"):
        assert section in doc, f"{name} docstring lacks {section}"
