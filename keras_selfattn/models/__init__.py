"""Model builders and decoding."""

from keras_selfattn.models.classifier import (
    build_text_classifier as build_text_classifier,
)
from keras_selfattn.models.generation import beam_search as beam_search
from keras_selfattn.models.generation import greedy_search as greedy_search
from keras_selfattn.models.seq2seq import (
    Seq2SeqTransformer as Seq2SeqTransformer,
)

__all__ = [
    "Seq2SeqTransformer",
    "beam_search",
    "build_text_classifier",
    "greedy_search",
]
