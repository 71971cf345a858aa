"""Model builders and decoding."""

from keras_selfattn.models.generation import beam_search as beam_search
from keras_selfattn.models.generation import greedy_search as greedy_search
from keras_selfattn.models.seq2seq import (
    Seq2SeqTransformer as Seq2SeqTransformer,
)

__all__ = [
    "Seq2SeqTransformer",
    "beam_search",
    "greedy_search",
]
