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
    config.stash[harness.COVERAGE_SELECTED] = bool(last)
    layers = os.path.join(os.path.dirname(__file__), "tests", "layers")
    config.stash[harness.LAYER_TESTS_SELECTED] = sum(
        str(item.path).startswith(layers + os.sep) for item in items
    )


# Under pytest-xdist each worker runs a part of tests/layers/: the workers
# report the harness checks that passed, and the controller checks their
# union at the end (what tests/test_harness_coverage.py checks in one
# process).
# The controller's union; `None` when no worker asked for the check.
_harness_ran = None


def pytest_sessionfinish(session):
    config = session.config
    if hasattr(config, "workeroutput"):  # an xdist worker
        selected = config.stash.get(harness.COVERAGE_SELECTED, False)
        layers = config.stash.get(harness.LAYER_TESTS_SELECTED, 0)
        config.workeroutput["harness_check"] = bool(selected and layers)
        config.workeroutput["harness_ran"] = sorted(
            [cls.__name__, check] for cls, check in harness.RAN
        )
        return
    if _harness_ran is None:  # not xdist, or no worker asked for it
        return
    missing = harness.missing_checks(_harness_ran)
    if missing:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        reporter.ensure_newline()
        reporter.write_line(
            f"FAILED harness coverage: public layers that did not pass "
            f"these harness checks on {keras.backend.backend()} in this "
            f"session (run tests/layers/ in full): {missing}",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's controller: a worker finished; keep what it ran."""
    global _harness_ran
    output = getattr(node, "workeroutput", {})
    if output.get("harness_check"):
        _harness_ran = _harness_ran or set()
        _harness_ran.update(tuple(pair) for pair in output["harness_ran"])


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
