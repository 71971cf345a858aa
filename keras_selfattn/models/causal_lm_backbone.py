"""A `CausalLM`'s body as a layer: the start of a fine-tuned model."""

import keras
from keras import ops

from keras_selfattn.layers import _validation
from keras_selfattn.models.causal_lm import CausalLM


@keras.saving.register_keras_serializable(package="keras_selfattn")
class CausalLMBackbone(keras.layers.Layer):
    """Token ids to a `CausalLM`'s last hidden states, with its layers.

    Computes `causal_lm.hidden_states(token_ids)`: the token embedding
    (and absolute positions), the causal blocks and the final norm of the
    language model, whose layers this layer *shares*, not copies: training
    a model built on it (`build_classifier_from_lm`) fine-tunes the
    language model's weights, and `trainable=False` freezes them (in the
    language model too). The LM's separate output projection
    (`tie_embeddings=False`) is not among this layer's weights: the hidden
    states do not use it. A `.keras` file of a model holding this layer
    holds the language model's config and weights; it reloads with no
    `custom_objects`.

    Args:
        causal_lm: `CausalLM` (or its serialized config), usually a
            pre-trained one.
        **kwargs: base `keras.layers.Layer` arguments (`name`,
            `trainable`, ...).

    Call arguments:
        token_ids: int `(batch_size, seq_len)`, padded with the language
            model's `pad_id` (on either side).
        training: bool, whether the language model's dropout is active.
            Defaults to `None`.

    Returns:
        `(batch_size, seq_len, hidden_dim)`, the hidden states, in the
        language model's compute dtype.

    Masking:
        Emits the padding mask `token_ids != pad_id`. Position `t` sees
        the real tokens up to `t` only (the blocks stay causal) and no
        padding, and absolute positions count real tokens, so a padded row
        gives at its real positions what it gives alone.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import CausalLM
    >>> from keras_selfattn.models import CausalLMBackbone
    >>> lm = CausalLM(vocab_size=20, num_layers=1, hidden_dim=8,
    ...               num_heads=2, ff_dim=16)
    >>> backbone = CausalLMBackbone(lm)
    >>> ids = np.array([[5, 6, 7, 0], [9, 0, 0, 0]])
    >>> hidden = backbone(ids)
    >>> tuple(hidden.shape)
    (2, 4, 8)
    >>> same = ops.convert_to_numpy(lm.hidden_states(ids))
    >>> bool(np.allclose(ops.convert_to_numpy(hidden), same))
    True
    >>> backbone.trainable_weights[0] is lm.token_embedding.embeddings
    True

    References:
        - [Radford et al., 2018, Improving Language Understanding by
          Generative Pre-Training](https://openai.com/research/language-unsupervised)
    """

    def __init__(self, causal_lm, **kwargs):
        if isinstance(causal_lm, dict):
            causal_lm = keras.saving.deserialize_keras_object(causal_lm)
        if not isinstance(causal_lm, CausalLM):
            raise _validation.invalid(
                "causal_lm",
                "a keras_selfattn.models.CausalLM",
                type(causal_lm).__name__,
                TypeError,
            )
        super().__init__(**kwargs)
        # The LM itself is held untracked (plain `object.__setattr__`), and
        # the layers the hidden states use are tracked instead: a separate
        # output projection would otherwise be a trainable weight with no
        # gradient (Keras warns on every fit).
        object.__setattr__(self, "_causal_lm", causal_lm)
        projection = getattr(causal_lm, "output_projection", None)
        self.lm_layers = [
            layer for layer in causal_lm.layers if layer is not projection
        ]
        if not self.trainable:
            # The base class only records the flag: freeze the LM's
            # layers, which exist already.
            for layer in self.lm_layers:
                layer.trainable = False
        self.supports_masking = True
        self.built = True

    @property
    def causal_lm(self):
        """The `CausalLM` whose layers this layer shares."""
        return self._causal_lm

    def call(self, token_ids, training=None):
        # (B, T, D), carrying the padding mask.
        return self._causal_lm.hidden_states(token_ids, training=training)

    def compute_mask(self, token_ids, mask=None):
        return ops.not_equal(token_ids, self._causal_lm.pad_id)

    def compute_output_shape(self, token_ids_shape):
        return (*token_ids_shape, self._causal_lm.hidden_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "causal_lm": keras.saving.serialize_keras_object(self._causal_lm),
        }
