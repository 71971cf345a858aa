"""Model builders and decoding."""

from keras_selfattn.models.classifier import (
    build_text_classifier as build_text_classifier,
)
from keras_selfattn.models.generation import beam_search as beam_search
from keras_selfattn.models.generation import greedy_search as greedy_search
from keras_selfattn.models.seq2seq import (
    Seq2SeqTransformer as Seq2SeqTransformer,
)
from keras_selfattn.models.seq2seq_training import (
    add_seq2seq_arguments as add_seq2seq_arguments,
)
from keras_selfattn.models.seq2seq_training import (
    train_seq2seq as train_seq2seq,
)
from keras_selfattn.models.text_classifier import (
    TextClassifier as TextClassifier,
)
from keras_selfattn.models.text_generator import TextGenerator as TextGenerator
from keras_selfattn.models.text_generator import (
    cross_attention_scores as cross_attention_scores,
)
from keras_selfattn.models.text_generator import (
    make_seq2seq_dataset as make_seq2seq_dataset,
)
from keras_selfattn.models.text_generator import tidy_spacing as tidy_spacing

__all__ = [
    "Seq2SeqTransformer",
    "TextClassifier",
    "TextGenerator",
    "add_seq2seq_arguments",
    "beam_search",
    "build_text_classifier",
    "cross_attention_scores",
    "greedy_search",
    "make_seq2seq_dataset",
    "tidy_spacing",
    "train_seq2seq",
]
