"""Tests for `Seq2SeqTransformer`: training, cached decoding, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_selfattn.models import Seq2SeqTransformer
from tests.models.uncached import generate_uncached

START, END = 1, 2


def _model(**kwargs):
    args = {
        "source_vocabulary_size": 20,
        "target_vocabulary_size": 23,
        "source_length": 9,
        "target_length": 8,
        "embed_dim": 12,
        "num_heads": 3,
        "ff_dim": 11,
        "dropout": 0.0,
        **kwargs,
    }
    return Seq2SeqTransformer(**args)


def _source():
    return np.array(
        [[5, 6, 7, 8, 0, 0], [9, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
        dtype="int32",
    )


@pytest.mark.parametrize(
    "norm_first, copy", [(False, False), (True, False), (False, True)]
)
def test_cached_greedy_equals_uncached(norm_first, copy):
    keras.utils.set_random_seed(3)
    vocab = {"target_vocabulary_size": 20} if copy else {}
    model = _model(
        norm_first=norm_first,
        num_decoder_layers=2,
        copy_attention=copy,
        **vocab,
    )
    source = _source()
    cached = model.generate(source, 7, START, END)
    uncached = generate_uncached(model, source, 7, START, END)
    np.testing.assert_array_equal(np.asarray(cached), np.asarray(uncached))


def test_beam_width_one_equals_greedy_on_the_model():
    model = _model()
    greedy = model.generate(_source(), 6, START, END)
    beam = model.generate(_source(), 6, START, END, "beam", beam_width=1)
    np.testing.assert_array_equal(np.asarray(beam), np.asarray(greedy))


def test_empty_source_decodes_finite():
    model = _model()
    logits = model(
        {"encoder_ids": _source(), "decoder_ids": np.array([[START]] * 3)}
    )
    assert np.all(np.isfinite(np.asarray(logits)))


def _copy_data(n=256, length=5, vocab=12, seed=0):
    """Learn to copy the source: a task a working seq2seq solves fast."""
    rng = np.random.default_rng(seed)
    source = rng.integers(3, vocab, size=(n, length)).astype("int32")
    target = np.concatenate(
        [np.full((n, 1), START), source, np.full((n, 1), END)], axis=1
    ).astype("int32")
    return source, target[:, :-1], target[:, 1:]


def test_learns_to_copy_and_decoding_stops_at_end(tmp_path):
    keras.utils.set_random_seed(0)
    source, decoder_in, labels = _copy_data()
    model = Seq2SeqTransformer(
        12, 12, 5, 7, embed_dim=32, num_heads=4, ff_dim=64, dropout=0.0
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0
        ),
    )
    history = model.fit(
        {"encoder_ids": source, "decoder_ids": decoder_in},
        labels,
        batch_size=32,
        epochs=25,
        verbose=0,
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.3 * losses[0], losses
    test_source, _, test_labels = _copy_data(16, seed=1)
    tokens = np.asarray(model.generate(test_source, 7, START, END))
    assert np.mean(tokens[:, :6] == test_labels) > 0.9
    # Decoding stops at the end token: padding after it.
    for row in tokens:
        if END in row.tolist():
            assert np.all(row[row.tolist().index(END) + 1 :] == 0)
    beam = np.asarray(
        model.generate(test_source, 7, START, END, "beam", beam_width=3)
    )
    assert np.mean(beam[:, :6] == test_labels) > 0.9
    # Save and reload: same logits and same generated tokens.
    path = os.path.join(tmp_path, "seq2seq.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    inputs = {"encoder_ids": test_source, "decoder_ids": decoder_in[:16]}
    np.testing.assert_allclose(
        np.asarray(loaded(inputs)), np.asarray(model(inputs)), atol=1e-5
    )
    np.testing.assert_array_equal(
        np.asarray(loaded.generate(test_source, 7, START, END)), tokens
    )


def test_generate_in_tf_function():
    model = _model()
    generate = tf.function(
        lambda ids: model.generate(ids, 6, START, END, "beam", beam_width=2)
    )
    out = generate(tf.constant(_source()))
    assert tuple(out.shape) == (3, 6)


def test_shared_embeddings():
    model = _model(target_vocabulary_size=20, share_embeddings=True)
    model({"encoder_ids": _source(), "decoder_ids": np.array([[START, 4]] * 3)})
    assert model.encoder_embedding is model.decoder_embedding


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"num_encoder_layers": 0}, "num_encoder_layers"),
        ({"dropout": 1.5}, "dropout"),
        ({"share_embeddings": True}, "share_embeddings"),
        ({"copy_attention": True}, "copy_attention"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        _model(**kwargs)


def test_copy_attention_must_be_a_bool():
    with pytest.raises(TypeError, match="argument `copy_attention`"):
        _model(target_vocabulary_size=20, copy_attention="yes")


def test_invalid_generate_arguments():
    model = _model()
    with pytest.raises(ValueError, match="argument `max_length`"):
        model.generate(_source(), 99, START, END)
    with pytest.raises(ValueError, match="argument `method`"):
        model.generate(_source(), 4, START, END, method="sample")
    with pytest.raises(ValueError, match="argument `inputs`"):
        model({"encoder_ids": _source()})


def _copy_model(**kwargs):
    return _model(target_vocabulary_size=20, copy_attention=True, **kwargs)


def test_copy_attention_outputs_are_log_probabilities():
    keras.utils.set_random_seed(4)
    model = _copy_model()
    source = _source()
    decoder_ids = np.array([[START, 4, 5], [START, 3, 0], [START, 0, 0]])
    log_probs = np.asarray(
        model({"encoder_ids": source, "decoder_ids": decoder_ids})
    )
    assert log_probs.shape == (3, 3, 20)
    assert np.all(np.isfinite(log_probs))
    # Normalized at every position, padded ones and the empty source too.
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-5)


def test_copy_attention_puts_the_mass_of_repeated_ids_together():
    """The copy distribution is the head-averaged cross-attention summed
    onto the source ids (repeated ids add up), mixed by the gate."""
    keras.utils.set_random_seed(5)
    model = _copy_model(num_decoder_layers=1)
    model.build()
    source = np.array([[7, 7, 9, 0]], dtype="int32")
    decoder_ids = np.array([[START, 4]], dtype="int32")
    encoded = model.encode(source)
    mask = source != 0
    block = model.decoder_blocks[0]
    x = model.decoder_embedding(decoder_ids)
    hidden, _, cross = block(
        x, encoded, encoder_mask=mask, return_attention_scores=True
    )
    attention = np.asarray(cross).mean(axis=1)[0]  # (T, S)
    gate = 1 / (1 + np.exp(-np.asarray(model.copy_gate(hidden))[0]))  # (T, 1)
    vocab = np.asarray(keras.ops.softmax(model.output_projection(hidden)))[0]
    expected = gate * vocab
    expected[:, 7] += (1 - gate[:, 0]) * (attention[:, 0] + attention[:, 1])
    expected[:, 9] += (1 - gate[:, 0]) * attention[:, 2]
    got = np.exp(
        np.asarray(model({"encoder_ids": source, "decoder_ids": decoder_ids}))
    )[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _train_copy_task(copy_attention):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # Train on ids 3..11 only; ids 12..19 never appear in training.
    source = rng.integers(3, 12, size=(512, 4)).astype("int32")
    target = np.concatenate(
        [np.full((512, 1), START), source, np.full((512, 1), END)], axis=1
    ).astype("int32")
    model = Seq2SeqTransformer(
        20,
        20,
        4,
        6,
        embed_dim=32,
        num_heads=4,
        ff_dim=64,
        dropout=0.0,
        copy_attention=copy_attention,
        share_embeddings=True,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0
        ),
    )
    model.fit(
        {"encoder_ids": source, "decoder_ids": target[:, :-1]},
        target[:, 1:],
        batch_size=32,
        epochs=12,
        verbose=0,
    )
    return model


def test_copy_attention_copies_tokens_never_seen_as_targets(tmp_path):
    """Only a copy mechanism can emit ids whose output weights were never
    trained: the plain model almost never does."""
    unseen = np.random.default_rng(1).integers(12, 20, size=(16, 4))
    unseen = unseen.astype("int32")
    plain = np.asarray(_train_copy_task(False).generate(unseen, 6, 1, 2))
    model = _train_copy_task(True)
    tokens = np.asarray(model.generate(unseen, 6, START, END))
    copied = np.mean(tokens[:, :4] == unseen)
    assert np.mean(plain[:, :4] == unseen) < 0.1
    assert copied > 0.3, tokens
    beam = np.asarray(model.generate(unseen, 6, START, END, "beam"))
    assert np.mean(beam[:, :4] == unseen) > 0.3, beam
    path = os.path.join(tmp_path, "copy.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.copy_attention
    np.testing.assert_array_equal(
        np.asarray(loaded.generate(unseen, 6, START, END)), tokens
    )


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_generate_with_no_repeat_ngram_size(method):
    keras.utils.set_random_seed(6)
    model = _model(target_vocabulary_size=5)  # a tiny vocabulary repeats
    tokens = np.asarray(
        model.generate(_source(), 8, START, END, method, no_repeat_ngram_size=2)
    )
    for row in tokens.tolist():
        row = [START] + (row[: row.index(END) + 1] if END in row else row)
        bigrams = list(zip(row, row[1:], strict=False))
        assert len(bigrams) == len(set(bigrams)), row
