"""keras_selfattn: Keras 3 self-attention layers for TensorFlow.

Importing the package registers every layer with Keras serialization, so a
`.keras` file saved with our layers loads with no `custom_objects`.
"""

# Registers the text layers and models for `.keras` loading; tensorflow-text
# itself is imported only when a tokenizer is first used.
from keras_selfattn import export as export
from keras_selfattn import models as models
from keras_selfattn import text as text
from keras_selfattn.layers.multi_head_self_attention import (
    MultiHeadSelfAttention as MultiHeadSelfAttention,
)
from keras_selfattn.layers.positional_encoding import (
    PositionalEncoding as PositionalEncoding,
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
    "SequencePooling",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
    "TransformerDecoderBlock",
    "__version__",
]
