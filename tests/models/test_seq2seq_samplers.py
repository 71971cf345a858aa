"""`Seq2SeqTransformer.generate(sampler=...)`: the encoder-decoder model
decodes with the shared samplers (issue 16: one sampler interface)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_selfattn.models import Seq2SeqTransformer
from keras_selfattn.models import samplers

SOURCE = np.array([[3, 4, 5, 6, 0, 0], [7, 8, 9, 0, 0, 0], [5] * 6], "int32")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return Seq2SeqTransformer(
        12, 12, 6, 9, embed_dim=16, num_heads=2, ff_dim=24, dropout=0.0
    )


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_greedy_and_beam_samplers_equal_the_methods(model):
    greedy = model.generate(SOURCE, 8, 1, 2)
    np.testing.assert_array_equal(
        _np(model.generate(SOURCE, 8, 1, 2, sampler="greedy")), _np(greedy)
    )
    beam = model.generate(SOURCE, 8, 1, 2, method="beam", beam_width=3)
    sampler = samplers.BeamSampler(beam_width=3, length_penalty=0.6)
    np.testing.assert_array_equal(
        _np(model.generate(SOURCE, 8, 1, 2, sampler=sampler)), _np(beam)
    )
    # Top-k with k = 1 is greedy.
    top1 = samplers.TopKSampler(k=1)
    np.testing.assert_array_equal(
        _np(model.generate(SOURCE, 8, 1, 2, sampler=top1, seed=5)),
        _np(greedy),
    )


def test_a_stochastic_sampler_is_seeded(model):
    hot = samplers.RandomSampler(temperature=3.0)
    a = _np(model.generate(SOURCE, 8, 1, 2, sampler=hot, seed=11))
    b = _np(model.generate(SOURCE, 8, 1, 2, sampler=hot, seed=11))
    c = _np(model.generate(SOURCE, 8, 1, 2, sampler=hot, seed=12))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (3, 8)
    # Traced: the same tokens.
    traced = tf.function(
        lambda x: model.generate(x, 8, 1, 2, sampler=hot, seed=11)
    )
    np.testing.assert_array_equal(_np(traced(SOURCE)), a)
    # Padded with 0 after the end token, as `method=` outputs.
    for row in a:
        ends = np.flatnonzero(row == 2)
        if ends.size:
            assert np.all(row[ends[0] + 1 :] == 0)


def test_sampler_argument_errors(model):
    with pytest.raises(ValueError, match="argument `method`"):
        model.generate(SOURCE, 8, 1, 2, method="beam", sampler="top_p")
    with pytest.raises(ValueError, match="argument `no_repeat_ngram_size`"):
        model.generate(SOURCE, 8, 1, 2, no_repeat_ngram_size=2, sampler="top_k")
    with pytest.raises(ValueError, match="argument `seed`"):
        model.generate(SOURCE, 8, 1, 2, seed=3)
    with pytest.raises(ValueError, match="argument `max_length`"):
        model.generate(SOURCE, 10, 1, 2, sampler="greedy")
