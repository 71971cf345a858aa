"""Text preprocessing inside the graph (tensorflow-text, imported lazily)."""

from keras_selfattn.text.wordpiece import (
    WordPieceTokenizer as WordPieceTokenizer,
)
from keras_selfattn.text.wordpiece import (
    learn_wordpiece_vocabulary as learn_wordpiece_vocabulary,
)
from keras_selfattn.text.wordpiece import normalize_text as normalize_text

__all__ = [
    "WordPieceTokenizer",
    "learn_wordpiece_vocabulary",
    "normalize_text",
]
