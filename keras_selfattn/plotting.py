"""Attention heatmaps with matplotlib (imported on first use)."""

import importlib

import numpy as np

from keras_selfattn.layers import _validation


def plot_attention(
    weights, query_tokens, key_tokens, path, title=None, max_heads=4
):
    """Save a heatmap of attention weights with token labels on both axes.

    Args:
        weights: array `(heads, query_len, key_len)` or
            `(query_len, key_len)` for one example, e.g. one row of the
            scores from `return_attention_scores=True`.
        query_tokens: list of str, labels for the rows (queries).
        key_tokens: list of str, labels for the columns (keys).
        path: str, where to write the PNG.
        title: str or `None`, a figure title.
        max_heads: int >= 1, the most heads to draw side by side: the first
            `max_heads`, each titled "head i of n" so a partial view says
            so. Defaults to 4.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> from keras_selfattn.plotting import plot_attention
    >>> path = os.path.join(tempfile.mkdtemp(), "attention.png")
    >>> weights = np.full((2, 3, 3), 1 / 3)
    >>> plot_attention(weights, ["a", "b", "c"], ["a", "b", "c"], path) == path
    True
    """
    max_heads = _validation.positive_int("max_heads", max_heads)
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # no display needed
    plt = importlib.import_module("matplotlib.pyplot")
    weights = np.asarray(weights, dtype="float32")
    if weights.ndim == 2:
        weights = weights[None]
    if weights.ndim != 3:
        raise ValueError(
            "Received an invalid value for argument `weights`, expected shape "
            "(heads, query_len, key_len) or (query_len, key_len). Received: "
            f"weights.shape={weights.shape}"
        )
    heads, query_len, key_len = weights.shape
    if len(query_tokens) != query_len or len(key_tokens) != key_len:
        raise ValueError(
            "Received an invalid value for argument `query_tokens`/"
            f"`key_tokens`, expected {query_len} and {key_len} labels. "
            f"Received: {len(query_tokens)} and {len(key_tokens)}"
        )
    shown = min(heads, max_heads)
    size = max(3.0, 0.35 * max(query_len, key_len) + 1.5)
    fig, axes = plt.subplots(
        1, shown, figsize=(size * shown, size), squeeze=False
    )
    for h, ax in enumerate(axes[0]):
        image = ax.imshow(weights[h], cmap="viridis", vmin=0.0)
        ax.set_xticks(range(key_len))
        ax.set_xticklabels(key_tokens, rotation=90)
        ax.set_yticks(range(query_len))
        ax.set_yticklabels(query_tokens)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        ax.set_title(f"head {h + 1} of {heads}")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
