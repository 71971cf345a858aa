"""Shared helpers for the example tests: loading a script, interrupting it,
copying and fingerprinting its output folder."""

import hashlib
import importlib.util
import os
import shutil
import sys

import keras

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
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


class Interrupted(Exception):
    """A simulated kill of a training job."""


class InterruptAfter(keras.callbacks.Callback):
    """Raises `Interrupted` after `batches` training batches."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.batches:
            raise Interrupted(f"interrupted after {self.batches} batches")


def snapshot(folder):
    """`{relative path: (sha256, mtime_ns)}` of every file under `folder`,
    to check that a run left a folder untouched."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            found[os.path.relpath(path, folder)] = (
                digest,
                os.stat(path).st_mtime_ns,
            )
    return found


def copy_run(output_dir, destination):
    """A copy of a finished run's folder, for a test that re-runs on it
    (the module's trained run stays as the other tests expect it)."""
    shutil.copytree(output_dir, destination)
    return str(destination)


def check_used_folder_is_refused(run_example, output_dir, destination):
    """A copy of a finished run without its `metrics.json` (files of a run,
    neither finished nor interrupted): `run_example(folder)` must refuse it
    before training, naming `--overwrite`, and leave it untouched."""
    import pytest

    folder = copy_run(output_dir, destination)
    os.remove(os.path.join(folder, "metrics.json"))
    before = snapshot(folder)
    with pytest.raises(FileExistsError, match="Pass --overwrite"):
        run_example(folder)
    assert snapshot(folder) == before
