"""LiteRT float32 against int8 for the trained classifiers and translator:
accuracy or BLEU, file size, batch-1 latency.

For a trained raw-string classifier (`text_classifier.keras`, as written by
`examples/text_classification.py`) or translator (`translator.keras`, as
written by `examples/translation.py`), it measures, in one process:

- **Keras float**: the `.keras` model itself (the reference);
- **LiteRT float32**: `keras_selfattn.export.export_litert(model, path)`;
- **LiteRT int8 dynamic range**: `export_litert(...,
  quantization="dynamic_range")` (int8 weights, float activations);
- **LiteRT int8 full-integer** (classifiers only, with `--full-integer`):
  not offered by `export_litert`; converted here with the TFLite
  converter's own options (`optimizations=[DEFAULT]`, a representative
  dataset of `--representative-rows` training texts, `supported_ops=
  [TFLITE_BUILTINS_INT8]`, falling back to `[TFLITE_BUILTINS_INT8,
  TFLITE_BUILTINS]` when some op has no int8 kernel) to show what it
  would give.

The tokenizers lower-case (the examples' default), which LiteRT cannot run
(`docs/deployment.md`), so the files hold the token-ids -> probabilities
classifier (the translator: its encoder, and one uncached decoder step,
`(decoder ids, encoder outputs, source ids) -> next-token logits`); the
texts are tokenized in Python with the model's own Keras tokenizer, once,
and every variant gets the same ids.

What it reports per variant:

- accuracy on the test split (or the rows `--subset` picks with `--seed`),
  or corpus BLEU (`keras_selfattn.metrics.bleu`, sacrebleu) of greedy
  translations. The interpreter runs `--eval-batch-size` rows per call
  (`resize_tensor_input` to the batch's shape); the translator decodes
  greedily in Python, one interpreter call per step, the same loop for
  every variant; Keras float decodes with the model's own cached in-graph
  greedy search (`TextGenerator.generate_ids`);
- the `.tflite` size (encoder and decoder summed), as a share of the float
  `.tflite` and of the float model's weights in its `.keras` file
  (`model.weights.h5`, the optimizer state left out);
- CPU latency at batch 1: warm-up calls, then every variant in turn (the
  first one rotating) over `--repeats` rounds; median and min-max in ms,
  and the median of the per-round ratios to Keras `predict_on_batch` (a
  `tf.function` call of the same Keras model shown too). A classifier call
  is one tokenized test text; a translation is the encoder and one decoder
  step per token of the Keras float translation of a test sentence (so
  every variant runs the same number of steps).

Before timing, it waits (up to `--max-wait-minutes`) until the 1-minute
load average is at most `--max-load`; the load is printed.

Usage:

    python benchmarks/litert_quantization.py --task sst2 \\
        --model runs/sst2/text_classifier.keras --full-integer
    python benchmarks/litert_quantization.py --task imdb \\
        --model runs/imdb/text_classifier.keras --full-integer
    python benchmarks/litert_quantization.py --task translation \\
        --model runs/spa/translator.keras --subset 1000
    python benchmarks/litert_quantization.py --task sst2 \\
        --model runs/sst2/text_classifier.keras --subset 64 \\
        --repeats 3   # a quick try

It prints one markdown table per run (and its numbers as JSON).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from keras import ops  # noqa: E402
from quantization import _load_average  # noqa: E402
from quantization import keras_file_sizes  # noqa: E402
from quantization import read_test_split  # noqa: E402
from quantization import summarize  # noqa: E402
from quantization import time_variants  # noqa: E402
from quantization import wait_for_load  # noqa: E402

import keras_selfattn  # noqa: E402, F401  (registers the layers)
from keras_selfattn.export import export_litert  # noqa: E402
from keras_selfattn.layers import _kernels  # noqa: E402
from keras_selfattn.metrics import bleu  # noqa: E402
from keras_selfattn.text import find_split  # noqa: E402
from keras_selfattn.text import read_columns  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {
    "sst2": os.path.join("classification", "sst2"),
    "imdb": os.path.join("classification", "imdb"),
    "translation": os.path.join("translation", "spa_eng"),
}
MB = 1e6


class LiteRTModel:
    """A `.tflite` file in the interpreter: arrays in (the signature's
    input order), arrays out; the input tensors are resized only when a
    call's shapes differ from the previous call's."""

    def __init__(self, path, threads):
        self.interpreter = Interpreter(path, num_threads=threads)
        runner = self.interpreter.get_signature_runner()
        names = self.interpreter.get_signature_list()["serving_default"]
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        self.input_names = names["inputs"]
        self.inputs = [inputs[n]["index"] for n in names["inputs"]]
        self.outputs = [outputs[n]["index"] for n in names["outputs"]]
        # Shapes are set (and tensors allocated) by the first call.
        self.shapes = None

    def __call__(self, *arrays):
        shapes = [a.shape for a in arrays]
        if shapes != self.shapes:
            for index, shape in zip(self.inputs, shapes, strict=True):
                self.interpreter.resize_tensor_input(index, shape)
            self.interpreter.allocate_tensors()
            self.shapes = shapes
        for index, array in zip(self.inputs, arrays, strict=True):
            self.interpreter.set_tensor(index, array)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.outputs]


def keras_function(model):
    """The Keras model as a `tf.function`, arrays in, arrays out."""
    # A decoder step grows by a token per call: one trace for any length.
    call = tf.function(
        lambda *x: model(x[0] if len(x) == 1 else list(x), training=False),
        reduce_retracing=True,
    )

    def run(*arrays):
        out = call(*arrays)
        return [o.numpy() for o in (out if isinstance(out, list) else [out])]

    return run


def keras_predict(model):
    """The Keras model's `predict_on_batch`, arrays in, arrays out."""

    def run(*arrays):
        out = model.predict_on_batch(
            arrays[0] if len(arrays) == 1 else list(arrays)
        )
        return out if isinstance(out, list) else [out]

    return run


