"""Loading `examples/<name>.py` as a module, for the quality benchmarks."""

import importlib.util
import os
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
EXAMPLES = os.path.join(EXAMPLES, "examples")


def load_example(name):
    """Import `examples/<name>.py` as the module `example_<name>`."""
    path = os.path.join(EXAMPLES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    # Registered, so AutoGraph can find the module of the example's functions.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
