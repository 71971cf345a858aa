"""`keras.distribution` on JAX: DataParallel and ModelParallel match one device.

The training runs in a fresh interpreter with `KERAS_BACKEND=jax` and two
virtual CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`,
read when JAX starts; this process runs TensorFlow). The model has a token
embedding, a `TransformerBlock`, a grouped-query `TransformerBlock` with a
gated feed-forward network, pooling and a classifier, with padding and a
fully padded row; see `scripts/jax_distributed_training.py`.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "scripts", "jax_distributed_training.py")

# Only the order of float32 reductions differs between the runs (each
# device sums its half of the batch, or of the heads and hidden units, then
# the halves are added), about 1e-7 relative per reduction; four SGD steps
# grow that to ~1e-6 (measured: losses within 1e-6 relative, weights within
# 2e-6). A real fault (a gradient left unreduced across devices, a shard
# multiplied by the wrong slice) changes the losses in the second or third
# digit, and the weights by the size of an update (checked by
# `single_moved`).
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 2e-5

# Megatron-style: the q/k/v heads, the output projection's heads, the
# feed-forward hidden units and the token vocabulary are split; the rest is
# replicated.
SHARDED = {
    "self_attention/query/kernel": [None, "model", None],
    "self_attention/key/kernel": [None, "model", None],
    "self_attention/value/kernel": [None, "model", None],
    "self_attention/query/bias": ["model", None],
    "self_attention/key/bias": ["model", None],
    "self_attention/value/bias": ["model", None],
    "self_attention/output/kernel": ["model", None, None],
    "feedforward_intermediate_dense/kernel": [None, "model"],
    "feedforward_intermediate_dense/bias": ["model"],
    "feedforward_gate_dense/kernel": [None, "model"],
    "feedforward_gate_dense/bias": ["model"],
    "feedforward_output_dense/kernel": ["model", None],
    "token_embedding/embeddings": ["model", None],
}


def _run_script(*args):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed (it comes with the `test` extra)")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join(
            [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    result = subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
    return _run_script()


@pytest.mark.parametrize("run", ["data_parallel", "model_parallel"])
def test_distributed_training_matches_one_device(runs, run):
    assert runs["devices"] == 2
    assert len(runs["single"]) == 4
    assert np.all(np.isfinite(runs["single"]))
    np.testing.assert_allclose(runs[run], runs["single"], rtol=LOSS_RTOL)
    assert runs[f"{run}_weights"] < WEIGHT_ATOL
    assert runs["single_moved"] > 1000 * WEIGHT_ATOL


def test_model_parallel_shards_the_kernels(runs):
    placement = runs["placement"]
    for suffix, spec in SHARDED.items():
        paths = [p for p in placement if p.endswith("/" + suffix)]
        assert paths, suffix
        for path in paths:
            variable = placement[path]
            assert variable["spec"] == spec, path
            # One device holds half of the sharded axis.
            axis = spec.index("model")
            assert variable["shard"][axis] * 2 == variable["shape"][axis]
    # The grouped-query block's key kernel: 2 key/value heads, one each.
    grouped = [
        v
        for p, v in placement.items()
        if p.endswith("self_attention/key/kernel")
        and v["shape"][1] == 2
        and v["shape"][2] == 3
    ]
    assert [v["shard"] for v in grouped] == [[12, 1, 3]]
    # What the map leaves out is replicated.
    for path, variable in placement.items():
        if not any(path.endswith("/" + s) for s in SHARDED):
            assert set(variable["spec"]) == {None}, path
            assert variable["shard"] == variable["shape"], path


def test_multi_query_attention_replicates_key_and_value(runs):
    # One key/value head cannot be split over two devices: without the
    # map's key/value entries they are replicated, the query still split.
    placement = runs["multi_query_placement"]
    assert placement["mqa/self_attention/key/kernel"]["spec"] == [None] * 3
    assert placement["mqa/self_attention/value/bias"]["spec"] == [None] * 2
    query = placement["mqa/self_attention/query/kernel"]
    assert query["spec"] == [None, "model", None]
    assert query["shard"] == [12, 1, 6]
    assert runs["multi_query"] < 1e-5


@pytest.mark.slow
def test_the_guide_runs_on_two_devices():
    # docs/distributed.md's JAX section, which tests/test_docs.py skips
    # (it runs TensorFlow): the DataParallel + ModelParallel example and
    # the multi-query map, whose own asserts check the placements. Its own
    # process, as it compiles two more training steps (~25 s of CPU).
    assert _run_script("docs")["docs_blocks"] == 2
