"""TensorFlow only where it must be: what each import pulls in.

The layers, the backend-neutral model builders and the pure-Python helpers
import without TensorFlow on another Keras backend; the TensorFlow-only
parts (tokenizers, text models, seq2seq training, export) stay reachable
under their public names and import TensorFlow on first use. Each check runs
in a fresh interpreter, since this process has TensorFlow loaded already.
"""

import os
import subprocess
import sys

import keras
import pytest

import keras_selfattn
from keras_selfattn import export
from keras_selfattn import models
from keras_selfattn import text

# Backend-neutral imports: none of them may load TensorFlow.
NEUTRAL_IMPORTS = (
    "import keras_selfattn",
    "import keras_selfattn.layers",
    "from keras_selfattn import MultiHeadSelfAttention",
    "from keras_selfattn import TransformerBlock",
    "from keras_selfattn.models import Seq2SeqTransformer",
    "from keras_selfattn.models import beam_search",
    "from keras_selfattn.models import build_text_classifier",
    "from keras_selfattn.models import greedy_search",
    "from keras_selfattn import training",
    "from keras_selfattn import metrics",
    "from keras_selfattn import plotting",
    "from keras_selfattn.text import find_split",
    "from keras_selfattn.text import read_columns",
    "import keras_selfattn.export",
    "from keras_selfattn.export import serve_with_c_api",
)
# Each import in turn, naming the first that loads TensorFlow.
NEUTRAL = f"""
import sys
import keras
assert keras.backend.backend() == "numpy", keras.backend.backend()
assert "tensorflow" not in sys.modules, "keras itself imported tensorflow"
for statement in {NEUTRAL_IMPORTS!r}:
    exec(statement)
    assert "tensorflow" not in sys.modules, statement + " imported tensorflow"
"""

# A TensorFlow-only name is still there, and loads TensorFlow when asked for.
LAZY = """
import sys
from keras_selfattn.models import TextClassifier
assert TextClassifier.__module__ == "keras_selfattn.models.text_classifier"
assert "tensorflow" in sys.modules
"""

# Under TensorFlow, `import keras_selfattn` alone registers the text models
# and the tokenizer, so `.keras` files holding them load as before.
REGISTERED = """
import keras
import keras_selfattn
for name in ("TextClassifier", "TextGenerator", "WordPieceTokenizer"):
    obj = keras.saving.get_registered_object("keras_selfattn>" + name)
    assert obj is not None and obj.__name__ == name, name
"""


def _run(code, backend):
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _needs_numpy_backend():
    # Keras' numpy backend imports scipy and jax (for its FFT ops).
    for module in ("jax", "scipy"):
        pytest.importorskip(
            module, reason=f"Keras' numpy backend needs {module}"
        )


def test_neutral_imports_do_not_load_tensorflow():
    _needs_numpy_backend()
    _run(NEUTRAL, "numpy")


def test_tensorflow_only_names_load_on_first_use():
    _needs_numpy_backend()
    _run(NEUTRAL + LAZY, "numpy")


def test_tensorflow_backend_registers_text_models_on_import():
    _run(REGISTERED, "tensorflow")


@pytest.mark.parametrize(
    "package", [keras_selfattn, models, text, export], ids=lambda p: p.__name__
)
def test_every_public_name_resolves(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package), name


@pytest.mark.parametrize(
    "package", [keras_selfattn, models, text, export], ids=lambda p: p.__name__
)
def test_unknown_name_is_an_attribute_error(package):
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # noqa: B018


def test_lazy_names_are_the_defining_modules_objects():
    from keras_selfattn.export.saved_model import export_model
    from keras_selfattn.models.text_generator import TextGenerator
    from keras_selfattn.text.wordpiece import WordPieceTokenizer

    assert models.TextGenerator is TextGenerator
    assert text.WordPieceTokenizer is WordPieceTokenizer
    assert export.export_model is export_model
    registered = keras.saving.get_registered_object(
        "keras_selfattn>TextGenerator"
    )
    assert registered is TextGenerator
