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


def test_head_titles_say_how_many_are_shown(tmp_path, monkeypatch):
    import matplotlib.axes

    titles = []
    original = matplotlib.axes.Axes.set_title

    def spy(self, label, *args, **kwargs):
        titles.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", spy)
    weights = np.random.default_rng(0).random((8, 2, 2))
    plot_attention(weights, ["a", "b"], ["a", "b"], str(tmp_path / "a.png"))
    assert titles == [f"head {i} of 8" for i in range(1, 5)]
    titles.clear()
    plot_attention(weights[0], ["a", "b"], ["a", "b"], str(tmp_path / "b.png"))
    assert titles == ["head 1 of 1"]


@pytest.mark.parametrize("max_heads", [0, -1, 2.5, None])
def test_bad_max_heads(tmp_path, max_heads):
    with pytest.raises(ValueError, match="argument `max_heads`"):
        plot_attention(
            np.zeros((2, 2)),
            ["a", "b"],
            ["a", "b"],
            "x.png",
            max_heads=max_heads,
        )
