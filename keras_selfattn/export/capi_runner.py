"""Answer one TF Serving REST request through the TensorFlow C API.

This script loads a SavedModel the way TensorFlow Serving does: with the C
API in the `tensorflow` wheel's `libtensorflow_cc.so.2`
(`TF_LoadSessionFromSavedModel`, `TF_SessionRun`), with the TF-Text op
libraries loaded by `TF_LoadLibrary` (TF Serving links those ops), and
without importing TensorFlow's Python package or keras_selfattn. A model
that needs Python (`tf.py_function`) or an op that is not registered fails
here as it would in the server.

Run it as a file (never as `-m keras_selfattn...`, which would import the
package):

    python capi_runner.py MODEL_DIR REQUEST.json
    python capi_runner.py MODEL_DIR - --lines   # one request per line

The request is TF Serving's REST `predict` body, in row (`instances`) or
columnar (`inputs`) form, with an optional `signature_name`; binary strings
may be sent as `{"b64": ...}`. Values are parsed as strictly as TF Serving
parses them: a number is not a string, a bool not a number, `1.5` not an
integer, an integer must fit its type, nested lists must be rectangular.
The script prints the REST response (`predictions` or `outputs`) as JSON,
or `{"error": ..., "code": ...}` (the status TF Serving would answer with,
e.g. `INVALID_ARGUMENT` for HTTP 400) with exit code 2. With `--lines` it
loads the model once, prints `{"ready": true}`, then answers each JSON line
of stdin with one JSON line, as a server answers request after request.
"""

import argparse
import base64
import ctypes
import glob
import importlib.util
import json
import os
import sys

import numpy as np

# TF_DataType values from tensorflow/c/tf_datatype.h.
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    7: object,  # TF_STRING
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}
_TF_STRING = 7
_TSTRING_SIZE = 24  # sizeof(TF_TString) on 64-bit platforms


# TF_Code values from tensorflow/c/tf_status.h.
_CODES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
}


class ServingError(Exception):
    """A request the server would reject, with TF Serving-like wording;
    `code` is the status TF Serving would answer with."""

    def __init__(self, message, code="INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------
# A minimal protobuf reader for the MetaGraphDef's signatures.


def _varint(data, pos):
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data):
    """Yield `(field_number, wire_type, value)` of one message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _map_entries(data, field):
    """The `map<string, message>` at `field` as `{key: bytes}`."""
    entries = {}
    for number, _, value in _fields(data):
        if number == field:
            key, item = "", b""
            for n, _, v in _fields(value):
                if n == 1:
                    key = v.decode()
                elif n == 2:
                    item = v
            entries[key] = item
    return entries


def _tensor_info(data):
    """TensorInfo: `{"name", "dtype", "shape"}` (-1 for unknown dims)."""
    info = {"name": None, "dtype": None, "shape": None}
    for number, _, value in _fields(data):
        if number == 1:
            info["name"] = value.decode()
        elif number == 2:
            info["dtype"] = value
        elif number == 3:
            dims = []
            for n, _, v in _fields(value):
                if n == 2:
                    size = -1
                    for dn, _, dv in _fields(v):
                        if dn == 1:
                            # int64 as varint; two's complement for -1.
                            size = dv - (1 << 64) if dv >= 1 << 63 else dv
                    dims.append(size)
            info["shape"] = dims
    return info


def signatures(meta_graph_def):
    """`{name: {"inputs": {...}, "outputs": {...}}}` from a MetaGraphDef."""
    result = {}
    for name, sig in _map_entries(meta_graph_def, 5).items():
        result[name] = {
            "inputs": {
                k: _tensor_info(v) for k, v in _map_entries(sig, 1).items()
            },
            "outputs": {
                k: _tensor_info(v) for k, v in _map_entries(sig, 2).items()
            },
        }
    return result


# --------------------------------------------------------------------------
# The C API.


class _Buffer(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("length", ctypes.c_size_t),
        ("data_deallocator", ctypes.c_void_p),
    ]


class _Output(ctypes.Structure):
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


def _find_package_dir(name):
    """A package's folder, found without importing (executing) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServingError(f"package {name!r} is not installed")
    return list(spec.submodule_search_locations)[0]


