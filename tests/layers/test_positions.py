"""Relative positions inside attention (rotary, ALiBi) and the score
options (QK-norm, logit soft-capping), on every attention path.

Checked against NumPy references written from the papers' formulas, between
the kernels (the dense fast path and the chunked and banded ones have
hand-written backward passes; the explicit path uses autodiff), against a
cached step-by-step decode, and for the property that makes them relative:
left padding does not change the outputs at the valid positions.
"""

import hypothesis
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import strategies as st

from keras_selfattn import MultiHeadSelfAttention
from keras_selfattn import PositionalEncoding
from keras_selfattn.layers import _kernels
from keras_selfattn.layers import _positions
from tests import harness

BATCH, LENGTH, WIDTH, HEADS = 2, 7, 12, 3
OPTIONS = {
    "rotary": {"position_embedding": "rotary"},
    "partial_rotary": {
        "position_embedding": "rotary",
        "rotary_fraction": 0.5,
        "rotary_max_wavelength": 500.0,
        "rotary_scaling_factor": 2.0,
    },
    "alibi": {"position_embedding": "alibi"},
    "soft_cap": {"logit_soft_cap": 0.5},
    "qk_norm": {"qk_norm": True},
    "all": {
        "position_embedding": "rotary",
        "qk_norm": True,
        "logit_soft_cap": 1.0,
        "num_key_value_heads": 1,
    },
    "relative": {"position_embedding": "relative"},
    "relative_window_gqa": {
        "position_embedding": "relative",
        "relative_num_buckets": 6,
        "relative_max_distance": 4,
        "window": 2,
        "num_key_value_heads": 1,
    },
    "alibi_window_cap": {
        "position_embedding": "alibi",
        "window": 2,
        "logit_soft_cap": 0.7,
    },
}


def _inputs(seed=0, length=LENGTH):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(BATCH, length, WIDTH)).astype("float32")


def _mask(length=LENGTH):
    mask = np.ones((BATCH, length), dtype=bool)
    mask[0, length - 2 :] = False
    return mask


def rotary_reference(x, positions, wavelength=10000.0, scaling=1.0, dim=None):
    """RoFormer in the half-split layout, in float64: feature pair
    `(k, k + d/2)` rotates by `p * wavelength^(-2k/d) / scaling`."""
    x = np.asarray(x, dtype=np.float64)
    dim = x.shape[-1] if dim is None else dim
    half = dim // 2
    out = x.copy()
    for k in range(half):
        theta = wavelength ** (-2.0 * k / dim) / scaling
        angle = np.asarray(positions, dtype=np.float64)[..., :, None] * theta
        a, b = x[..., k], x[..., k + half]
        cos, sin = np.cos(angle[..., 0]), np.sin(angle[..., 0])
        out[..., k] = a * cos - b * sin
        out[..., k + half] = b * cos + a * sin
    return out


def test_apply_rotary_matches_the_reference_full_and_partial():
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 8)).astype("float32")
    positions = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    for dim, wavelength, scaling in ((8, 10000.0, 1.0), (4, 50.0, 3.0)):
        got = _positions.apply_rotary(x, positions, wavelength, scaling, dim)
        expected = rotary_reference(
            x, positions[:, None], wavelength, scaling, dim
        )
        np.testing.assert_allclose(harness.to_numpy(got), expected, atol=1e-5)


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
@hypothesis.given(
    i=st.integers(0, 40), j=st.integers(0, 40), shift=st.integers(1, 500)
)
def test_rotary_scores_depend_only_on_the_distance(i, j, shift):
    rng = np.random.default_rng(3)
    q, k = rng.normal(size=(2, 1, 1, 1, 16)).astype("float32")
    rotate = _positions.apply_rotary

    def score(pi, pj):
        qr = rotate(q, np.array([[pi]]), 10000.0, 1.0)
        kr = rotate(k, np.array([[pj]]), 10000.0, 1.0)
        return float(np.sum(harness.to_numpy(qr) * harness.to_numpy(kr)))

    assert score(i, j) == pytest.approx(score(i + shift, j + shift), abs=1e-4)


def test_alibi_slopes_follow_the_paper():
    # Press et al.: 2^(-8/n), 2^(-16/n), ... for n a power of two.
    np.testing.assert_allclose(
        _positions.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)]
    )
    # 12 heads: the 8-head slopes, then every other 16-head slope.
    expected = [2.0 ** -(i + 1) for i in range(8)]
    expected += [2.0 ** -(0.5 * (2 * i + 1)) for i in range(4)]
    np.testing.assert_allclose(_positions.alibi_slopes(12), expected)


def t5_bucket_reference(relative, bidirectional, num_buckets, max_distance):
    """T5's bucket (Raffel et al.; the Mesh TensorFlow / Hugging Face
    formula) of each relative position `j - i`, in NumPy."""
    relative = np.asarray(relative)
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0) * num_buckets
        distance = np.abs(relative)
    else:
        distance = -np.minimum(relative, 0)
    exact = num_buckets // 2
    with np.errstate(divide="ignore"):
        large = exact + (
            np.log(np.maximum(distance, 1) / exact)
            / np.log(max_distance / exact)
            * (num_buckets - exact)
        ).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(distance < exact, distance, large)


