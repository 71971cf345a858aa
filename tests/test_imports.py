"""What each import pulls in: TensorFlow only where it must be, and the
library apart from the application.

The layers, the backend-neutral model builders and the pure-Python helpers
import without TensorFlow on another Keras backend; the TensorFlow-only
parts (tokenizers, text models, the seq2seq recipe, export) stay reachable
under their public names and import TensorFlow on first use. Each check runs
in a fresh interpreter, since this process has TensorFlow loaded already.

The core packages import each other in one direction only (layers <- text
<- models <- export) and never the recipes: checked on the source of every
module (each import statement and `importlib.import_module` call, wherever
it is) and in a fresh interpreter that loads every core module.
"""

import ast
import os
import pkgutil
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
    "from keras_selfattn import recipes",
    "from keras_selfattn.recipes import fit_resumable",
    "from keras_selfattn.recipes import Seq2SeqOptions",
    "import keras_selfattn.training",
    "from keras_selfattn import distribution",
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
from keras_selfattn.recipes import train_seq2seq
assert train_seq2seq.__module__ == "keras_selfattn.recipes.seq2seq"
"""

# Under TensorFlow, `import keras_selfattn` alone registers the text models
# and the tokenizer, so `.keras` files holding them load as before.
REGISTERED = """
import keras
import keras_selfattn
for name in (
    "TextClassifier",
    "TextGenerator",
    "WordPieceTokenizer",
    "SentencePieceTokenizer",
):
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


# The import graph of the core: what each package may import of ours.
PACKAGE_ROOT = os.path.dirname(keras_selfattn.__file__)
ALLOWED = {
    "layers": {"layers", "version"},
    "text": {"layers", "text", "version"},
    "models": {"layers", "text", "models", "version"},
    "export": {"layers", "text", "models", "export", "version"},
}
DYNAMIC = "<a dynamic import outside the module's own package>"


def _is_import_call(func):
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in (
        "import_module",
        "__import__",
    )


def _own_package_fstring(node):
    # f"{__name__}.{name}": a sub-module of the module's own package.
    return (
        isinstance(node, ast.JoinedStr)
        and len(node.values) >= 2
        and isinstance(node.values[0], ast.FormattedValue)
        and isinstance(node.values[0].value, ast.Name)
        and node.values[0].value.id == "__name__"
        and isinstance(node.values[1], ast.Constant)
        and str(node.values[1].value).startswith(".")
    )


def imported_modules(source, module_name, is_package=False):
    """Every module that `source` (the module `module_name`) imports: import
    statements at any depth (functions, `TYPE_CHECKING` blocks), relative
    ones resolved, `from a import b` as both `a` and `a.b`, and
    `importlib.import_module` calls (`DYNAMIC` when the name is built in a
    way that may leave the module's own package)."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _is_import_call(node.func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif _own_package_fstring(arg):
                found.add(module_name)
            else:
                found.add(DYNAMIC)
    return found


def _core_modules():
    """`(area, module name, path, is_package)` of every core module."""
    for area in ALLOWED:
        path = os.path.join(PACKAGE_ROOT, area)
        name = f"keras_selfattn.{area}"
        yield area, name, os.path.join(path, "__init__.py"), True
        for info in pkgutil.walk_packages([path], prefix=f"{name}."):
            leaf = info.name.rpartition(".")[2]
            yield area, info.name, os.path.join(path, leaf + ".py"), False


def _violations(area, imports):
    bad = []
    for module in sorted(imports):
        if module == DYNAMIC:
            bad.append(module)
        elif module == "keras_selfattn":
            # The root imports every area: a core module must name what it
            # needs.
            bad.append(module)
        elif module.startswith("keras_selfattn."):
            if module.split(".")[1] not in ALLOWED[area]:
                bad.append(module)
    return bad


def test_import_checker_sees_every_kind_of_import():
    source = """
import keras
from keras_selfattn.layers import _validation
from ..recipes import args
def export():
    from keras_selfattn.export.saved_model import export_model
if TYPE_CHECKING:
    import keras_selfattn.training
x = importlib.import_module("keras_selfattn.recipes.seq2seq")
y = importlib.import_module(f"{__name__}.text_generator")
z = importlib.import_module("keras_selfattn." + name)
"""
    found = imported_modules(source, "keras_selfattn.models", is_package=True)
    assert {
        "keras",
        "keras_selfattn.layers._validation",
        "keras_selfattn.recipes.args",
        "keras_selfattn.export.saved_model",
        "keras_selfattn.training",
        "keras_selfattn.recipes.seq2seq",
        "keras_selfattn.models",
        DYNAMIC,
    } <= found
    assert _violations("models", found) == [
        DYNAMIC,
        "keras_selfattn.export.saved_model",
        "keras_selfattn.export.saved_model.export_model",
        "keras_selfattn.recipes",
        "keras_selfattn.recipes.args",
        "keras_selfattn.recipes.seq2seq",
        "keras_selfattn.training",
    ]
    relative = "from ..export import saved_model"
    assert "keras_selfattn.export" in imported_modules(
        relative, "keras_selfattn.models.seq2seq"
    )


def test_core_imports_go_one_way_and_never_to_the_recipes():
    checked, bad = [], {}
    for area, name, path, is_package in _core_modules():
        with open(path, encoding="utf-8") as f:
            imports = imported_modules(f.read(), name, is_package)
        checked.append(name)
        if violations := _violations(area, imports):
            bad[name] = violations
    # The walk found the modules (not an empty pass).
    assert "keras_selfattn.models.seq2seq" in checked
    assert "keras_selfattn.export.saved_model" in checked
    assert len(checked) > 25, checked
    assert bad == {}


# Every core module and lazy name loaded: no recipe, no SavedModel export.
LOADED = """
import importlib
import pkgutil
import sys
import keras_selfattn
for area in ("layers", "text", "models"):
    package = importlib.import_module("keras_selfattn." + area)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
    for name in package.__all__:
        getattr(package, name)
loaded = sorted(m for m in sys.modules if m.startswith("keras_selfattn."))
assert "keras_selfattn.models.text_generator" in loaded, loaded
for prefix in ("keras_selfattn.recipes", "keras_selfattn.training",
               "keras_selfattn.export.saved_model"):
    assert not any(m.startswith(prefix) for m in loaded), (prefix, loaded)
"""


def test_loading_the_models_loads_no_export_and_no_recipe():
    _run(LOADED, "tensorflow")
