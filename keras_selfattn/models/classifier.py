"""A Transformer text classifier built from our layers."""

import keras

from keras_selfattn.layers import _validation
from keras_selfattn.layers.sequence_pooling import SequencePooling
from keras_selfattn.layers.token_and_position_embedding import (
    TokenAndPositionEmbedding,
)
from keras_selfattn.layers.transformer_block import TransformerBlock
from keras_selfattn.models.causal_lm import CausalLM
from keras_selfattn.models.causal_lm_backbone import CausalLMBackbone

# Poolings of a causal backbone: "first" would see the first token only.
_LM_POOLINGS = ("mean", "last", "max")


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
    num_classes = _check_num_classes(num_classes)
    positive = _validation.positive_int
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
    probabilities = _head(x, num_classes, pooling, dropout)
    return keras.Model(ids, probabilities, name=name)


def build_classifier_from_lm(
    causal_lm,
    num_classes,
    pooling="mean",
    dropout=0.1,
    trainable_backbone=True,
    name="lm_classifier",
):
    """A classifier that starts from a (pre-trained) `CausalLM`.

    `token ids -> CausalLMBackbone(causal_lm) (the LM's embedding, causal
    blocks and final norm) -> SequencePooling -> Dropout ->
    Dense(num_classes, softmax)`: GPT-style fine-tuning (Radford et al.,
    2018). The model *shares* the language model's layers: `fit`
    fine-tunes the LM's own weights (clone the LM first to keep it, e.g.
    `CausalLM.from_config(lm.get_config())` and `set_weights`), and
    `trainable_backbone=False` freezes them, in the LM too, so that only
    the head trains. The blocks stay causal, so pool over the whole row
    (`"mean"`, `"max"`) or take the last real token (`"last"`, the one
    that has seen the whole text). Padding (the LM's `pad_id`, on either
    side) is masked everywhere: a padded row gives the probabilities it
    gives alone, an all-padding row finite ones. The probabilities are
    float32 even under mixed precision.

    Args:
        causal_lm: `CausalLM`, usually trained on next-token prediction
            first.
        num_classes: int, at least 2.
        pooling: str, `"mean"`, `"last"` or `"max"` (`SequencePooling`
            modes; `"first"` would see one token). Defaults to `"mean"`.
        dropout: float in [0, 1), before the output layer (the LM's own
            dropout applies inside it). Defaults to `0.1`.
        trainable_backbone: bool, fine-tune the LM's layers (`True`) or
            freeze them and train the head only. Defaults to `True`.
        name: str, the model name. Defaults to `"lm_classifier"`.

    Returns:
        A functional `keras.Model` with input `token_ids` (int32,
        `(batch_size, seq_len)`) and output `probabilities`
        `(batch_size, num_classes)`; its layer `"backbone"` is the
        `CausalLMBackbone`. It saves as `.keras` (with the LM inside) and
        exports with `keras_selfattn.export.export_classifier`, and
        `TextClassifier` takes it.

    Example:

    >>> import numpy as np
    >>> from keras_selfattn.models import CausalLM
    >>> from keras_selfattn.models import build_classifier_from_lm
    >>> lm = CausalLM(vocab_size=20, num_layers=1, hidden_dim=8,
    ...               num_heads=2, ff_dim=16)
    >>> model = build_classifier_from_lm(lm, num_classes=3, pooling="last")
    >>> probs = model.predict(np.array([[5, 6, 0], [0, 0, 0]]), verbose=0)
    >>> probs.shape, bool(np.isfinite(probs).all())
    ((2, 3), True)
    >>> embedding = lm.token_embedding.embeddings
    >>> any(w is embedding for w in model.trainable_weights)  # shared
    True

    References:
        - [Radford et al., 2018, Improving Language Understanding by
          Generative Pre-Training](https://openai.com/research/language-unsupervised)
    """
    if not isinstance(causal_lm, CausalLM):
        raise _validation.invalid(
            "causal_lm",
            "a keras_selfattn.models.CausalLM",
            type(causal_lm).__name__,
            TypeError,
        )
    num_classes = _check_num_classes(num_classes)
    pooling = _validation.one_of("pooling", pooling, _LM_POOLINGS)
    dropout = _validation.rate("dropout", dropout)
    trainable_backbone = _validation.boolean(
        "trainable_backbone", trainable_backbone
    )
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    backbone = CausalLMBackbone(
        causal_lm, trainable=trainable_backbone, name="backbone"
    )
    probabilities = _head(backbone(ids), num_classes, pooling, dropout)
    return keras.Model(ids, probabilities, name=name)


def _check_num_classes(num_classes):
    num_classes = _validation.positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise _validation.invalid("num_classes", "an integer >= 2", num_classes)
    return num_classes


def _head(x, num_classes, pooling, dropout):
    """Pooling, dropout and float32 softmax probabilities
    `(batch_size, num_classes)` from masked features `(B, T, D)`."""
    x = SequencePooling(pooling, name="pooling")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