def full_integer_export(model, path, representative):
    """Full-integer int8 (weights and activations) with the TFLite
    converter: int8 builtins only, or int8 with float builtins where an op
    has no int8 kernel. The ops set used, or raises the converter's
    error."""

    def dataset():
        for row in representative:
            yield [row[None]]

    int8 = tf.lite.OpsSet.TFLITE_BUILTINS_INT8
    attempts = {
        "int8 builtins only": [int8],
        "int8 builtins, float fallback": [int8, tf.lite.OpsSet.TFLITE_BUILTINS],
    }
    errors = []
    for name, supported in attempts.items():
        try:
            # The dense attention kernel, as `export_litert` traces it.
            with _kernels.dense_kernels():
                model.export(
                    path,
                    format="litert",
                    verbose=False,
                    optimizations=[tf.lite.Optimize.DEFAULT],
                    representative_dataset=dataset,
                    target_spec={"supported_ops": supported},
                )
            return name, errors
        except Exception as error:  # noqa: BLE001 (recorded, then retried)
            errors.append(f"{name}: {str(error).splitlines()[0][:300]}")
    raise RuntimeError("; ".join(errors))


def batched(function, ids, batch_size):
    """`function`'s first output over `ids` in batches, concatenated."""
    return np.concatenate(
        [
            function(ids[i : i + batch_size])[0]
            for i in range(0, len(ids), batch_size)
        ]
    )


def pick_rows(count, subset, seed, limit):
    """Row indices: all, the first `limit`, or `subset` chosen with
    `seed` (sorted)."""
    rows = np.arange(count if limit is None else min(limit, count))
    if subset is not None and subset < len(rows):
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, subset, replace=False))
    return rows


def tokenize(tokenizer, texts, batch_size=1024):
    """Keras tokenizer ids for a list of texts, int32 `(rows, length)`."""
    return np.concatenate(
        [
            ops.convert_to_numpy(
                tokenizer(tf.constant(texts[i : i + batch_size]))
            )
            for i in range(0, len(texts), batch_size)
        ]
    ).astype("int32")


# Classifiers.


