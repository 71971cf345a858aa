"""Model builders and decoding.

`build_text_classifier`, `Seq2SeqTransformer`, `CausalLM`,
`CausalLMBackbone`, `build_classifier_from_lm`, `next_token_batch`, the
`samplers`, `greedy_search` and `beam_search` work on any Keras backend.
`TextClassifier`, `TextGenerator`, `make_seq2seq_dataset`,
`cross_attention_scores` and `tidy_spacing` need TensorFlow: their modules
(and TensorFlow) are imported on first access to one of these names. The
seq2seq training pipeline (`train_seq2seq`) is a recipe, in
`keras_selfattn.recipes`.
"""

import importlib
from typing import TYPE_CHECKING

from keras_selfattn.models import samplers as samplers
from keras_selfattn.models.causal_lm import CausalLM as CausalLM
from keras_selfattn.models.causal_lm import next_token_batch as next_token_batch
from keras_selfattn.models.causal_lm_backbone import (
    CausalLMBackbone as CausalLMBackbone,
)
from keras_selfattn.models.classifier import (
    build_classifier_from_lm as build_classifier_from_lm,
)
from keras_selfattn.models.classifier import (
    build_text_classifier as build_text_classifier,
)
from keras_selfattn.models.generation import beam_search as beam_search
from keras_selfattn.models.generation import greedy_search as greedy_search
from keras_selfattn.models.samplers import BeamSampler as BeamSampler
from keras_selfattn.models.samplers import (
    ConfigurableSampler as ConfigurableSampler,
)
from keras_selfattn.models.samplers import GreedySampler as GreedySampler
from keras_selfattn.models.samplers import RandomSampler as RandomSampler
from keras_selfattn.models.samplers import Sampler as Sampler
from keras_selfattn.models.samplers import TopKSampler as TopKSampler
from keras_selfattn.models.samplers import TopPSampler as TopPSampler
from keras_selfattn.models.seq2seq import (
    Seq2SeqTransformer as Seq2SeqTransformer,
)

# TensorFlow-only names and the modules that define them.
_LAZY = {
    "TextClassifier": "text_classifier",
    "TextGenerator": "text_generator",
    "cross_attention_scores": "text_generator",
    "make_seq2seq_dataset": "text_generator",
    "tidy_spacing": "text_generator",
}

if TYPE_CHECKING:
    # The lazy names, imported for static tools (the API docs, type
    # checkers); at run time `__getattr__` imports them on first use.
    from keras_selfattn.models.text_classifier import (
        TextClassifier as TextClassifier,
    )
    from keras_selfattn.models.text_generator import (
        TextGenerator as TextGenerator,
    )
    from keras_selfattn.models.text_generator import (
        cross_attention_scores as cross_attention_scores,
    )
    from keras_selfattn.models.text_generator import (
        make_seq2seq_dataset as make_seq2seq_dataset,
    )
    from keras_selfattn.models.text_generator import (
        tidy_spacing as tidy_spacing,
    )


__all__ = [
    "BeamSampler",
    "CausalLM",
    "CausalLMBackbone",
    "ConfigurableSampler",
    "GreedySampler",
    "RandomSampler",
    "Sampler",
    "Seq2SeqTransformer",
    "TextClassifier",
    "TextGenerator",
    "TopKSampler",
    "TopPSampler",
    "beam_search",
    "build_classifier_from_lm",
    "build_text_classifier",
    "cross_attention_scores",
    "greedy_search",
    "make_seq2seq_dataset",
    "next_token_batch",
    "samplers",
    "tidy_spacing",
]


# Names that were here in 0.1 and are recipes now. Only the error names
# their new place: the models never import `keras_selfattn.recipes`.
_MOVED_TO_RECIPES = ("add_seq2seq_arguments", "train_seq2seq")


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    if name in _MOVED_TO_RECIPES:
        raise AttributeError(
            f"`{__name__}.{name}` moved to `keras_selfattn.recipes.{name}` "
            "(the seq2seq pipeline is a recipe the examples share, not a "
            "model)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
