"""Text preprocessing inside the graph (tensorflow-text, imported lazily).

`find_split` and `read_columns` are plain Python. `WordPieceTokenizer`,
`learn_wordpiece_vocabulary`, `normalize_text`, `SentencePieceTokenizer`
and `learn_sentencepiece_model` need TensorFlow (the tokenizers
tensorflow-text, the SentencePiece trainer the `sentencepiece` package):
their module, and TensorFlow, are imported on first access to one of these
names.
"""

import importlib
from typing import TYPE_CHECKING

from keras_selfattn.text.files import find_split as find_split
from keras_selfattn.text.files import read_columns as read_columns

# TensorFlow-only names and the modules that define them.
_LAZY = {
    "WordPieceTokenizer": "wordpiece",
    "learn_wordpiece_vocabulary": "wordpiece",
    "normalize_text": "wordpiece",
    "SentencePieceTokenizer": "sentencepiece",
    "learn_sentencepiece_model": "sentencepiece",
}

if TYPE_CHECKING:
    # The lazy names, imported for static tools (the API docs, type
    # checkers); at run time `__getattr__` imports them on first use.
    from keras_selfattn.text.sentencepiece import (
        SentencePieceTokenizer as SentencePieceTokenizer,
    )
    from keras_selfattn.text.sentencepiece import (
        learn_sentencepiece_model as learn_sentencepiece_model,
    )
    from keras_selfattn.text.wordpiece import (
        WordPieceTokenizer as WordPieceTokenizer,
    )
    from keras_selfattn.text.wordpiece import (
        learn_wordpiece_vocabulary as learn_wordpiece_vocabulary,
    )
    from keras_selfattn.text.wordpiece import normalize_text as normalize_text


__all__ = [
    "find_split",
    "read_columns",
    "WordPieceTokenizer",
    "learn_wordpiece_vocabulary",
    "normalize_text",
    "SentencePieceTokenizer",
    "learn_sentencepiece_model",
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
