"""Training under `tf.distribute.MirroredStrategy` matches one device."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(
    os.path.dirname(__file__), "scripts", "distributed_training.py"
)


@pytest.mark.parametrize(
    "layers", [["MultiHeadSelfAttention", "TransformerBlock"]]
)
def test_mirrored_strategy_matches_single_device(layers):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, SCRIPT, *layers],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert losses["replicas"] == 2
    assert np.all(np.isfinite(losses["single"]))
    np.testing.assert_allclose(losses["mirrored"], losses["single"], rtol=1e-4)
    assert losses["single"][-1] < losses["single"][0]