def test_t5_buckets_match_the_reference():
    relative = np.arange(-300, 301)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (6, 4), (8, 20)):
            got = _kernels.relative_buckets(
                relative, bidirectional, buckets, distance
            )
            expected = t5_bucket_reference(
                relative, bidirectional, buckets, distance
            )
            np.testing.assert_array_equal(harness.to_numpy(got), expected)
    # A few values by hand (32 buckets up to 128, bidirectional): exact
    # distances first, later keys in the upper half, then logarithmic.
    got = _kernels.relative_buckets(
        np.array([0, 1, -1, -8, -127, -500]), True, 32, 128
    )
    assert harness.to_numpy(got).tolist() == [0, 17, 1, 8, 15, 15]


def _reference_probs(layer, x, mask, causal=False):
    """NumPy probabilities of the layer's scores with its options."""
    w = {harness.weight_name(v): harness.to_numpy(v) for v in layer.weights}
    q = (
        np.einsum("btd,dnh->bnth", x, w["query_kernel"])
        + w["query_bias"][None, :, None]
    )
    k = (
        np.einsum("btd,dnh->bnth", x, w["key_kernel"])
        + w["key_bias"][None, :, None]
    )
    k = np.repeat(k, HEADS // k.shape[1], axis=1)
    if layer.qk_norm:

        def rms(v, scale):
            return v / np.sqrt(np.mean(v**2, -1, keepdims=True) + 1e-6) * scale

        q, k = rms(q, w["query_norm_scale"]), rms(k, w["key_norm_scale"])
    positions = np.arange(x.shape[1])[None, None]
    if layer.position_embedding == "rotary":
        args = (
            layer.rotary_max_wavelength,
            layer.rotary_scaling_factor,
            layer._rotary_dim,
        )
        q = rotary_reference(q, positions, *args)
        k = rotary_reference(k, positions, *args)
    scores = np.einsum("bnqh,bnkh->bnqk", q, k) / np.sqrt(q.shape[-1])
    if layer.position_embedding == "alibi":
        slopes = _positions.alibi_slopes(HEADS)[None, :, None, None]
        i = np.arange(x.shape[1])
        scores = scores - slopes * np.abs(i[:, None] - i[None, :])
    if layer.position_embedding == "relative":
        i = np.arange(x.shape[1])
        buckets = t5_bucket_reference(
            i[None, :] - i[:, None],
            not layer.causal,
            layer.relative_num_buckets,
            layer.relative_max_distance,
        )  # (T_q, T_k)
        table = w["relative_attention_bias"]  # (buckets, N)
        scores = scores + np.transpose(table[buckets], (2, 0, 1))[None]
    if layer.logit_soft_cap:
        cap = layer.logit_soft_cap
        scores = cap * np.tanh(scores / cap)
    allowed = mask[:, None, None, :] & mask[:, None, :, None]
    i = np.arange(x.shape[1])
    if layer.window is not None:
        allowed = allowed & (np.abs(i[:, None] - i[None, :]) <= layer.window)
    if causal:
        allowed = allowed & (i[:, None] >= i[None, :])
    scores = np.where(allowed, scores, -1e30)
    scores = scores - np.max(scores, -1, keepdims=True)
    probs = np.where(allowed, np.exp(scores), 0.0)
    total = probs.sum(-1, keepdims=True)
    return np.where(total > 0, probs / np.where(total > 0, total, 1), 0.0)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_probabilities_match_the_numpy_reference(option):
    x, mask = _inputs(), _mask()
    layer = MultiHeadSelfAttention(HEADS, **OPTIONS[option])
    layer(x)
    if layer.qk_norm:
        rng = np.random.default_rng(4)
        for weight in (layer.query_norm_scale, layer.key_norm_scale):
            weight.assign(rng.uniform(0.5, 2.0, size=weight.shape))
    _, probs = layer(x, mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(
        harness.to_numpy(probs),
        _reference_probs(layer, x, mask),
        atol=1e-5,
    )


def _outputs_and_gradients(layer, x, mask):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, mask=mask)
        # Weights that differ per element, so no gradient cancels.
        loss = tf.reduce_sum(
            y * y * tf.cast(tf.range(1, 1 + y.shape[-1]), y.dtype)
        )
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return harness.to_numpy(y), [harness.to_numpy(g) for g in grads]


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("causal", [False, True])
def test_every_kernel_agrees_with_the_explicit_path(option, causal):
    # The chunked (and, with a window, banded) kernel and the dense fast
    # path have hand-written gradients; the explicit path (dropout on, rate
    # ~0) uses autodiff.
    x, mask = _inputs(5), _mask()
    kwargs = {**OPTIONS[option], "causal": causal}
    reference = MultiHeadSelfAttention(HEADS, attention_impl="dense", **kwargs)
    reference(x)
    ref_y, ref_g = _outputs_and_gradients(_ExplicitPath(reference), x, mask)
    for impl, chunk in (("dense", None), ("chunked", 2), ("chunked", 4)):
        layer = MultiHeadSelfAttention(
            HEADS, attention_impl=impl, chunk_size=chunk, **kwargs
        )
        layer(x)
        layer.set_weights(reference.get_weights())
        y, g = _outputs_and_gradients(layer, x, mask)
        harness.assert_close(y, ref_y, 1e-5, f"{impl} outputs")
        for got, expected in zip(g, ref_g, strict=True):
            harness.assert_close(got, expected, 1e-4, f"{impl} gradients")


class _ExplicitPath:
    """Calls a layer so that it takes the explicit (autodiff) path."""

    def __init__(self, layer):
        self.layer = layer
        self.trainable_weights = layer.trainable_weights

    def __call__(self, x, mask):
        outputs, _ = self.layer(x, mask=mask, return_attention_scores=True)
        return outputs


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_cached_decoding_equals_the_full_call(option):
    x, mask = _inputs(6), _mask()
    layer = MultiHeadSelfAttention(HEADS, causal=True, **OPTIONS[option])
    full = harness.to_numpy(layer(x, mask=mask))
    cache = layer.init_cache(BATCH, LENGTH + 2)
    prompt, cache = layer(
        x[:, :3], mask=mask[:, :3], cache=cache, cache_update_index=0
    )
    steps = [harness.to_numpy(prompt)]
    for i in range(3, LENGTH):
        step, cache = layer(
            x[:, i : i + 1],
            mask=mask[:, i : i + 1],
            cache=cache,
            cache_update_index=i,
        )
        steps.append(harness.to_numpy(step))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def _left_padded(x, pad):
    padded = np.concatenate(
        [np.random.default_rng(9).normal(size=(BATCH, pad, WIDTH)), x], 1
    ).astype("float32")
    mask = np.concatenate(
        [np.zeros((BATCH, pad), bool), np.ones((BATCH, x.shape[1]), bool)], 1
    )
    return padded, mask


@pytest.mark.parametrize("scheme", ["rotary", "alibi", "relative"])
@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_left_padding_does_not_change_relative_positions(scheme, impl):
    x = _inputs(7)
    layer = MultiHeadSelfAttention(
        HEADS,
        causal=True,
        position_embedding=scheme,
        attention_impl=impl,
        chunk_size=2 if impl == "chunked" else None,
    )
    alone = harness.to_numpy(layer(x))
    padded, mask = _left_padded(x, 3)
    np.testing.assert_allclose(
        harness.to_numpy(layer(padded, mask=mask))[:, 3:], alone, atol=1e-5
    )


def test_left_padding_changes_absolute_positions():
    # The same property fails for positions added to the inputs: the test
    # above can fail.
    x = _inputs(7)
    positions = PositionalEncoding()
    layer = MultiHeadSelfAttention(HEADS, causal=True)
    alone = harness.to_numpy(layer(positions(x)))
    padded, mask = _left_padded(x, 3)
    shifted = harness.to_numpy(layer(positions(padded), mask=mask))[:, 3:]
    assert np.max(np.abs(shifted - alone)) > 1e-2


def test_option_errors_name_the_argument():
    for kwargs, name in (
        ({"position_embedding": "relative_t5"}, "position_embedding"),
        ({"relative_num_buckets": 3}, "relative_num_buckets"),
        ({"relative_max_distance": 16}, "relative_max_distance"),
        ({"position_embedding": "rotary", "score": "additive"}, "position"),
        ({"rotary_fraction": 1.5}, "rotary_fraction"),
        ({"rotary_fraction": 0}, "rotary_fraction"),
        ({"rotary_max_wavelength": -1}, "rotary_max_wavelength"),
        ({"logit_soft_cap": 0}, "logit_soft_cap"),
        ({"qk_norm": "yes"}, "qk_norm"),
    ):
        with pytest.raises((ValueError, TypeError), match=f"argument `{name}"):
            MultiHeadSelfAttention(HEADS, **kwargs)
    layer = MultiHeadSelfAttention(
        HEADS, position_embedding="rotary", rotary_fraction=0.2
    )
    with pytest.raises(ValueError, match="argument `rotary_fraction`"):
        layer(_inputs())  # key_dim 4: no feature pair to rotate


@pytest.mark.parametrize("check", ["config", "train", "masking", "saving"])
def test_contract_with_every_option(check):
    spec = harness.LayerSpec(
        cls=MultiHeadSelfAttention,
        init_kwargs={
            "num_heads": HEADS,
            "position_embedding": "rotary",
            "qk_norm": True,
            "logit_soft_cap": 5.0,
            "causal": True,
        },
        input_data=_inputs(),
        mask=np.array([[1] * 5 + [0, 0], [0] * 7], dtype=bool),
        expected_num_trainable_weights=10,
    )
    harness.CHECKS[check](spec)
