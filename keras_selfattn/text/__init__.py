"""Text preprocessing inside the graph (tensorflow-text, imported lazily)."""

from keras_selfattn.text.files import find_split as find_split
from keras_selfattn.text.files import read_columns as read_columns
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
]
