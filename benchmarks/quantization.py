"""int8 and int4 text classifiers against float: accuracy, size, latency.

Takes a trained raw-string classifier (`text_classifier.keras`, as written
by `examples/text_classification.py`: raw strings in, probabilities out) and,
for each variant (float, then `model.quantize("int8")` and
`model.quantize("int4")` on freshly loaded copies), measures:

- the accuracy on the whole test split (`predict` on the raw strings);
- the size of the variant's `.keras` file as `model.save` writes it (the
  model's weights, the optimizer state of the compiled classifier and
  `config.json`, which holds the vocabulary, shown apart), of the same file
  saved without the optimizer, and of the SavedModel that
  `keras_selfattn.export.export_classifier` writes (the files of the
  version folder, summed; `variables/` and the graph shown apart);
- CPU latency of `predict_on_batch` on raw test texts at batch 1 and 32:
  warm-up calls, then the variants in turn (the first one rotating) over
  `--repeats` rounds; median and min-max in ms, and the median of the
  per-round ratios to float (same process, same round);
- one feed-forward `Dense` at the model's batch-32 shape, float, int8 and
  int4 with the same weights, and the bare float32 and int8 x int8 ->
  int32 matmuls, to tell the matmul's own speed apart from the model's.

Before timing, it waits (up to `--max-wait-minutes`) until the 1-minute
load average is at most `--max-load`: other jobs on the same cores move
the times. The load average is printed before and after.

Usage:

    python benchmarks/quantization.py --dataset sst2 \\
        --model runs/sst2/text_classifier.keras
    python benchmarks/quantization.py --dataset imdb \\
        --model runs/quality_imdb/text_classifier.keras --repeats 21
    python benchmarks/quantization.py --dataset sst2 \\
        --model runs/sst2/text_classifier.keras --max-test-rows 64 \\
        --repeats 3   # a quick try

It prints one markdown table per run (and its numbers as JSON).
"""

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_selfattn  # noqa: E402
from keras_selfattn.text import find_split  # noqa: E402
from keras_selfattn.text import read_columns  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("float", "int8", "int4")
MB = 1e6


def _load_average():
    return [round(v, 2) for v in os.getloadavg()]


def read_test_split(data_dir, limit=None):
    """Test texts (a NumPy `str` array) and integer labels."""
    rows = read_columns(find_split(data_dir, "test"), ["text", "label"], limit)
    labels = np.array([int(y) for y in rows["label"]], dtype="int32")
    return np.array(rows["text"]), labels


def load_variant(model_path, variant):
    """A freshly loaded copy of the model, quantized unless `float`."""
    model = keras.saving.load_model(model_path)
    if variant != "float":
        with warnings.catch_warnings():
            # Keras warns for each leaf layer it cannot quantize (the
            # tokenizer, dropout, norms, pooling): expected.
            warnings.filterwarnings(
                "ignore", "Layer .* does not have a `quantize` method"
            )
            model.quantize(variant)
    return model


def weight_bytes(model):
    """Bytes of the model's weights by kind: the quantized kernels and
    embeddings (integer storage), their float scales, the position table
    and every other float weight (norms, biases, float kernels)."""
    kinds = {"quantized": 0, "scales": 0, "position table": 0, "other": 0}
    for variable in model.weights:
        size = int(np.prod(variable.shape))
        nbytes = size * np.dtype(variable.dtype).itemsize
        if "int" in variable.dtype:
            kinds["quantized"] += nbytes
        elif variable.path.endswith("_scale"):
            kinds["scales"] += nbytes
        elif "position" in variable.path:
            kinds["position table"] += nbytes
        else:
            kinds["other"] += nbytes
    return kinds


