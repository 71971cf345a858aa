"""Every public layer went through the harness in this session.

What ran, not a string in a file: `tests/harness.py` records each (layer
class, check) pair that passed in `harness.RAN`, and conftest.py moves this
test to the end of the session. It runs on every backend
(tests/test_backends.py runs it on JAX and PyTorch after the layer tests),
asking for the checks that run there (`harness.checks_on_this_backend()`).
"""

import keras
import pytest

from tests import harness


def test_the_public_api_has_layers():
    # Guards the check below against an empty list passing vacuously.
    assert len(harness.public_layers()) >= 7, harness.public_layers()


@pytest.mark.all_backends
def test_every_public_layer_goes_through_the_harness(request):
    if not request.config.stash.get(harness.LAYER_TESTS_SELECTED, 0):
        pytest.skip("no test of tests/layers/ in this session")
    if hasattr(request.config, "workerinput"):  # a pytest-xdist worker
        # Each worker ran a part of the layer tests: conftest.py checks
        # the union of what they ran when the session ends, and fails the
        # session if a check is missing.
        pytest.skip("pytest-xdist: checked over all workers at session end")
    ran = {(cls.__name__, check) for cls, check in harness.RAN}
    missing = harness.missing_checks(ran)
    assert not missing, (
        f"public layers that did not pass these harness checks on "
        f"{keras.backend.backend()} in this session (run tests/layers/ in "
        f"full): {missing}"
    )
