"""A Transformer text classifier built from our layers."""

import keras

from keras_selfattn.layers import _validation
from keras_selfattn.layers.sequence_pooling import SequencePooling
from keras_selfattn.layers.token_and_position_embedding import (
    TokenAndPositionEmbedding,
)
from keras_selfattn.layers.transformer_block import TransformerBlock


def build_text_classifier(
    vocabulary_size,
    sequence_length,
    num_classes,
    embed_dim=128,
    num_heads=4,
    ff_dim=256,
    num_layers=2,
    dropout=0.1,
    pooling="mean",
    norm_first=False,
    name="text_classifier",
):
    """A Transformer encoder classifier from token ids to class
    probabilities.

    `token ids -> TokenAndPositionEmbedding (id 0 = padding = mask) ->
    num_layers x TransformerBlock -> SequencePooling -> Dropout ->
    Dense(num_classes, softmax)`. The probabilities are float32 even under
    mixed precision. An all-padding row (an empty string) gives finite
    probabilities.

    Args:
        vocabulary_size: int, number of token ids (id 0 is padding).
        sequence_length: int, the longest input.
        num_classes: int, at least 2.
        embed_dim: int, model width. Defaults to `128`.
        num_heads: int, attention heads. Defaults to `4`.
        ff_dim: int, feed-forward width. Defaults to `256`.
        num_layers: int, Transformer blocks. Defaults to `2`.
        dropout: float in [0, 1). Defaults to `0.1`.
        pooling: str, `SequencePooling` mode. Defaults to `"mean"`.
        norm_first: bool, pre-norm blocks. Defaults to `False`.
        name: str, the model name.

    Returns:
        A functional `keras.Model` with input `token_ids` (int32,
        `(batch_size, sequence_length)`) and output `probabilities`
        `(batch_size, num_classes)`.

    Example:

    >>> import numpy as np
    >>> from keras_selfattn.models import build_text_classifier
    >>> model = build_text_classifier(100, 16, num_classes=3, embed_dim=16,
    ...                               num_heads=2, ff_dim=32)
    >>> probs = model.predict(np.array([[5, 6, 0], [0, 0, 0]]), verbose=0)
    >>> probs.shape, bool(np.isfinite(probs).all())
    ((2, 3), True)
    """
    positive = _validation.positive_int
    num_classes = positive("num_classes", num_classes)
    if num_classes < 2:
        raise _validation.invalid("num_classes", "an integer >= 2", num_classes)
    num_layers = positive("num_layers", num_layers)
    dropout = _validation.rate("dropout", dropout)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    x = TokenAndPositionEmbedding(
        vocabulary_size, sequence_length, embed_dim, name="embedding"
    )(ids)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(num_layers):
        x = TransformerBlock(
            num_heads,
            ff_dim,
            dropout=dropout,
            norm_first=norm_first,
            name=f"transformer_block_{i}",
        )(x)
    if norm_first:
        x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    x = SequencePooling(pooling, name="pooling")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(ids, probabilities, name=name)
