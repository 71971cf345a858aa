"""Keras layers of keras_selfattn (backend-agnostic, `keras.ops` only)."""

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

__all__ = [
    "MultiHeadSelfAttention",
    "PositionalEncoding",
    "RotaryEmbedding",
    "SequencePooling",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
    "TransformerDecoderBlock",
]