def run_classifier(args, data_dir, output_dir):
    model = keras.saving.load_model(args.model)
    classifier, tokenizer = model.classifier, model.tokenizer
    texts, labels = read_test_split(data_dir)
    rows = pick_rows(len(texts), args.subset, args.seed, args.max_test_rows)
    texts, labels = list(texts[rows]), labels[rows]
    ids = tokenize(tokenizer, texts)
    print(f"{len(ids)} test rows, ids {ids.shape}")
    train = read_columns(
        find_split(data_dir, "train"), ["text"], args.representative_rows
    )["text"]
    representative = tokenize(tokenizer, train)

    files, notes = {}, {}
    files["LiteRT float32"] = export_litert(
        classifier, os.path.join(output_dir, "float32.tflite")
    )
    files["LiteRT int8 dynamic range"] = export_litert(
        classifier,
        os.path.join(output_dir, "dynamic_range.tflite"),
        quantization="dynamic_range",
    )
    if args.full_integer:
        path = os.path.join(output_dir, "full_integer.tflite")
        start = time.time()
        try:
            ops_set, errors = full_integer_export(
                classifier, path, representative
            )
            files["LiteRT int8 full integer"] = path
            notes["LiteRT int8 full integer"] = {
                "ops": ops_set,
                "refused": errors,
                "representative_rows": len(representative),
            }
        except RuntimeError as error:
            notes["LiteRT int8 full integer"] = {"failed": str(error)}
        print(f"full integer: {notes} ({time.time() - start:.0f} s)")

    functions = {
        "Keras float": keras_predict(classifier),
        "Keras float (tf.function)": keras_function(classifier),
    }
    for name, path in files.items():
        functions[name] = LiteRTModel(path, args.threads)
    latency = time_batch_one(
        args, {n: (lambda f=f: f(ids[:1])) for n, f in functions.items()}
    )

    variants = {}
    reference = None
    for name, function in functions.items():
        if name == "Keras float (tf.function)":
            continue
        start = time.time()
        probabilities = batched(function, ids, args.eval_batch_size)
        predictions = np.argmax(probabilities, axis=-1)
        if reference is None:
            reference = (probabilities, predictions)
        variants[name] = {
            "metric": float(np.mean(predictions == labels)),
            "eval_seconds": round(time.time() - start, 1),
            "agreement_with_keras": float(np.mean(predictions == reference[1])),
            "max_abs_gap_to_keras": float(
                np.max(np.abs(probabilities - reference[0]))
            ),
        }
        print(f"{name}: {json.dumps(variants[name])}", flush=True)
    return finish(args, model, files, variants, latency, notes, len(ids))


# Translation.


def translation_models(seq2seq):
    """Functional Keras models around the trained `Seq2SeqTransformer`:
    the encoder (source ids -> encoder outputs) and one uncached decoder
    step ((decoder ids, encoder outputs, source ids) -> the logits of the
    next token)."""
    source = keras.Input((None,), dtype="int32", name="encoder_ids")
    encoder = keras.Model(source, seq2seq.encode(source), name="encoder")
    target = keras.Input((None,), dtype="int32", name="decoder_ids")
    states = keras.Input((None, seq2seq.embed_dim), name="encoder_outputs")
    step_source = keras.Input((None,), dtype="int32", name="source_ids")
    logits = seq2seq.decode(
        target,
        states,
        encoder_mask=ops.not_equal(step_source, 0),
        encoder_ids=step_source,
    )
    decoder = keras.Model(
        [target, states, step_source], logits[:, -1, :], name="decoder_step"
    )
    return encoder, decoder


def greedy(encoder, decoder, source, max_length, start_id, end_id):
    """Greedy decoding with one decoder call per step: as
    `keras_selfattn.models.greedy_search`, the generated ids
    `(batch_size, max_length)` (start token excluded, 0 after the end
    token)."""
    # The columns that are padding in every row: dropped, as the
    # generator does.
    length = max(int((source != 0).sum(1).max()), 1)
    source = source[:, :length]
    (states,) = encoder(source)
    batch = len(source)
    tokens = np.full((batch, 1), start_id, "int32")
    out = np.zeros((batch, max_length), "int32")
    finished = np.zeros(batch, bool)
    for t in range(max_length):
        (logits,) = decoder(tokens, states, source)
        chosen = np.where(finished, 0, np.argmax(logits, -1)).astype("int32")
        out[:, t] = chosen
        finished |= chosen == end_id
        if finished.all():
            break
        tokens = np.concatenate([tokens, chosen[:, None]], axis=1)
    return out


def forced_steps(encoder, decoder, source, tokens, start_id):
    """The work of translating `source` (one row) into `tokens`: the
    encoder, then one decoder step per token."""
    (states,) = encoder(source)
    prefix = np.concatenate([[start_id], tokens]).astype("int32")[None]
    for t in range(1, prefix.shape[1]):
        decoder(prefix[:, :t], states, source)


