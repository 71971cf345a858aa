"""Check an export the way TF Serving loads it: C API, no Python TF."""

import json
import os
import signal
import subprocess
import sys
import tempfile

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


class CApiServer:
    """A SavedModel loaded once through the TF C API, answering requests as
    a server does: one loaded session, one request after another.

    Runs `capi_runner.py --lines` in a separate process (no TensorFlow
    Python package, no keras_selfattn in it, as for `serve_with_c_api`),
    so that a request that crashes the runtime kills that process, not the
    caller: `predict` then raises `RuntimeError` naming the signal. Use it
    to prove that an export survives malformed requests.

    Args:
        export_dir: str, a SavedModel folder (one version).
        load_tf_text: bool, load the TF-Text op libraries. Defaults to
            `True`.
        timeout: seconds to wait for the load and for each answer.
            Defaults to `300`.

    Example:

    >>> import tempfile
    >>> import keras
    >>> import keras_selfattn
    >>> x = keras.Input((None, 4), name="features")
    >>> model = keras.Model(x, keras_selfattn.SequencePooling("max")(x))
    >>> path = keras_selfattn.export.export_model(model, tempfile.mkdtemp())
    >>> with keras_selfattn.export.CApiServer(path) as server:
    ...     bad = server.predict({"inputs": {"features": [1, 2, 3, 4]}})
    ...     good = server.predict({"instances": [[[1, 2, 3, 4]]]})
    >>> bad["code"], good["predictions"]
    ('INVALID_ARGUMENT', [[1.0, 2.0, 3.0, 4.0]])
    >>> "input `features`, expected a float32 tensor" in bad["error"]
    True
    """

    def __init__(self, export_dir, load_tf_text=True, timeout=300):
        self.export_dir = os.fspath(export_dir)
        self.timeout = timeout
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, RUNNER, self.export_dir, "-", "--lines"]
        if not load_tf_text:
            command.append("--no-tf-text")
        # A file, not a pipe: nobody reads stderr until the end, and a full
        # pipe would block the runner.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        first = self._read_line("loading the SavedModel")
        if first.get("ready") is not True:
            self.close()
            raise RuntimeError(f"The C API runner could not load: {first}")

    @property
    def alive(self):
        """Whether the serving process is still running."""
        return self._process.poll() is None

    def _died(self, what):
        code = self._process.wait(timeout=self.timeout)
        self._stderr.seek(0)
        stderr = self._stderr.read()[-4000:]
        if code < 0:
            cause = f"killed by signal {-code} ({signal.Signals(-code).name})"
        else:
            cause = f"exit code {code}"
        return RuntimeError(
            f"The C API runner died while {what}: {cause}\n{stderr}"
        )

    def _read_line(self, what):
        # A separate thread is not needed: the runner answers every line.
        line = self._process.stdout.readline()
        if not line:
            raise self._died(what)
        return json.loads(line)

    def predict(self, request):
        """The response to one REST `predict` body (a dict): `predictions`
        or `outputs`, or `error` and `code` (e.g. `"INVALID_ARGUMENT"`) for
        a refused request; plus `python_modules` (always empty)."""
        if not self.alive:
            raise self._died("idle")
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            raise self._died("receiving a request") from None
        return self._read_line("answering a request")

    def close(self):
        """Stop the serving process."""
        try:
            self._process.stdin.close()  # the runner's loop ends here
        except BrokenPipeError:
            pass  # it is gone already
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
