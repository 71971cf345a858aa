"""Plot step time and peak memory against sequence length.

Draws `docs/assets/scaling.png` for the documentation's "Long sequences and
performance" page: `MultiHeadSelfAttention` (automatic dense/chunked path,
with and without `window=128`) against `keras.layers.MultiHeadAttention`.

The numbers are not measured here: they are copied from the tables of
`benchmarks/RESULTS.md`, section "Memory: long sequences", produced by

    python benchmarks/attention_memory.py
    python benchmarks/attention_memory.py --window 128 --impls auto dense

(batch 1, width 256, 8 heads, float32, one forward + backward step; peak
RSS of a fresh process, TensorFlow itself included; median of 3 steps).
Re-run those commands, update the tables there and the numbers below, then
this script:

    python benchmarks/plot_scaling.py
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

# benchmarks/RESULTS.md, "Memory: long sequences", first table (full keys).
# Length -> (peak RSS in GB, step time in s); None where the run was skipped
# (Keras MHA is killed at 16,384 tokens on the 24 GB machine).
FULL = {
    "ours (attention_impl='auto')": {
        4096: (1.24, 0.33),
        8192: (1.43, 1.14),
        16384: (1.62, 4.56),
        32768: (2.04, 22.34),
    },
    "keras.layers.MultiHeadAttention": {
        4096: (2.21, 0.36),
        8192: (6.96, 1.26),
    },
}
# Same section, the sentence below the first table: our dense path at 8,192
# tokens, 2.93 GB and 0.95 s (a separate run).
DENSE_8192 = (2.93, 0.95)
# Same section, second table: `window=128` (a band of 257 keys).
WINDOW = {
    "ours, window=128, 'auto' (chunked band)": {
        4096: (0.78, 0.06),
        8192: (0.96, 0.11),
        16384: (1.23, 0.22),
        32768: (1.85, 0.44),
    },
    "ours, window=128, 'dense' (masked T x T)": {
        4096: (1.28, 0.27),
        8192: (3.09, 1.15),
    },
}
STYLES = {
    "ours (attention_impl='auto')": dict(color="C1", marker="o"),
    "keras.layers.MultiHeadAttention": dict(color="C0", marker="s"),
    "ours, window=128, 'auto' (chunked band)": dict(
        color="C2", marker="^", linestyle="--"
    ),
    "ours, window=128, 'dense' (masked T x T)": dict(
        color="C7", marker="v", linestyle=":"
    ),
}


def plot(path):
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for series in (FULL, WINDOW):
        for label, rows in series.items():
            lengths = sorted(rows)
            memory = [rows[t][0] for t in lengths]
            seconds = [rows[t][1] for t in lengths]
            style = STYLES[label]
            ax_time.plot(lengths, seconds, label=label, **style)
            ax_mem.plot(lengths, memory, label=label, **style)
    # Keras MHA runs out of the machine's 24 GB at 16,384 tokens.
    for ax in (ax_time, ax_mem):
        ax.axvline(16384, color="C0", alpha=0.25, linewidth=6)
    ax_mem.annotate(
        "Keras MHA killed\n(out of memory)",
        xy=(16384, 6.96),
        xytext=(17500, 5.2),
        color="C0",
        fontsize=8,
    )
    ax_mem.plot([8192], [DENSE_8192[0]], "x", color="C1", markersize=9, mew=2)
    ax_mem.annotate(
        "ours, 'dense' forced",
        xy=(8192, DENSE_8192[0]),
        xytext=(9000, DENSE_8192[0] - 0.1),
        fontsize=8,
        color="C1",
    )
    ax_time.plot(
        [8192],
        [DENSE_8192[1]],
        "x",
        color="C1",
        markersize=9,
        mew=2,
        label="ours, attention_impl='dense' (8,192 only)",
    )
    ax_time.set_yscale("log")
    ax_time.set_ylabel("forward + backward step (s, log scale)")
    ax_mem.set_ylabel("peak RSS (GB, TensorFlow included)")
    ax_mem.set_ylim(0, 8)
    for ax in (ax_time, ax_mem):
        ax.set_xscale("log", base=2)
        ax.set_xticks([4096, 8192, 16384, 32768])
        ax.set_xticklabels(["4,096", "8,192", "16,384", "32,768"])
        ax.set_xlabel("sequence length (tokens)")
        ax.grid(alpha=0.3)
    ax_time.set_title("Step time")
    ax_mem.set_title("Peak memory")
    ax_time.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "Self-attention, batch 1, width 256, 8 heads, float32, 2-core CPU "
        "(benchmarks/RESULTS.md)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, os.pardir, "docs", "assets", "scaling.png")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=os.path.normpath(default))
    args = parser.parse_args(argv)
    print(plot(args.output))


if __name__ == "__main__":
    main()