def keras_file_sizes(path):
    """Bytes of a `.keras` file: total, `config.json` (which holds the
    vocabulary), and `model.weights.h5` split into the model's weights and
    the optimizer state saved with a compiled classifier."""
    with zipfile.ZipFile(path) as archive:
        config = archive.getinfo("config.json").compress_size
        weights_file = archive.getinfo("model.weights.h5").compress_size
        with archive.open("model.weights.h5") as f:
            h5 = h5py.File(io.BytesIO(f.read()), "r")
    stored = {"model": 0, "optimizer": 0}

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            kind = "optimizer" if "optimizer" in name.split("/") else "model"
            stored[kind] += item.id.get_storage_size()

    h5.visititems(visit)
    h5.close()
    return {
        "total": os.path.getsize(path),
        "config": config,
        "weights_file": weights_file,
        "model_weights": stored["model"],
        "optimizer_state": stored["optimizer"],
    }


def saved_model_sizes(version_dir):
    """Bytes of a SavedModel version folder: total, `variables/` and the
    graph (`saved_model.pb`)."""
    return {
        "total": folder_size(version_dir),
        "variables": folder_size(os.path.join(version_dir, "variables")),
        "graph": os.path.getsize(os.path.join(version_dir, "saved_model.pb")),
    }


def folder_size(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def accuracy(model, texts, labels, batch_size):
    probabilities = model.predict(texts, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))


def wait_for_load(max_load, max_minutes):
    """Sleep until the 1-minute load average is at most `max_load`."""
    deadline = time.time() + 60 * max_minutes
    while os.getloadavg()[0] > max_load and time.time() < deadline:
        print(f"load {_load_average()} > {max_load}: waiting 30 s", flush=True)
        time.sleep(30)
    return _load_average()


