"""On-device generation: `export_causal_lm_litert` and `litert_generate`
give the tokens of `CausalLM.generate(..., sampler="greedy")`."""

import importlib.util

import keras
import numpy as np
import pytest

from keras_selfattn.export import export_causal_lm_litert
from keras_selfattn.export import litert_generate
from keras_selfattn.models import CausalLM

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ai_edge_litert") is None,
    reason="needs the ai-edge-litert interpreter (the `test` extra)",
)

# Every size different: vocabulary 23, width 12, 3 heads, feed-forward 11.
V = 23
# Rows padded on either side, and a row that is only padding.
PROMPTS = np.array(
    [[1, 5, 6, 7, 9], [0, 0, 1, 9, 4], [1, 8, 0, 0, 0]], dtype="int32"
)


@pytest.mark.parametrize(
    "options",
    [
        {"block_options": {"num_key_value_heads": 1}},  # rotary, GQA
        {"position_embedding": "learned", "max_length": 16},
    ],
    ids=["rotary_gqa", "learned"],
)
def test_litert_greedy_tokens_equal_generate(tmp_path, options):
    keras.utils.set_random_seed(3)
    lm = CausalLM(
        V,
        2,
        12,
        3,
        11,
        dropout=0.0,
        # Untied and wide: an untrained model that does not just repeat
        # a token (tied embeddings predict the last token again).
        tie_embeddings=False,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
        **options,
    )
    path = export_causal_lm_litert(lm, tmp_path / "lm.tflite", max_length=14)
    expected = np.asarray(lm.generate(PROMPTS, 9, stop_token_ids=2))
    got = litert_generate(path, PROMPTS, 9, stop_token_ids=2)
    np.testing.assert_array_equal(got, expected)
    # Any batch size: one row alone (it generates what it did in a batch).
    alone = litert_generate(path, PROMPTS[2:], 9, stop_token_ids=2)
    np.testing.assert_array_equal(alone, expected[2:])
    assert all(len(set(row)) > 2 for row in expected.tolist())  # varied


def test_errors_name_the_argument(tmp_path):
    lm = CausalLM(V, 1, 12, 3, 11, position_embedding="learned", max_length=8)
    with pytest.raises(ValueError, match="argument `max_length`"):
        export_causal_lm_litert(lm, tmp_path / "lm.tflite", max_length=9)
    with pytest.raises(ValueError, match="argument `max_length`"):
        export_causal_lm_litert(lm, tmp_path / "lm.tflite", max_length=1)
    with pytest.raises(TypeError, match="argument `causal_lm`"):
        export_causal_lm_litert("lm", tmp_path / "lm.tflite", max_length=8)
    path = export_causal_lm_litert(lm, tmp_path / "lm.tflite", max_length=8)
    with pytest.raises(ValueError, match="argument `prompt_ids`"):
        litert_generate(path, PROMPTS[0], 2)
    with pytest.raises(
        ValueError, match=r"argument `max_new_tokens`.*\[1, 4\]"
    ):
        litert_generate(path, PROMPTS[:1], 5)
