"""Every public layer went through the harness in this session.

What ran, not a string in a file: `tests/harness.py` records each (layer
class, check) pair that passed in `harness.RAN`, and conftest.py moves this
test to the end of the session. It runs on every backend
(tests/test_backends.py runs it on JAX and PyTorch after the layer tests),
asking for the checks that run there (`harness.checks_on_this_backend()`).
"""

import keras
import pytest

import keras_selfattn
from tests import harness

PUBLIC_LAYERS = [
    getattr(keras_selfattn, name)
    for name in keras_selfattn.__all__
    if isinstance(getattr(keras_selfattn, name), type)
    and issubclass(getattr(keras_selfattn, name), keras.layers.Layer)
]


def test_the_public_api_has_layers():
    # Guards the test below against an empty list passing vacuously.
    assert len(PUBLIC_LAYERS) >= 7, PUBLIC_LAYERS


@pytest.mark.all_backends
def test_every_public_layer_goes_through_the_harness(request):
    if not request.config.stash.get(harness.LAYER_TESTS_SELECTED, 0):
        pytest.skip("no test of tests/layers/ in this session")
    checks = harness.checks_on_this_backend()
    missing = {
        cls.__name__: [c for c in checks if (cls, c) not in harness.RAN]
        for cls in PUBLIC_LAYERS
    }
    missing = {name: names for name, names in missing.items() if names}
    assert not missing, (
        f"public layers that did not pass these harness checks on "
        f"{keras.backend.backend()} in this session (run tests/layers/ in "
        f"full): {missing}"
    )
