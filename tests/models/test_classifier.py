"""Tests for `build_text_classifier`."""

import keras
import numpy as np
import pytest

from keras_selfattn.models import build_text_classifier


def test_learns_and_handles_empty_rows(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 30, size=(256, 8)).astype("int32")
    ids[rng.random(ids.shape) < 0.3] = 0
    labels = (ids == 7).any(axis=1).astype("int32")  # "contains token 7"
    model = build_text_classifier(
        30, 8, 2, embed_dim=16, num_heads=2, ff_dim=32
    )
    model.compile(
        "adam", "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(ids, labels, epochs=15, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    empty = model.predict(np.zeros((1, 8), "int32"), verbose=0)
    assert np.all(np.isfinite(empty)) and empty.dtype == np.float32
    path = str(tmp_path / "c.keras")
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        again.predict(ids[:8], verbose=0), model.predict(ids[:8], verbose=0)
    )


def test_mixed_precision_outputs_float32():
    model = build_text_classifier(
        30, 8, 3, embed_dim=16, num_heads=2, ff_dim=32, norm_first=True
    )
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = build_text_classifier(
            30, 8, 3, embed_dim=16, num_heads=2, ff_dim=32, norm_first=True
        )
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(model.get_weights())
    ids = np.array([[4, 5, 6, 0], [0, 0, 0, 0]])
    out = mixed.predict(ids, verbose=0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, model.predict(ids, verbose=0), atol=1e-2)


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"num_classes": 1}, "num_classes"), ({"num_layers": 0}, "num_layers")],
)
def test_invalid_arguments(kwargs, argument):
    args = {"vocabulary_size": 10, "sequence_length": 4, "num_classes": 2}
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        build_text_classifier(**{**args, **kwargs})