class CApi:
    """ctypes bindings for the few C API calls a server needs."""

    def __init__(self, tf_dir=None):
        tf_dir = tf_dir or _find_package_dir("tensorflow")
        mode = ctypes.RTLD_GLOBAL
        ctypes.CDLL(os.path.join(tf_dir, "libtensorflow_framework.so.2"), mode)
        lib = ctypes.CDLL(os.path.join(tf_dir, "libtensorflow_cc.so.2"), mode)
        p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        signatures_ = {
            "TF_NewStatus": (p, []),
            "TF_DeleteStatus": (None, [p]),
            "TF_GetCode": (i, [p]),
            "TF_Message": (ctypes.c_char_p, [p]),
            "TF_LoadLibrary": (p, [ctypes.c_char_p, p]),
            "TF_NewGraph": (p, []),
            "TF_DeleteGraph": (None, [p]),
            "TF_NewSessionOptions": (p, []),
            "TF_DeleteSessionOptions": (None, [p]),
            "TF_NewBuffer": (ctypes.POINTER(_Buffer), []),
            "TF_DeleteBuffer": (None, [ctypes.POINTER(_Buffer)]),
            "TF_LoadSessionFromSavedModel": (
                p,
                [
                    p,
                    p,
                    ctypes.c_char_p,
                    ctypes.POINTER(ctypes.c_char_p),
                    i,
                    p,
                    ctypes.POINTER(_Buffer),
                    p,
                ],
            ),
            "TF_GraphOperationByName": (p, [p, ctypes.c_char_p]),
            "TF_AllocateTensor": (p, [i, ctypes.POINTER(ctypes.c_int64), i, s]),
            "TF_DeleteTensor": (None, [p]),
            "TF_TensorData": (p, [p]),
            "TF_TensorByteSize": (s, [p]),
            "TF_TensorType": (i, [p]),
            "TF_NumDims": (i, [p]),
            "TF_Dim": (ctypes.c_int64, [p, i]),
            "TF_StringInit": (None, [p]),
            "TF_StringCopy": (None, [p, ctypes.c_char_p, s]),
            "TF_StringGetDataPointer": (p, [p]),
            "TF_StringGetSize": (s, [p]),
            "TF_StringDealloc": (None, [p]),
            "TF_SessionRun": (
                None,
                [
                    p,
                    p,
                    ctypes.POINTER(_Output),
                    ctypes.POINTER(p),
                    i,
                    ctypes.POINTER(_Output),
                    ctypes.POINTER(p),
                    i,
                    p,
                    i,
                    p,
                    p,
                ],
            ),
            "TF_CloseSession": (None, [p, p]),
            "TF_DeleteSession": (None, [p, p]),
        }
        for name, (restype, argtypes) in signatures_.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name[3:], fn)

    def check(self, status, what=None):
        code = self.GetCode(status)
        if code != 0:
            message = self.Message(status).decode(errors="replace")
            if what:
                message = f"{what}: {message}"
            raise ServingError(message, _CODES.get(code, code))


def load_op_libraries(api, paths):
    status = api.NewStatus()
    try:
        for path in paths:
            api.LoadLibrary(path.encode(), status)
            api.check(status, f"loading op library {path}")
    finally:
        api.DeleteStatus(status)


def tf_text_op_libraries():
    """Every op library of the installed tensorflow-text (TF Serving links
    all TF-Text ops)."""
    folder = os.path.join(_find_package_dir("tensorflow_text"), "python", "ops")
    return sorted(glob.glob(os.path.join(folder, "*.so")))