def run_translation(args, data_dir, output_dir):
    generator = keras.saving.load_model(args.model)
    seq2seq = generator.seq2seq
    start_id = generator.target_tokenizer.start_id
    end_id = generator.target_tokenizer.end_id
    columns = read_columns(find_split(data_dir, "test"), ["en", "es"])
    rows = pick_rows(
        len(columns["en"]), args.subset, args.seed, args.max_test_rows
    )
    sources = [columns["en"][i] for i in rows]
    references = [columns["es"][i] for i in rows]
    ids = tokenize(generator.source_tokenizer, sources)
    print(f"{len(ids)} test sentences, ids {ids.shape}")

    def detokenize(out):
        strings = generator.detokenize(out).numpy()
        return [s.decode("utf-8") for s in strings]

    # Keras float: the generator's own cached, in-graph greedy search.
    generate_ids = tf.function(
        generator.generate_ids,
        input_signature=[tf.TensorSpec((None,), tf.string)],
        autograph=False,
    )
    start = time.time()
    keras_out = np.concatenate(
        [
            generate_ids(tf.constant(sources[i : i + args.eval_batch_size]))
            .numpy()
            .astype("int32")
            for i in range(0, len(sources), args.eval_batch_size)
        ]
    )
    keras_seconds = time.time() - start

    encoder, decoder = translation_models(seq2seq)
    files, pairs = {}, {}
    for name, quantization in (
        ("LiteRT float32", None),
        ("LiteRT int8 dynamic range", "dynamic_range"),
    ):
        stem = quantization or "float32"
        paths = [
            export_litert(
                model,
                os.path.join(output_dir, f"{part}_{stem}.tflite"),
                quantization=quantization,
            )
            for part, model in (("encoder", encoder), ("decoder", decoder))
        ]
        files[name] = paths
        pairs[name] = [LiteRTModel(p, args.threads) for p in paths]
    keras_pair = [keras_predict(encoder), keras_predict(decoder)]
    graph_pair = [keras_function(encoder), keras_function(decoder)]

    # Batch 1: a test sentence's translation, the same steps for all.
    row = int(np.argsort((keras_out != 0).sum(1))[len(keras_out) // 2])
    source = ids[row : row + 1]
    source = source[:, : max(int((source != 0).sum()), 1)]
    tokens = keras_out[row][keras_out[row] != 0]
    print(f"timed sentence: {sources[row]!r}, {len(tokens)} steps")
    all_pairs = {
        "Keras float": keras_pair,
        "Keras float (tf.function)": graph_pair,
        **pairs,
    }
    latency = time_batch_one(
        args,
        {
            name: (
                lambda p=p: forced_steps(p[0], p[1], source, tokens, start_id)
            )
            for name, p in all_pairs.items()
        },
        calls=1,
    )

    variants = {}
    outputs = {"Keras float": (keras_out, keras_seconds)}
    for name, (enc, dec) in pairs.items():
        start = time.time()
        out = np.concatenate(
            [
                greedy(
                    enc,
                    dec,
                    ids[i : i + args.eval_batch_size],
                    generator.max_length,
                    start_id,
                    end_id,
                )
                for i in range(0, len(ids), args.eval_batch_size)
            ]
        )
        outputs[name] = (out, time.time() - start)
    for name, (out, seconds) in outputs.items():
        hypotheses = detokenize(out)
        score = bleu(hypotheses, references)
        same = np.mean(
            [np.array_equal(a, b) for a, b in zip(out, keras_out, strict=True)]
        )
        variants[name] = {
            "metric": score["bleu"],
            "bleu_signature": score["signature"],
            "eval_seconds": round(seconds, 1),
            "agreement_with_keras": float(same),
            "ended_fraction": float(np.mean((out == end_id).any(1))),
            "first_hypotheses": hypotheses[:3],
        }
        print(f"{name}: {json.dumps(variants[name])}", flush=True)
    result = finish(args, generator, files, variants, latency, {}, len(ids))
    result["timed_sentence"] = {"source": sources[row], "steps": len(tokens)}
    return result


# Both.


def time_batch_one(args, functions, calls=None):
    load = wait_for_load(args.max_load, args.max_wait_minutes)
    print(f"load average when timing starts: {load}", flush=True)
    times = time_variants(
        functions, args.repeats, args.warmup, calls or args.calls
    )
    out = summarize(times, reference="Keras float")
    out["load_average"] = [load, _load_average()]
    print(f"batch 1: {json.dumps(out)}", flush=True)
    return out


def finish(args, model, files, variants, latency, notes, rows):
    weights = keras_file_sizes(args.model)["model_weights"]
    sizes = {"Keras float": weights}
    for name, paths in files.items():
        paths = paths if isinstance(paths, list) else [paths]
        sizes[name] = sum(os.path.getsize(p) for p in paths)
    for name in variants:
        variants[name]["bytes"] = sizes[name]
        variants[name]["latency_batch_1"] = latency[name]
        variants[name]["files"] = files.get(name)
        if name in notes:
            variants[name]["conversion"] = notes[name]
    return {
        "task": args.task,
        "model": os.path.abspath(args.model),
        "rows": rows,
        "subset": args.subset,
        "seed": args.seed,
        "keras_model_weights_bytes": weights,
        "variants": variants,
        "failed": {n: v for n, v in notes.items() if "failed" in v},
        "keras_tf_function_latency": latency["Keras float (tf.function)"],
        "load_average_timing": latency["load_average"],
        "threads": args.threads,
        "repeats": args.repeats,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def markdown_table(result):
    metric = "BLEU" if result["task"] == "translation" else "accuracy"
    scale = 1 if metric == "BLEU" else 100
    header = [
        "variant",
        f"test {metric} ({result['rows']} rows)",
        "vs Keras float (points)",
        "same output as Keras",
        "MB",
        "% of LiteRT float32",
        "% of Keras float weights",
        "batch 1 ms, median (min-max)",
        "x Keras `predict_on_batch` (min-max)",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    variants = result["variants"]
    base = variants["Keras float"]
    tflite = variants.get("LiteRT float32", base)["bytes"]
    for name, v in variants.items():
        t = v["latency_batch_1"]
        value = v["metric"]
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{value:.4f}" if scale == 100 else f"{value:.2f}",
                    f"{scale * (value - base['metric']):+.2f}",
                    f"{100 * v['agreement_with_keras']:.1f} %",
                    f"{v['bytes'] / MB:.2f}",
                    ""
                    if name == "Keras float"
                    else f"{100 * v['bytes'] / tflite:.0f} %",
                    f"{100 * v['bytes'] / base['bytes']:.0f} %",
                    f"{t['median_ms']:.2f} ({t['min_ms']:.2f}-"
                    f"{t['max_ms']:.2f})",
                    f"{t['ratio_to_float']:.2f}x ({t['ratio_min']:.2f}-"
                    f"{t['ratio_max']:.2f})",
                ]
            )
            + " |"
        )
    t = result["keras_tf_function_latency"]
    lines.append(
        f"\nKeras float as a `tf.function`: {t['median_ms']:.2f} ms "
        f"({t['min_ms']:.2f}-{t['max_ms']:.2f}), "
        f"{t['ratio_to_float']:.2f}x `predict_on_batch`."
    )
    for name, error in result["failed"].items():
        lines.append(f"\n{name}: conversion failed: {error['failed']}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument(
        "--model", required=True, help="text_classifier.keras / translator"
    )
    p.add_argument(
        "--data-root",
        default=os.environ.get(
            "KERAS_SELFATTN_DATA",
            os.path.join(HERE, os.pardir, os.pardir, "shared", "data"),
        ),
        help="the shared data folder",
    )
    p.add_argument("--data-dir", default=None, help="overrides --data-root")
    p.add_argument("--subset", type=int, default=None, help="test rows")
    p.add_argument("--seed", type=int, default=0, help="picks --subset")
    p.add_argument("--max-test-rows", type=int, default=None)
    p.add_argument("--full-integer", action="store_true")
    p.add_argument("--representative-rows", type=int, default=200)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calls", type=int, default=16, help="per timed round")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--max-wait-minutes", type=float, default=5.0)
    p.add_argument("--output-dir", default=None, help="for the .tflite files")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    data_dir = args.data_dir or os.path.join(args.data_root, TASKS[args.task])
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="litert_")
    os.makedirs(output_dir, exist_ok=True)
    load_before = _load_average()
    print(f"load average before: {load_before} on {os.cpu_count()} cores")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    run = run_translation if args.task == "translation" else run_classifier
    result = run(args, data_dir, output_dir)
    result["load_average_before"] = load_before
    result["load_average_after"] = _load_average()
    print(json.dumps(result, indent=2))
    print()
    print(markdown_table(result))
    print(
        f"\nload average: before {load_before}, timing "
        f"{result['load_average_timing']}, after "
        f"{result['load_average_after']}; interpreter threads {args.threads}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
