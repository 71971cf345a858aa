"""Tests for the attention heatmap."""

import numpy as np
import pytest

from keras_selfattn.plotting import plot_attention


def test_writes_a_png(tmp_path):
    path = str(tmp_path / "a.png")
    weights = np.random.default_rng(0).random((3, 4, 5))
    plot_attention(weights, list("abcd"), list("vwxyz"), path, title="t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_shapes(tmp_path):
    path = str(tmp_path / "a.png")
    with pytest.raises(ValueError, match="argument `weights`"):
        plot_attention(np.zeros(3), ["a"], ["a"], path)
    with pytest.raises(ValueError, match="argument `query_tokens`"):
        plot_attention(np.zeros((2, 2)), ["a"], ["a", "b"], path)