class Model:
    """A SavedModel loaded in a C API session."""

    def __init__(self, api, export_dir, tags=("serve",)):
        self.api = api
        self.graph = api.NewGraph()
        options = api.NewSessionOptions()
        meta = api.NewBuffer()
        status = api.NewStatus()
        tag_array = (ctypes.c_char_p * len(tags))(*[t.encode() for t in tags])
        try:
            self.session = api.LoadSessionFromSavedModel(
                options,
                None,
                export_dir.encode(),
                tag_array,
                len(tags),
                self.graph,
                meta,
                status,
            )
            api.check(status, "TF_LoadSessionFromSavedModel")
            data = ctypes.string_at(meta.contents.data, meta.contents.length)
            self.signatures = signatures(data)
        finally:
            api.DeleteStatus(status)
            api.DeleteBuffer(meta)
            api.DeleteSessionOptions(options)

    def _output(self, tensor_name):
        op_name, _, index = tensor_name.partition(":")
        op = self.api.GraphOperationByName(self.graph, op_name.encode())
        if not op:
            raise ServingError(f"operation {op_name!r} not in the graph")
        return _Output(op, int(index or 0))

    def _to_tensor(self, array, dtype_code):
        api = self.api
        dims = (ctypes.c_int64 * array.ndim)(*array.shape)
        if dtype_code == _TF_STRING:
            flat = array.reshape(-1)
            tensor = api.AllocateTensor(
                _TF_STRING, dims, array.ndim, _TSTRING_SIZE * flat.size
            )
            base = api.TensorData(tensor)
            for k, item in enumerate(flat):
                data = item if isinstance(item, bytes) else str(item).encode()
                slot = base + k * _TSTRING_SIZE
                api.StringInit(slot)
                api.StringCopy(slot, data, len(data))
            return tensor
        # np.array(order="C"), not np.ascontiguousarray: that one turns a
        # scalar into a vector, and `dims` (above) would not say so.
        array = np.array(array, dtype=_DTYPES[dtype_code], order="C")
        tensor = api.AllocateTensor(dtype_code, dims, array.ndim, array.nbytes)
        ctypes.memmove(api.TensorData(tensor), array.ctypes.data, array.nbytes)
        return tensor

    def _from_tensor(self, tensor):
        api = self.api
        shape = [api.Dim(tensor, d) for d in range(api.NumDims(tensor))]
        code = api.TensorType(tensor)
        if code == _TF_STRING:
            base = api.TensorData(tensor)
            count = int(np.prod(shape)) if shape else 1
            items = []
            for k in range(count):
                slot = base + k * _TSTRING_SIZE
                items.append(
                    ctypes.string_at(
                        api.StringGetDataPointer(slot), api.StringGetSize(slot)
                    )
                )
            return np.array(items, dtype=object).reshape(shape)
        if code not in _DTYPES:
            raise ServingError(f"unsupported output dtype code {code}")
        size = api.TensorByteSize(tensor)
        raw = ctypes.string_at(api.TensorData(tensor), size)
        return np.frombuffer(raw, dtype=_DTYPES[code]).reshape(shape).copy()

    def run(self, signature_name, inputs):
        """Run a signature on `{input_name: numpy array}`."""
        if signature_name not in self.signatures:
            raise ServingError(
                f'Serving signature name: "{signature_name}" not found in '
                f"signature def; available: {sorted(self.signatures)}",
                "FAILED_PRECONDITION",
            )
        signature = self.signatures[signature_name]
        for name in signature["inputs"]:
            if name not in inputs:
                raise ServingError(
                    f"JSON object: does not have named input: {name}"
                )
        for name in inputs:
            if name not in signature["inputs"]:
                raise ServingError(
                    f"input {name!r} is not in signature {signature_name!r}; "
                    f"expected {sorted(signature['inputs'])}"
                )
        api = self.api
        names = sorted(signature["inputs"])
        feeds = (_Output * len(names))()
        values = (ctypes.c_void_p * len(names))()
        for k, name in enumerate(names):
            info = signature["inputs"][name]
            feeds[k] = self._output(info["name"])
            values[k] = self._to_tensor(inputs[name], info["dtype"])
        out_names = sorted(signature["outputs"])
        fetches = (_Output * len(out_names))()
        for k, name in enumerate(out_names):
            fetches[k] = self._output(signature["outputs"][name]["name"])
        results = (ctypes.c_void_p * len(out_names))()
        status = api.NewStatus()
        try:
            api.SessionRun(
                self.session,
                None,
                feeds,
                values,
                len(names),
                fetches,
                results,
                len(out_names),
                None,
                0,
                None,
                status,
            )
            # The runtime's own message, as TF Serving answers it.
            api.check(status)
            return {
                name: self._from_tensor(results[k])
                for k, name in enumerate(out_names)
            }
        finally:
            api.DeleteStatus(status)
            for k, name in enumerate(names):
                if signature["inputs"][name]["dtype"] == _TF_STRING:
                    slots = int(api.TensorByteSize(values[k]) // _TSTRING_SIZE)
                    base = api.TensorData(values[k])
                    for j in range(slots):
                        api.StringDealloc(base + j * _TSTRING_SIZE)
                api.DeleteTensor(values[k])
            for k in range(len(out_names)):
                if results[k]:
                    api.DeleteTensor(results[k])


# --------------------------------------------------------------------------
# TF Serving's REST JSON format.


_INT_RANGES = {
    np.int8: (-(2**7), 2**7 - 1),
    np.int16: (-(2**15), 2**15 - 1),
    np.int32: (-(2**31), 2**31 - 1),
    np.int64: (-(2**63), 2**63 - 1),
    np.uint8: (0, 2**8 - 1),
}


def _json_type(value):
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "Null"


def _type_error(value, dtype_code):
    expected = (
        "string"
        if dtype_code == _TF_STRING
        else (np.dtype(_DTYPES[dtype_code]).name)
    )
    shown = json.dumps(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ServingError(
        f"JSON Value: {shown} Type: {_json_type(value)} is not of expected "
        f"type: {expected}"
    )


def _leaf(value, dtype_code):
    """One JSON scalar as the signature's dtype, strictly as TF Serving
    parses it: a number is not a string, a bool not a number, 1.5 not an
    integer, and integers must fit their type."""
    if dtype_code == _TF_STRING:
        if isinstance(value, str):
            return value.encode("utf-8", errors="surrogatepass")
        if isinstance(value, dict) and set(value) == {"b64"}:
            if not isinstance(value["b64"], str):
                raise _type_error(value, dtype_code)
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise ServingError(
                    f"Unable to base64 decode: {value['b64'][:40]!r}"
                ) from None
        raise _type_error(value, dtype_code)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if not (dtype_code == 10 and isinstance(value, bool)):
            raise _type_error(value, dtype_code)
        return value
    if dtype_code == 10:  # bool takes true/false only
        raise _type_error(value, dtype_code)
    kind = _DTYPES[dtype_code]
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, dtype_code)
    return value


def _to_array(value, info):
    """A JSON value (any rectangular nesting of lists) as an array of the
    input's dtype; ragged lists and wrong leaf types are refused."""
    code = info["dtype"]
    if code not in _DTYPES:
        raise ServingError(f"unsupported input dtype code {code}")
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    leaves = []

    def walk(item, depth):
        if depth == len(shape):
            if isinstance(item, list):
                raise ServingError(
                    "Expected a rectangular tensor: nested lists of unequal "
                    f"depth (a list found at depth {depth})"
                )
            leaves.append(_leaf(item, code))
            return
        if not isinstance(item, list) or len(item) != shape[depth]:
            raise ServingError(
                "Expected a rectangular tensor: at depth "
                f"{depth}, expected a list of {shape[depth]} values, got "
                f"{json.dumps(item)[:40]}"
            )
        for child in item:
            walk(child, depth + 1)

    walk(value, 0)
    if code == _TF_STRING:
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    return np.array(leaves, dtype=_DTYPES[code]).reshape(shape)


def _rows(values, info):
    """The `instances` values of one input, stacked along a new batch axis
    (each row must have the same shape)."""
    return _to_array(list(values), info)


def _jsonable(array):
    if array.dtype == object:

        def convert(item):
            try:
                return item.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(item).decode()}

        return np.vectorize(convert, otypes=[object])(array).tolist()
    return array.tolist()


