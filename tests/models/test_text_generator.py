"""`TextGenerator`, `make_seq2seq_dataset` and `cross_attention_scores`."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_selfattn  # noqa: F401  (registers the layers for safe_mode)
from keras_selfattn.models import Seq2SeqTransformer
from keras_selfattn.models.text_generator import TextGenerator
from keras_selfattn.models.text_generator import cross_attention_scores
from keras_selfattn.models.text_generator import make_seq2seq_dataset
from keras_selfattn.models.text_generator import tidy_spacing
from keras_selfattn.text import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[START]", "[END]", "a", "b", "c", "d", ".", "?"]


def _parts(source_length=7, target_length=6, **model_kwargs):
    source = WordPieceTokenizer(VOCAB, sequence_length=source_length)
    target = WordPieceTokenizer(
        VOCAB,
        sequence_length=target_length + 1,
        add_start_token=True,
        add_end_token=True,
    )
    model = Seq2SeqTransformer(
        len(VOCAB),
        len(VOCAB),
        source_length=source_length,
        target_length=target_length,
        embed_dim=12,
        num_heads=3,
        ff_dim=11,
        **model_kwargs,
    )
    return source, target, model


def _trained_generator(**kwargs):
    """A model trained for a few seconds to copy its input."""
    source, target, model = _parts(dropout=0.0)
    rng = np.random.default_rng(0)
    texts = [
        " ".join(rng.choice(list("abcd"), size=rng.integers(1, 5)))
        for _ in range(256)
    ]
    ds = make_seq2seq_dataset(texts, texts, source, target, batch_size=32)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0
        ),
    )
    history = model.fit(ds, epochs=12, shuffle=False, verbose=0)
    return TextGenerator(source, target, model, **kwargs), history


@pytest.fixture(scope="module")
def copier():
    keras.utils.set_random_seed(7)
    return _trained_generator()


def test_learns_to_copy_and_stops_at_the_end_token(copier):
    generator, history = copier
    losses = history.history["loss"]
    assert losses[-1] < 0.2 * losses[0], losses
    texts = ["a b c", "d", "b a"]
    assert generator(tf.constant(texts)).numpy().tolist() == [
        t.encode() for t in texts
    ]
    ids = generator.generate_ids(tf.constant(texts)).numpy()
    assert ids.shape == (3, 6) and ids.dtype == np.int32
    end = generator.target_tokenizer.end_id
    for row, text in zip(ids, texts, strict=True):
        stop = list(row).index(end)
        assert stop == len(text.split())
        # Nothing but padding after the end token.
        assert not row[stop + 1 :].any()


def test_beam_search_matches_greedy_on_a_confident_model(copier):
    generator, _ = copier
    beam = TextGenerator(
        generator.source_tokenizer,
        generator.target_tokenizer,
        generator.seq2seq,
        method="beam",
        beam_width=3,
    )
    texts = tf.constant(["a b c", "d a"])
    assert beam(texts).numpy().tolist() == generator(texts).numpy().tolist()


def test_keras_file_round_trip(copier, tmp_path):
    generator, _ = copier
    path = os.path.join(tmp_path, "generator.keras")
    keras.saving.save_model(generator, path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(reloaded, TextGenerator)
    assert reloaded.get_config()["max_length"] == 6
    assert reloaded.seq2seq.embed_dim == 12
    texts = tf.constant(["a b c", "", "d d"])
    assert reloaded(texts).numpy().tolist() == generator(texts).numpy().tolist()
    for a, b in zip(
        reloaded.seq2seq.weights, generator.seq2seq.weights, strict=True
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_config_round_trip_and_serialization():
    source, target, model = _parts()
    generator = TextGenerator(
        source,
        target,
        model,
        max_length=4,
        method="beam",
        beam_width=2,
        no_repeat_ngram_size=2,
    )
    config = keras.saving.serialize_keras_object(generator)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.get_config() == generator.get_config()
    assert clone.source_tokenizer.vocabulary == VOCAB
    assert clone.method == "beam" and clone.beam_width == 2
    assert clone.no_repeat_ngram_size == 2


def test_traces_with_a_string_signature():
    generator = TextGenerator(*_parts(), max_length=3)
    served = tf.function(
        generator, input_signature=[tf.TensorSpec((None,), tf.string)]
    )
    for batch in (["a"], ["a b", "c ?", ""]):
        out = served(tf.constant(batch))
        assert out.dtype == tf.string and out.shape == (len(batch),)
    symbolic = generator.compute_output_spec(
        keras.KerasTensor((None,), "string")
    )
    assert symbolic.shape == (None,) and symbolic.dtype == "string"


def test_python_lists_and_numpy_strings_work_like_string_tensors():
    generator = TextGenerator(*_parts(), max_length=3)
    texts = ["a b", "c ?", ""]
    expected = generator(tf.constant(texts)).numpy().tolist()
    forms = [
        texts,
        tuple(texts),
        [t.encode() for t in texts],
        np.array(texts),
        np.array([t.encode() for t in texts]),
        np.array(texts, dtype=object),
    ]
    for form in forms:
        assert generator(form).numpy().tolist() == expected, form
    ids = generator.generate_ids(tf.constant(texts)).numpy()
    np.testing.assert_array_equal(generator.generate_ids(texts).numpy(), ids)
    # A lone string is not a batch: refused, never split into characters.
    with pytest.raises(ValueError, match=r"`inputs`.*\(batch_size,\)"):
        generator("a b")
    with pytest.raises(ValueError, match=r"`inputs`.*\(batch_size,\)"):
        generator(np.array("a b"))


def test_tidy_spacing():
    out = tidy_spacing(["a , b . ¿ c ? ( d )", "tom ' s"]).numpy()
    assert out.tolist() == ["a, b. ¿c? (d)".encode(), b"tom's"]
    source, target, model = _parts()
    raw = TextGenerator(source, target, model, tidy=False)
    assert raw.detokenize([[4, 8, 3]]).numpy().tolist() == [b"a ."]
    tidy = TextGenerator(source, target, model)
    assert tidy.detokenize([[4, 8, 3]]).numpy().tolist() == [b"a."]


def test_dataset_shifts_targets_and_trims_padding():
    source, target, _ = _parts()
    ds = make_seq2seq_dataset(
        ["a b c", "d"], ["b", "c d"], source, target, batch_size=2
    )
    inputs, labels = next(iter(ds))
    # Trimmed to the longest row: 3 source tokens, 2 target tokens + [END].
    assert inputs["encoder_ids"].numpy().tolist() == [[4, 5, 6], [7, 0, 0]]
    assert inputs["decoder_ids"].numpy().tolist() == [[2, 5, 3], [2, 6, 7]]
    assert labels.numpy().tolist() == [[5, 3, 0], [6, 7, 3]]


def test_dataset_shuffles_with_a_seed():
    source, target, _ = _parts()
    texts = ["a", "b", "c", "d"] * 4

    def first_batch():
        ds = make_seq2seq_dataset(
            texts, texts, source, target, batch_size=16, shuffle=True, seed=3
        )
        return next(iter(ds))[1].numpy().tolist()

    assert first_batch() == first_batch()
    assert (
        first_batch()
        != make_seq2seq_dataset(texts, texts, source, target, batch_size=16)
        .take(1)
        .get_single_element()[1]
        .numpy()
        .tolist()
    )


def test_cross_attention_scores_rows_sum_to_one_over_real_tokens():
    _, _, model = _parts(num_decoder_layers=2)
    scores = cross_attention_scores(
        model, np.array([[4, 5, 6, 0, 0]]), np.array([[2, 7, 8]]), block=0
    )
    scores = keras.ops.convert_to_numpy(scores)
    assert scores.shape == (1, 3, 3, 5)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    # Padded source positions get no attention.
    assert not scores[..., 3:].any()


def test_invalid_arguments():
    source, target, model = _parts()
    with pytest.raises(ValueError, match="`max_length`"):
        TextGenerator(source, target, model, max_length=7)
    with pytest.raises(ValueError, match="`method`"):
        TextGenerator(source, target, model, method="sample")
    with pytest.raises(ValueError, match="`beam_width`"):
        TextGenerator(source, target, model, beam_width=0)
    with pytest.raises(ValueError, match="`length_penalty`"):
        TextGenerator(source, target, model, length_penalty=-1.0)
    with pytest.raises(ValueError, match="`length_penalty`"):
        TextGenerator(source, target, model, length_penalty=float("nan"))
    with pytest.raises(TypeError, match="`seq2seq`"):
        TextGenerator(source, target, "not a model")
    too_long = WordPieceTokenizer(VOCAB, sequence_length=8)
    with pytest.raises(ValueError, match="`source_tokenizer`"):
        TextGenerator(too_long, target, model)
    with pytest.raises(ValueError, match="`target_tokenizer`"):
        make_seq2seq_dataset(["a"], ["b"], source, source, batch_size=1)
    with pytest.raises(ValueError, match="`batch_size`"):
        make_seq2seq_dataset(["a"], ["b"], source, target, batch_size=0)
