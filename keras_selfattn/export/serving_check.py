"""Check an export the way TF Serving loads it: C API, no Python TF."""

import json
import os
import subprocess
import sys

RUNNER = os.path.join(os.path.dirname(__file__), "capi_runner.py")


def serve_with_c_api(export_dir, request, load_tf_text=True, timeout=300):
    """Answer a REST request from a SavedModel loaded through the C API.

    Runs `capi_runner.py` in a separate Python process that never imports
    TensorFlow's Python package nor keras_selfattn: it loads
    `libtensorflow_cc.so.2` from the installed `tensorflow` wheel with
    ctypes, loads the TF-Text op libraries (as TF Serving links them), then
    `TF_LoadSessionFromSavedModel` and `TF_SessionRun`. This is how to be
    sure an export will load in TF Serving's C++ server.

    Args:
        export_dir: str, a SavedModel folder (one version).
        request: dict, TF Serving's REST `predict` body (`instances` or
            `inputs`, optional `signature_name`).
        load_tf_text: bool, load the TF-Text op libraries. Defaults to
            `True`.
        timeout: seconds. Defaults to `300`.

    Returns:
        The response dict: `predictions` (row requests) or `outputs`
        (columnar requests), or `error` for a request the server would
        reject; plus `python_modules`, the Python modules (of tensorflow,
        keras, keras_selfattn, tensorflow_text) the process imported, which
        is always empty.

    Example:

    >>> import tempfile
    >>> import keras
    >>> import keras_selfattn
    >>> x = keras.Input((None, 4), name="features")
    >>> model = keras.Model(x, keras_selfattn.SequencePooling("max")(x))
    >>> path = keras_selfattn.export.export_model(model, tempfile.mkdtemp())
    >>> response = keras_selfattn.export.serve_with_c_api(
    ...     path, {"instances": [[[1, 2, 3, 4], [5, 0, 0, 9]]]})
    >>> response["predictions"], response["python_modules"]
    ([[5.0, 2.0, 3.0, 9.0]], [])
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, RUNNER, os.fspath(export_dir), "-"]
    if not load_tf_text:
        command.append("--no-tf-text")
    result = subprocess.run(
        command,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode not in (0, 2) or not lines:
        raise RuntimeError(
            f"The C API runner failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )
    return json.loads(lines[-1])
