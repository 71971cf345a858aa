"""Test set-up: quiet TensorFlow, fixed seeds, the shared-data marker."""

import os

# Before TensorFlow is imported: hide its C++ start-up chatter.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

from tests import harness  # noqa: E402

DATA_ENV = "KERAS_SELFATTN_DATA"
COVERAGE_TEST = (
    "test_harness_coverage.py::test_every_public_layer_goes_through_the_harness"
)


@pytest.hookimpl(trylast=True)  # after `-k` / `-m` deselected theirs
def pytest_collection_modifyitems(config, items):
    """Run the harness coverage test last, and tell it whether any layer
    test is in this session (tests/test_harness_coverage.py)."""
    last = [item for item in items if item.nodeid.endswith(COVERAGE_TEST)]
    items[:] = [item for item in items if item not in last] + last
    layers = os.path.join(os.path.dirname(__file__), "tests", "layers")
    config.stash[harness.LAYER_TESTS_SELECTED] = sum(
        str(item.path).startswith(layers + os.sep) for item in items
    )


@pytest.fixture(autouse=True)
def _seeded_and_float32():
    """Every test starts seeded, in float32, with full tracebacks."""
    keras.utils.set_random_seed(1337)
    keras.config.disable_traceback_filtering()
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def shared_data():
    """The shared datasets folder; skips (with the reason) when unset."""
    path = os.environ.get(DATA_ENV)
    if not path:
        pytest.skip(f"{DATA_ENV} is not set: the shared datasets are absent")
    if not os.path.isdir(path):
        pytest.skip(f"{DATA_ENV}={path!r} is not a directory")
    return path
