"""A deliberately naive NumPy attention: the oracle for the layer tests.

Loops over batch, head, query and key one element at a time, so it shares
no code (and no clever bug) with the vectorised layers.
"""

import math

import numpy as np


def _softmax_over(values):
    """Softmax of a 1-D list; an empty list gives an empty list."""
    if not values:
        return []
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def allowed(i, j, causal=False, window=None, query_offset=0):
    """Whether query position `i` may attend to key position `j`."""
    qi = i + query_offset
    if causal and j > qi:
        return False
    if window is not None and abs(qi - j) > window:
        return False
    return True


def attention(
    query_inputs,
    context,
    weights,
    num_heads,
    query_mask=None,
    key_mask=None,
    attention_mask=None,
    causal=False,
    window=None,
    score="dot_product",
    query_offset=0,
):
    """Multi-head attention of `query_inputs` (B, Tq, D) over `context`.

    `weights` is a dict of NumPy arrays named like the layer's weights:
    `query_kernel (D, N, H)`, `key_kernel`, `value_kernel (D, N, V)`,
    `output_kernel (N, V, O)`, optional biases, and `score_vector (N, H)` for
    the additive score. Returns `(outputs (B, Tq, O), probs (B, N, Tq, Tk))`.
    A query with no allowed key outputs zeros.
    """
    q_in = np.asarray(query_inputs, dtype=np.float64)
    c_in = np.asarray(context, dtype=np.float64)
    batch, tq, _ = q_in.shape
    tk = c_in.shape[1]
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    head_dim = w["query_kernel"].shape[2]
    out_dim = w["output_kernel"].shape[2]
    outputs = np.zeros((batch, tq, out_dim))
    probs = np.zeros((batch, num_heads, tq, tk))
    for b in range(batch):
        for i in range(tq):
            keys = []
            for j in range(tk):
                ok = allowed(i, j, causal, window, query_offset)
                if query_mask is not None and not query_mask[b][i]:
                    ok = False
                if key_mask is not None and not key_mask[b][j]:
                    ok = False
                if attention_mask is not None:
                    am = attention_mask[b if len(attention_mask) > 1 else 0]
                    if not am[i][j]:
                        ok = False
                if ok:
                    keys.append(j)
            if not keys:
                continue  # no key: zeros, not the output bias
            row = np.zeros(out_dim)
            for n in range(num_heads):
                q = q_in[b, i] @ w["query_kernel"][:, n, :]
                if "query_bias" in w:
                    q = q + w["query_bias"][n]
                logits = []
                values = []
                for j in keys:
                    k = c_in[b, j] @ w["key_kernel"][:, n, :]
                    v = c_in[b, j] @ w["value_kernel"][:, n, :]
                    if "key_bias" in w:
                        k = k + w["key_bias"][n]
                        v = v + w["value_bias"][n]
                    if score == "dot_product":
                        logits.append(float(q @ k) / math.sqrt(head_dim))
                    else:
                        hidden = np.tanh(q + k)
                        logits.append(float(hidden @ w["score_vector"][n]))
                    values.append(v)
                p = _softmax_over(logits)
                mixed = sum(pj * vj for pj, vj in zip(p, values, strict=True))
                for pj, j in zip(p, keys, strict=True):
                    probs[b, n, i, j] = pj
                row += mixed @ w["output_kernel"][n]
            if "output_bias" in w:
                row += w["output_bias"]
            outputs[b, i] = row
    return outputs, probs


def sinusoidal(length, dim, start=0, base=10000.0):
    """The Vaswani et al. table: sin on even features, cos on odd ones."""
    table = np.zeros((length, dim))
    for pos in range(length):
        for f in range(dim):
            angle = (pos + start) / base ** (2 * (f // 2) / dim)
            table[pos, f] = math.sin(angle) if f % 2 == 0 else math.cos(angle)
    return table