def _is_named(value):
    """A JSON object of named inputs (not a `{"b64": ...}` value)."""
    return isinstance(value, dict) and set(value) != {"b64"}


def _refuse_unknown(given, inputs):
    for name in given:
        if name not in inputs:
            raise ServingError(
                f"Input {name!r} is not in the signature; expected "
                f"{sorted(inputs)}"
            )


def parse_request(request, signature):
    """REST body -> (`{input: array}`, row_format)."""
    inputs = signature["inputs"]
    if not isinstance(request, dict):
        raise ServingError("The request body must be a JSON object")
    if "instances" in request and "inputs" in request:
        raise ServingError(
            "Not both 'instances' and 'inputs' can be specified; use one"
        )
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingError("'instances' must be a non-empty list")
        if len(inputs) == 1 and not _is_named(instances[0]):
            (name,) = inputs
            return {name: _to_array(instances, inputs[name])}, True
        columns = {}
        for row, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise ServingError(
                    f"Failed to process element: {row} of 'instances' list: "
                    "expected a JSON object with named inputs"
                )
            for name in inputs:
                if name not in instance:
                    raise ServingError(
                        f"Failed to process element: {row} key: {name} of "
                        "'instances' list. JSON object: does not have named "
                        f"input: {name}"
                    )
            for name, value in instance.items():
                columns.setdefault(name, []).append(value)
        _refuse_unknown(columns, inputs)
        return {
            name: _rows(values, inputs[name])
            for name, values in columns.items()
        }, True
    if "inputs" in request:
        given = request["inputs"]
        if len(inputs) == 1 and not _is_named(given):
            (name,) = inputs
            return {name: _to_array(given, inputs[name])}, False
        if not isinstance(given, dict):
            raise ServingError("'inputs' must name each input")
        for name in inputs:
            if name not in given:
                raise ServingError(
                    f"JSON object: does not have named input: {name}"
                )
        _refuse_unknown(given, inputs)
        return {
            name: _to_array(value, inputs[name])
            for name, value in given.items()
        }, False
    raise ServingError("Missing 'inputs' or 'instances' key")


