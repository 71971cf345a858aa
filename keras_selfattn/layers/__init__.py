"""Keras layers of keras_selfattn (backend-agnostic, `keras.ops` only)."""

from keras_selfattn.layers.multi_head_self_attention import (
    MultiHeadSelfAttention as MultiHeadSelfAttention,
)

__all__ = [
    "MultiHeadSelfAttention",
]