def time_variants(functions, repeats, warmup, calls):
    """Per-call seconds of each function (no arguments), in turn.

    Each round times every variant once (`calls` calls, averaged), the
    first variant of the round rotating, so a slow spell of the machine
    touches all variants alike.
    """
    names = list(functions)
    for name in names:
        for _ in range(warmup):
            functions[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            start = time.perf_counter()
            for _ in range(calls):
                functions[name]()
            times[name].append((time.perf_counter() - start) / calls)
    return times


def summarize(times, reference="float"):
    out = {}
    for name, values in times.items():
        ratios = [t / f for t, f in zip(values, times[reference], strict=True)]
        out[name] = {
            "median_ms": 1e3 * statistics.median(values),
            "min_ms": 1e3 * min(values),
            "max_ms": 1e3 * max(values),
            "ratio_to_float": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return out


def feedforward_shape(model):
    """(input width, output width) of the first feed-forward `Dense`
    (the one that widens)."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dense) and "intermediate" in (
            layer.name
        ):
            return tuple(layer.kernel.shape)
    raise ValueError(f"no feed-forward Dense layer in {model.name}")


def dense_speed(rows, width, units, variants, repeats, warmup):
    """One `Dense(units)` on `(rows, width)` inputs, float and quantized
    (same weights), each in a `tf.function`; and the bare matmuls Keras'
    int8 path runs (`int8 x int8 -> int32`) against float32.

    Tells the matmul's own speed apart from the rest of the model.
    """
    keras.utils.set_random_seed(0)
    x = tf.random.normal((rows, width))
    float_layer = keras.layers.Dense(units)
    float_layer.build((None, width))
    functions = {}
    for name in variants:
        layer = keras.layers.Dense(units)
        layer.build((None, width))
        layer.set_weights(float_layer.get_weights())
        if name != "float":
            layer.quantize(name)
        functions[f"Dense {name}"] = tf.function(lambda layer=layer: layer(x))
    x8 = tf.cast(tf.clip_by_value(x * 40.0, -127, 127), tf.int8)
    w8 = tf.cast(tf.random.uniform((width, units), -127, 127), tf.int8)
    w = tf.random.normal((width, units))
    functions["matmul float32"] = tf.function(lambda: tf.matmul(x, w))
    functions["matmul int8->int32"] = tf.function(
        lambda: tf.matmul(x8, w8, output_type=tf.int32)
    )
    times = time_variants(functions, repeats, warmup, calls=5)
    out = {}
    for name, values in times.items():
        out[name] = {
            "median_ms": 1e3 * statistics.median(values),
            "min_ms": 1e3 * min(values),
            "max_ms": 1e3 * max(values),
        }
    return out


def export(model, folder):
    """Export like the example does; the version folder."""
    return keras_selfattn.export.export_classifier(
        model.classifier,
        model.tokenizer,
        folder,
        label_names=model.label_names,
    )


def max_gap(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def served(version_dir, texts):
    """Probabilities from the exported SavedModel's `serving_default`."""
    exported = tf.saved_model.load(version_dir)
    answer = exported.signatures["serving_default"](text=tf.constant(texts))
    return answer["probabilities"].numpy()


def _mb(n):
    return f"{n / MB:.2f}"


def markdown_table(result):
    """One row per variant: accuracy, sizes, latency."""
    batch_sizes = result["batch_sizes"]
    header = [
        "variant",
        "test accuracy",
        "vs float (points)",
        "`.keras` MB (% of float)",
        "of which weights / optimizer state / config MB",
        "`.keras` without optimizer MB (% of float)",
        "SavedModel MB (% of float)",
        "of which variables / graph MB",
    ]
    for b in batch_sizes:
        header += [f"batch {b} ms, median (min-max)", "x float (min-max)"]
    rows = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    base = result["variants"]["float"]
    for name, v in result["variants"].items():
        k, lean, sm = v["keras"], v["keras_no_optimizer"], v["saved_model"]
        cells = [
            name,
            f"{v['accuracy']:.4f}",
            f"{100 * (v['accuracy'] - base['accuracy']):+.2f}",
            f"{_mb(k['total'])} "
            f"({100 * k['total'] / base['keras']['total']:.0f} %)",
            f"{_mb(k['model_weights'])} / {_mb(k['optimizer_state'])} / "
            f"{_mb(k['config'])}",
            f"{_mb(lean['total'])} "
            f"({100 * lean['total'] / base['keras_no_optimizer']['total']:.0f}"
            " %)",
            f"{_mb(sm['total'])} "
            f"({100 * sm['total'] / base['saved_model']['total']:.0f} %)",
            f"{_mb(sm['variables'])} / {_mb(sm['graph'])}",
        ]
        for b in batch_sizes:
            t = v["latency"][str(b)]
            cells.append(
                f"{t['median_ms']:.1f} ({t['min_ms']:.1f}-{t['max_ms']:.1f})"
            )
            cells.append(
                f"{t['ratio_to_float']:.2f}x "
                f"({t['ratio_min']:.2f}-{t['ratio_max']:.2f})"
            )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a text_classifier.keras")
    p.add_argument("--dataset", default="sst2", help="classification/<name>")
    p.add_argument(
        "--data-root",
        default=os.environ.get(
            "KERAS_SELFATTN_DATA",
            os.path.join(HERE, os.pardir, os.pardir, "shared", "data"),
        ),
        help="the shared data folder (holds classification/<dataset>)",
    )
    p.add_argument("--data-dir", default=None, help="overrides the two above")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--calls",
        type=int,
        default=None,
        help="calls per timed round; defaults to 32 // batch size (min 1)",
    )
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-test-rows", type=int, default=None)
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--max-wait-minutes", type=float, default=10.0)
    p.add_argument("--output-dir", default=None, help="for the files written")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    if args.variants[0] != "float":
        p.error("--variants must start with float (the reference)")
    data_dir = args.data_dir or os.path.join(
        args.data_root, "classification", args.dataset
    )
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="quantization_")
    os.makedirs(output_dir, exist_ok=True)
    load_before = _load_average()
    print(f"load average before: {load_before} on {os.cpu_count()} cores")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    texts, labels = read_test_split(data_dir, args.max_test_rows)
    print(f"{args.dataset}: {len(texts)} test rows; model {args.model}")

    models = {}
    for name in args.variants:
        start = time.time()
        models[name] = load_variant(args.model, name)
        print(f"{name}: loaded in {time.time() - start:.1f} s")

    # Timing first, before this process's own evaluation loads the machine.
    load_at_timing = wait_for_load(args.max_load, args.max_wait_minutes)
    print(f"load average when timing starts: {load_at_timing}")
    latency = {}
    for batch_size in args.batch_sizes:
        batch = tf.constant(texts[:batch_size])
        functions = {
            name: (lambda m=model, b=batch: m.predict_on_batch(b))
            for name, model in models.items()
        }
        calls = args.calls or max(1, 32 // batch_size)
        times = time_variants(functions, args.repeats, args.warmup, calls)
        latency[str(batch_size)] = summarize(times)
        print(f"batch {batch_size}: {json.dumps(latency[str(batch_size)])}")
    # One feed-forward Dense at the model's own shape (batch 32, full length).
    width, units = feedforward_shape(models["float"])
    rows = 32 * models["float"].tokenizer.sequence_length
    dense = dense_speed(
        rows, width, units, args.variants, args.repeats, args.warmup
    )
    print(f"Dense ({rows}, {width}) -> {units}: {json.dumps(dense)}")
    load_after_timing = _load_average()

    variants = {}
    sample = texts[:8]
    for name, model in models.items():
        keras_path = os.path.join(output_dir, f"{name}.keras")
        model.save(keras_path)
        probabilities = model.predict(sample, verbose=0)
        # The saved file reloads with the same outputs (a quantized one too),
        # and the SavedModel serves them.
        reloaded = keras.saving.load_model(keras_path).predict(
            sample, verbose=0
        )
        # The example's classifier is compiled, so its `.keras` file also
        # holds the Adam moments of the float weights (`quantize` leaves
        # them). Keras 3's `save` has no `include_optimizer`; without the
        # optimizer, the file holds what inference needs.
        model.classifier.optimizer = None
        lean_path = os.path.join(output_dir, f"{name}_no_optimizer.keras")
        model.save(lean_path)
        lean_reloaded = keras.saving.load_model(lean_path).predict(
            sample, verbose=0
        )
        version_dir = export(model, os.path.join(output_dir, f"{name}_serving"))
        start = time.time()
        acc = accuracy(model, texts, labels, args.eval_batch_size)
        variants[name] = {
            "accuracy": acc,
            "eval_seconds": round(time.time() - start, 1),
            "keras": keras_file_sizes(keras_path),
            "keras_no_optimizer": keras_file_sizes(lean_path),
            "saved_model": saved_model_sizes(version_dir),
            "saved_model_dir": version_dir,
            "weights_in_memory": weight_bytes(model),
            "reload_max_abs_gap": max_gap(reloaded, probabilities),
            "reload_no_optimizer_max_abs_gap": max_gap(
                lean_reloaded, probabilities
            ),
            "served_max_abs_gap": max_gap(
                served(version_dir, sample), probabilities
            ),
            "latency": {b: latency[b][name] for b in latency},
        }
        print(f"{name}: {json.dumps(variants[name])}", flush=True)

    result = {
        "dataset": args.dataset,
        "model": os.path.abspath(args.model),
        "model_file_bytes": os.path.getsize(args.model),
        "test_rows": len(texts),
        "batch_sizes": args.batch_sizes,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "variants": variants,
        "dense": {"shape": [rows, width, units], "times": dense},
        "load_average_before": load_before,
        "load_average_timing": [load_at_timing, load_after_timing],
        "load_average_after": _load_average(),
        "output_dir": output_dir,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    print(json.dumps(result, indent=2))
    print()
    print(markdown_table(result))
    print()
    print(f"Dense ({rows}, {width}) -> {units}, median ms (min-max):")
    for name, t in dense.items():
        print(
            f"  {name}: {t['median_ms']:.2f} "
            f"({t['min_ms']:.2f}-{t['max_ms']:.2f})"
        )
    print(
        f"load average: before {load_before}, timing {load_at_timing} -> "
        f"{load_after_timing}, after {result['load_average_after']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