def format_response(outputs, row_format):
    if not row_format:
        if len(outputs) == 1:
            return {"outputs": _jsonable(next(iter(outputs.values())))}
        return {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": _jsonable(next(iter(outputs.values())))}
    batch = len(next(iter(outputs.values())))
    rows = [{} for _ in range(batch)]
    for name, array in outputs.items():
        for row, value in zip(rows, _jsonable(array), strict=True):
            row[name] = value
    return {"predictions": rows}


class Server:
    """One SavedModel loaded through the C API, answering REST bodies as
    TF Serving's `predict` does, one after another, in this process."""

    def __init__(self, export_dir, load_tf_text=True, tf_dir=None):
        self.api = CApi(tf_dir)
        if load_tf_text:
            load_op_libraries(self.api, tf_text_op_libraries())
        self.model = Model(self.api, export_dir)

    def predict(self, request):
        """The response to one REST body (a dict); raises `ServingError`."""
        name = "serving_default"
        if isinstance(request, dict):
            name = request.get("signature_name", name)
        if name not in self.model.signatures:
            raise ServingError(
                f'Serving signature name: "{name}" not found in signature def',
                "FAILED_PRECONDITION",
            )
        inputs, row_format = parse_request(request, self.model.signatures[name])
        return format_response(self.model.run(name, inputs), row_format)

    def answer(self, request):
        """`predict`, with a refused request as `{"error", "code"}`."""
        try:
            return self.predict(request)
        except ServingError as error:
            return _refusal(error)


def _refusal(error):
    """The response to a refused request (or a failed load)."""
    return {"error": str(error), "code": error.code}


def serve(export_dir, request, load_tf_text=True, tf_dir=None):
    """Load `export_dir` with the C API and answer one REST request."""
    return Server(export_dir, load_tf_text, tf_dir).predict(request)


def _loaded_modules():
    # Proof for the caller: no Python TensorFlow, no keras_selfattn here.
    return sorted(
        m
        for m in ("tensorflow", "keras", "keras_selfattn", "tensorflow_text")
        if m in sys.modules
    )


def _respond(server, text):
    """The response to one request's JSON text, with `python_modules`."""
    try:
        request = json.loads(text)
    except ValueError as error:
        response = _refusal(ServingError(f"JSON Parse error: {error}"))
    else:
        response = server.answer(request)
    response["python_modules"] = _loaded_modules()
    return response


def _serve_lines(server, lines, out):
    """Answer one JSON request per input line with one JSON line."""
    for line in lines:
        if line.strip():
            out.write(json.dumps(_respond(server, line)) + "\n")
            out.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument(
        "request",
        help="a JSON file, or - for stdin; with --lines, ignored (requests "
        "come from stdin)",
    )
    parser.add_argument("--no-tf-text", action="store_true")
    parser.add_argument(
        "--lines",
        action="store_true",
        help="load once, then answer one JSON request per stdin line with "
        "one JSON line on stdout (a server's loop)",
    )
    args = parser.parse_args(argv)
    try:
        server = Server(args.export_dir, not args.no_tf_text)
    except ServingError as error:
        response = _refusal(error)
        response["python_modules"] = _loaded_modules()
        print(json.dumps(response))
        return 2
    if args.lines:
        # Tells the caller that loading is done.
        print(json.dumps({"ready": True}), flush=True)
        _serve_lines(server, sys.stdin, sys.stdout)
        return 0
    if args.request == "-":
        text = sys.stdin.read()
    else:
        with open(args.request, encoding="utf-8") as f:
            text = f.read()
    response = _respond(server, text)
    print(json.dumps(response))
    return 2 if "error" in response else 0


if __name__ == "__main__":
    sys.exit(main())
