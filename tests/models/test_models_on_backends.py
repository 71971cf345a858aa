"""The backend-neutral models on JAX and PyTorch.

`build_text_classifier`, `Seq2SeqTransformer` and `CausalLM` are saved here (the
TensorFlow backend); a fresh interpreter on the other backend loads them
and must give the same probabilities and the same greedy, beam-search and
(seeded) top-p tokens, and the classifier must train there (its loss falls on a
learnable task).
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_selfattn.models import CausalLM
from keras_selfattn.models import Seq2SeqTransformer
from keras_selfattn.models import build_text_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
KERAS_ARRAY_COPY = "__array__ implementation doesn't accept a copy keyword"

SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import keras
    import numpy as np

    import keras_selfattn  # registers the serializable classes

    folder = sys.argv[1]
    data = np.load(folder + "/data.npz")
    result = {"backend": keras.backend.backend()}
    classifier = keras.models.load_model(folder + "/classifier.keras")
    probs = keras.ops.convert_to_numpy(classifier(data["tokens"]))
    result["probs_diff"] = float(np.max(np.abs(probs - data["probs"])))
    seq2seq = keras.models.load_model(folder + "/seq2seq.keras")
    for method in ("greedy", "beam"):
        ids = seq2seq.generate(
            data["source"], max_length=8, start_id=1, end_id=2, method=method
        )
        ids = keras.ops.convert_to_numpy(ids)
        result[method] = bool(np.array_equal(ids, data[method]))
    lm = keras.models.load_model(folder + "/causal_lm.keras")
    for sampler in ("greedy", "top_p", "beam"):
        ids = lm.generate(data["prompt"], 6, sampler=sampler, seed=7)
        ids = keras.ops.convert_to_numpy(ids)
        result["lm_" + sampler] = bool(
            np.array_equal(ids, data["lm_" + sampler])
        )
    # Training here: the label is whether token 3 occurs.
    rng = np.random.default_rng(0)
    x = rng.integers(4, 20, (256, 10)).astype("int32")
    y = (rng.random(256) < 0.5).astype("int32")
    x[y == 1, rng.integers(0, 10, int(y.sum()))] = 3
    classifier.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy"
    )
    history = classifier.fit(x, y, epochs=15, batch_size=32, verbose=0)
    result["losses"] = [float(v) for v in history.history["loss"]]
    print("RESULT " + json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("models"))
    keras.utils.set_random_seed(0)
    classifier = build_text_classifier(
        20, 10, 2, embed_dim=16, num_heads=2, ff_dim=24, num_layers=1
    )
    tokens = np.array([[5, 6, 3, 0, 0, 0, 0, 0, 0, 0], [7] * 10], "int32")
    probs = keras.ops.convert_to_numpy(classifier(tokens))
    classifier.save(os.path.join(folder, "classifier.keras"))
    seq2seq = Seq2SeqTransformer(
        12, 12, 6, 8, embed_dim=16, num_heads=2, ff_dim=24, dropout=0.0
    )
    source = np.array([[3, 4, 5, 6, 0, 0], [7, 8, 9, 0, 0, 0]], "int32")
    outputs = {
        method: keras.ops.convert_to_numpy(
            seq2seq.generate(source, 8, 1, 2, method=method)
        )
        for method in ("greedy", "beam")
    }
    seq2seq.save(os.path.join(folder, "seq2seq.keras"))
    lm = CausalLM(
        20,
        2,
        16,
        4,
        24,
        dropout=0.0,
        tie_embeddings=False,
        block_options={"num_key_value_heads": 2},
    )
    # Left-padded prompts of different lengths.
    prompt = np.array([[0, 0, 5, 6, 7], [9, 8, 7, 6, 5]], "int32")
    for sampler in ("greedy", "top_p", "beam"):
        outputs["lm_" + sampler] = keras.ops.convert_to_numpy(
            lm.generate(prompt, 6, sampler=sampler, seed=7)
        )
    lm.save(os.path.join(folder, "causal_lm.keras"))
    np.savez(
        os.path.join(folder, "data.npz"),
        tokens=tokens,
        probs=probs,
        source=source,
        prompt=prompt,
        **outputs,
    )
    return folder


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_load_generate_and_train_on(backend, saved):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, saved],
        env={
            **os.environ,
            "KERAS_BACKEND": backend,
            "PYTHONPATH": ROOT,
            "PYTHONWARNINGS": (
                f"error,ignore:{KERAS_ARRAY_COPY}:DeprecationWarning"
            ),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[-1][len("RESULT ") :])
    assert result["backend"] == backend
    assert result["probs_diff"] < 1e-5, result
    assert result["greedy"] and result["beam"], result
    # The decoder-only model: same tokens, stochastic sampler included.
    assert result["lm_greedy"] and result["lm_beam"], result
    assert result["lm_top_p"], result
    losses = result["losses"]
    # log(2) = 0.69 at chance; the presence of one token is learnable.
    assert losses[-1] < 0.3, losses
