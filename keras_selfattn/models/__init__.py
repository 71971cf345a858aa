"""Model builders and decoding.

`build_text_classifier`, `Seq2SeqTransformer`, `greedy_search` and
`beam_search` work on any Keras backend. `TextClassifier`, `TextGenerator`,
`make_seq2seq_dataset`, `cross_attention_scores`, `tidy_spacing`,
`train_seq2seq` and `add_seq2seq_arguments` need TensorFlow: their modules
(and TensorFlow) are imported on first access to one of these names.
"""

import importlib
from typing import TYPE_CHECKING

from keras_selfattn.models.classifier import (
    build_text_classifier as build_text_classifier,
)
from keras_selfattn.models.generation import beam_search as beam_search
from keras_selfattn.models.generation import greedy_search as greedy_search
from keras_selfattn.models.seq2seq import (
    Seq2SeqTransformer as Seq2SeqTransformer,
)

# TensorFlow-only names and the modules that define them.
_LAZY = {
    "TextClassifier": "text_classifier",
    "TextGenerator": "text_generator",
    "add_seq2seq_arguments": "seq2seq_training",
    "cross_attention_scores": "text_generator",
    "make_seq2seq_dataset": "text_generator",
    "tidy_spacing": "text_generator",
    "train_seq2seq": "seq2seq_training",
}

if TYPE_CHECKING:
    # The lazy names, imported for static tools (the API docs, type
    # checkers); at run time `__getattr__` imports them on first use.
    from keras_selfattn.models.seq2seq_training import (
        add_seq2seq_arguments as add_seq2seq_arguments,
    )
    from keras_selfattn.models.seq2seq_training import (
        train_seq2seq as train_seq2seq,
    )
    from keras_selfattn.models.text_classifier import (
        TextClassifier as TextClassifier,
    )
    from keras_selfattn.models.text_generator import (
        TextGenerator as TextGenerator,
    )
    from keras_selfattn.models.text_generator import (
        cross_attention_scores as cross_attention_scores,
    )
    from keras_selfattn.models.text_generator import (
        make_seq2seq_dataset as make_seq2seq_dataset,
    )
    from keras_selfattn.models.text_generator import (
        tidy_spacing as tidy_spacing,
    )


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


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
