"""keras_selfattn: Keras 3 self-attention layers for TensorFlow.

Importing the package registers every layer with Keras serialization, so a
`.keras` file saved with our layers loads with no `custom_objects`.

The layers and the backend-neutral model builders import no TensorFlow, so
`import keras_selfattn` works on any Keras backend. The TensorFlow-only
parts (the `text` tokenizers, `TextClassifier`, `TextGenerator`,
`export`, the seq2seq recipe) import TensorFlow when first used. Under the
TensorFlow backend, importing the package also registers the text models and
the tokenizer; on another backend, reach them by name first (for example
`keras_selfattn.models.TextClassifier`) before loading a `.keras` file
that holds them.
"""

import importlib

import keras

from keras_selfattn import export as export
from keras_selfattn import models as models
from keras_selfattn import text as text
from keras_selfattn.layers.multi_head_self_attention import (
    MultiHeadSelfAttention as MultiHeadSelfAttention,
)
from keras_selfattn.layers.positional_encoding import (
    PositionalEncoding as PositionalEncoding,
)
from keras_selfattn.layers.rotary_embedding import (
    RotaryEmbedding as RotaryEmbedding,
)
from keras_selfattn.layers.sequence_pooling import (
    SequencePooling as SequencePooling,
)
from keras_selfattn.layers.token_and_position_embedding import (
    TokenAndPositionEmbedding as TokenAndPositionEmbedding,
)
from keras_selfattn.layers.transformer_block import (
    TransformerBlock as TransformerBlock,
)
from keras_selfattn.layers.transformer_decoder_block import (
    TransformerDecoderBlock as TransformerDecoderBlock,
)
from keras_selfattn.version import __version__ as __version__

__all__ = [
    "MultiHeadSelfAttention",
    "PositionalEncoding",
    "RotaryEmbedding",
    "SequencePooling",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
    "TransformerDecoderBlock",
    "__version__",
]

# Submodules reachable as attributes (`keras_selfattn.recipes`) without an
# import of their own; loaded on first access. `training` is the deprecated
# old name of `recipes`.
_LAZY_SUBMODULES = (
    "distribution",
    "metrics",
    "plotting",
    "recipes",
    "training",
)

if keras.backend.backend() == "tensorflow":
    # Keras has imported TensorFlow already, so this costs no TensorFlow
    # import: it registers the text models and the tokenizers, so a
    # `.keras` file holding them loads after `import keras_selfattn` alone,
    # as it always has. tensorflow-text itself still loads on a tokenizer's
    # first use (and sentencepiece on a model's training).
    importlib.import_module("keras_selfattn.models.text_classifier")
    importlib.import_module("keras_selfattn.models.text_generator")
    importlib.import_module("keras_selfattn.text.sentencepiece")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY_SUBMODULES})
