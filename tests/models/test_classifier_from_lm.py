"""`build_classifier_from_lm`, `CausalLMBackbone`, `CausalLM.hidden_states`:
a classifier fine-tuned from a (pre-trained) language model."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_selfattn  # noqa: F401  (registers the layers for safe_mode)
from keras_selfattn.export import export_classifier
from keras_selfattn.models import CausalLM
from keras_selfattn.models import CausalLMBackbone
from keras_selfattn.models import TextClassifier
from keras_selfattn.models import build_classifier_from_lm
from keras_selfattn.models import next_token_batch
from keras_selfattn.text import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[START]", "[END]"] + (
    "the a movie film was great awful not good bad plot , . ! ##s ##ly".split()
)


def _lm(vocab_size=30, **kwargs):
    options = {
        "num_layers": 2,
        "hidden_dim": 16,
        "num_heads": 2,
        "ff_dim": 24,
        "dropout": 0.0,
        **kwargs,
    }
    return CausalLM(vocab_size=vocab_size, **options)


def _np(x):
    return ops.convert_to_numpy(x)


def test_hidden_states_are_what_the_logits_project():
    lm = _lm()
    ids = np.array([[4, 5, 6, 0], [7, 0, 0, 0]])
    hidden = lm.hidden_states(ids)
    assert tuple(hidden.shape) == (2, 4, 16)
    mask = _np(hidden._keras_mask)
    np.testing.assert_array_equal(mask, ids != 0)
    table = _np(lm.token_embedding.embeddings)
    np.testing.assert_allclose(
        _np(hidden) @ table.T, _np(lm(ids)), rtol=1e-5, atol=1e-5
    )
    # The dict form of `call` and an explicit padding mask.
    explicit = lm.hidden_states({"token_ids": ids, "padding_mask": ids != 0})
    np.testing.assert_allclose(_np(explicit), _np(hidden), atol=1e-6)


@pytest.mark.parametrize("trainable", [True, False])
def test_shares_the_lm_weights(trainable):
    # Untied: the LM's output projection is no weight of the classifier
    # (it would get no gradient, a warning, an error here).
    lm = _lm(tie_embeddings=False, position_embedding="learned", max_length=8)
    model = build_classifier_from_lm(
        lm, 3, dropout=0.0, trainable_backbone=trainable
    )
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, CausalLMBackbone)
    assert backbone.causal_lm is lm
    embedding = lm.token_embedding.embeddings
    ids_of = {id(w) for w in model.weights}
    assert id(embedding) in ids_of
    assert id(lm.output_projection.kernel) not in ids_of
    # Trainable: the LM's weights minus its projection, plus the head's.
    expected = len(lm.trainable_weights) - 1 if trainable else 0
    assert len(model.trainable_weights) == expected + 2
    before = [_np(w).copy() for w in lm.weights]
    head = _np(model.get_layer("probabilities").kernel).copy()
    ids = np.array([[4, 5, 6, 0], [7, 8, 0, 0], [9, 4, 5, 6]])
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    model.train_on_batch(ids, np.array([0, 1, 2]))
    changed = [
        not np.array_equal(b, _np(w))
        for b, w in zip(before, lm.weights, strict=True)
    ]
    # Shared: fine-tuning moves the LM's own weights, all but its unused
    # projection; frozen: none of them, while the head still learns.
    assert changed[lm.weights.index(embedding)] is trainable
    assert sum(changed) == (len(lm.weights) - 1 if trainable else 0)
    assert not np.array_equal(
        head, _np(model.get_layer("probabilities").kernel)
    )


@pytest.mark.parametrize(
    "pooling, positions",
    [("mean", "learned"), ("last", "rotary"), ("max", "sinusoidal")],
)
def test_padding_gives_what_a_row_gives_alone(pooling, positions):
    lm = _lm(position_embedding=positions, max_length=8, dropout=0.1)
    model = build_classifier_from_lm(lm, 2, pooling=pooling)
    alone = _np(model(np.array([[4, 5, 6]])))
    padded = np.array(
        [[4, 5, 6, 0, 0], [0, 0, 4, 5, 6], [0, 4, 5, 6, 0], [0, 0, 0, 0, 0]]
    )
    out = _np(model(padded))
    for row in out[:3]:
        np.testing.assert_allclose(row, alone[0], atol=1e-5)
    assert np.all(np.isfinite(out[3]))
    # The last token is what "last" reads: changing it changes the output.
    other = _np(model(np.array([[4, 5, 7]])))
    assert not np.allclose(other, alone, atol=1e-4)


def test_saves_reloads_and_exports(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_classifier_from_lm(_lm(len(VOCAB), num_layers=1), 2)
    # Trained a step: the saved weights are not the initial ones.
    ids = np.array([[9, 10, 11, 0], [12, 13, 0, 0]], "int32")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.train_on_batch(ids, np.array([0, 1]))
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(again.get_layer("backbone").causal_lm, CausalLM)
    expected = model.predict(ids, verbose=0)
    np.testing.assert_allclose(again.predict(ids, verbose=0), expected)
    # Raw strings in: the wrapper and the serving export take it.
    tokenizer = WordPieceTokenizer(VOCAB, sequence_length=8)
    texts = ["a great movie", "bad plot !", ""]
    want = _np(model(tokenizer(tf.constant(texts))))
    wrapped = TextClassifier(tokenizer, model, ["other", "great"])
    np.testing.assert_allclose(_np(wrapped(texts)), want, atol=1e-6)
    version = export_classifier(model, tokenizer, str(tmp_path / "serving"))
    served = tf.saved_model.load(version).signatures["serving_default"]
    out = served(text=tf.constant(texts))
    np.testing.assert_allclose(out["probabilities"].numpy(), want, atol=1e-5)


def _stride_corpus(rng, size, vocab=16, length=10):
    """Rows `s, s + k, s + 2k, ...` (mod `vocab`, ids from 1) with stride
    `k = 1` (label 0) or `k = 3` (label 1): a language model must find the
    stride to predict the next token."""
    labels = rng.integers(0, 2, size)
    start = rng.integers(0, vocab, size)[:, None]
    steps = np.where(labels == 0, 1, 3)[:, None] * np.arange(length)
    return ((start + steps) % vocab + 1).astype("int32"), labels


@pytest.mark.slow
def test_pretraining_helps():
    # It learns (accuracy), and the same few fine-tuning steps (6, on 32
    # labelled rows) from a language model pre-trained on unlabelled rows
    # of the same kind and from a fresh one: the pre-trained start
    # classifies held-out rows far better (in 3 seeds: held-out loss
    # 0.10-0.20 against 0.56-1.14).
    rng = np.random.default_rng(0)
    unlabelled, _ = _stride_corpus(rng, 512)
    train, train_labels = _stride_corpus(rng, 32)
    test, test_labels = _stride_corpus(rng, 256)

    def model_from(lm):
        keras.utils.set_random_seed(1)
        model = build_classifier_from_lm(lm, 2, dropout=0.0)
        model.compile(
            keras.optimizers.Adam(1e-2),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(train, train_labels, batch_size=16, epochs=3, verbose=0)
        return model.evaluate(test, test_labels, verbose=0)

    keras.utils.set_random_seed(0)
    pretrained = _lm(17, num_layers=1, hidden_dim=32, ff_dim=64)
    pretrained.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y, w = next_token_batch(unlabelled)
    history = pretrained.fit(
        x, y, sample_weight=w, batch_size=32, epochs=10, verbose=0
    )
    assert history.history["loss"][-1] < 0.2  # it learned the strides
    keras.utils.set_random_seed(0)
    fresh = _lm(17, num_layers=1, hidden_dim=32, ff_dim=64)
    loss, accuracy = model_from(pretrained)
    fresh_loss, fresh_accuracy = model_from(fresh)
    assert accuracy > 0.9
    assert loss < 0.5 * fresh_loss


@pytest.mark.parametrize(
    "kwargs, argument, error",
    [
        ({"num_classes": 1}, "num_classes", ValueError),
        ({"pooling": "first"}, "pooling", ValueError),
        ({"dropout": 1.0}, "dropout", ValueError),
        ({"trainable_backbone": "yes"}, "trainable_backbone", TypeError),
        ({"causal_lm": "gpt"}, "causal_lm", TypeError),
    ],
)
def test_invalid_arguments(kwargs, argument, error):
    args = {"causal_lm": _lm(num_layers=1), "num_classes": 2}
    with pytest.raises(error, match=f"argument `{argument}`"):
        build_classifier_from_lm(**{**args, **kwargs})


def test_backbone_refuses_a_model_that_is_not_a_causal_lm():
    with pytest.raises(TypeError, match="argument `causal_lm`.*Sequential"):
        CausalLMBackbone(keras.Sequential([keras.layers.Dense(2)]))
