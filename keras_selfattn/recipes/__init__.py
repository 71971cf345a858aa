"""Recipes: the application scaffolding that the examples share.

Not the library: the layers and models (`keras_selfattn.layers`,
`models`, `text`, `export`) never import this package. What it holds is
what an example script does around a model: its options and command-line
flags (`args`), callbacks that cap and log training (`callbacks`), a
resumable `fit` with schedules and strategies (`fitting`), the rules of a
run's output folder (`runs`), the seq2seq pipeline of the translation
and summarization examples (`seq2seq`: read, train, decode, score, plot,
export) and the language-model pipeline of the text-generation example
(`language_model`: read, train, score perplexity, sample, save). Use
them in your own scripts, or copy and change them.

Every name is reachable here (`from keras_selfattn.recipes import
fit_resumable`). The package imports no TensorFlow; the seq2seq and
language-model names import `recipes.seq2seq` or `recipes.language_model`
(and TensorFlow) on first access.
"""

import importlib
from typing import TYPE_CHECKING

from keras_selfattn.recipes.args import (
    LanguageModelOptions as LanguageModelOptions,
)
from keras_selfattn.recipes.args import Seq2SeqOptions as Seq2SeqOptions
from keras_selfattn.recipes.args import TrainingOptions as TrainingOptions
from keras_selfattn.recipes.args import (
    add_language_model_arguments as add_language_model_arguments,
)
from keras_selfattn.recipes.args import (
    add_seq2seq_arguments as add_seq2seq_arguments,
)
from keras_selfattn.recipes.args import (
    add_training_arguments as add_training_arguments,
)
from keras_selfattn.recipes.args import require_modules as require_modules
from keras_selfattn.recipes.callbacks import EpochScalars as EpochScalars
from keras_selfattn.recipes.callbacks import StopAtStep as StopAtStep
from keras_selfattn.recipes.callbacks import TimeBudget as TimeBudget
from keras_selfattn.recipes.callbacks import (
    tensorboard_callback as tensorboard_callback,
)
from keras_selfattn.recipes.fitting import fit_resumable as fit_resumable
from keras_selfattn.recipes.fitting import (
    learning_rate_schedule as learning_rate_schedule,
)
from keras_selfattn.recipes.fitting import make_strategy as make_strategy
from keras_selfattn.recipes.fitting import (
    worker_output_dir as worker_output_dir,
)
from keras_selfattn.recipes.runs import RunStart as RunStart
from keras_selfattn.recipes.runs import (
    compare_with_published as compare_with_published,
)
from keras_selfattn.recipes.runs import prepare_output_dir as prepare_output_dir
from keras_selfattn.recipes.runs import (
    report_finished_run as report_finished_run,
)
from keras_selfattn.recipes.runs import start_run as start_run

# The seq2seq and language-model recipes need TensorFlow: their names load
# it on first access.
_SEQ2SEQ = (
    "Seq2SeqData",
    "build_seq2seq",
    "evaluate_seq2seq",
    "export_seq2seq",
    "fit_seq2seq",
    "make_text_generator",
    "plot_cross_attention",
    "read_seq2seq_data",
    "train_seq2seq",
)
_LANGUAGE_MODEL = (
    "LanguageModelData",
    "LanguageModelRun",
    "build_language_model",
    "compile_language_model",
    "evaluate_perplexity",
    "fit_language_model",
    "load_language_model_run",
    "publish_language_model",
    "read_language_model_data",
    "sample_continuations",
    "train_language_model",
)
_LAZY = {
    **dict.fromkeys(_SEQ2SEQ, "seq2seq"),
    **dict.fromkeys(_LANGUAGE_MODEL, "language_model"),
}

if TYPE_CHECKING:
    # For static tools (the API docs, type checkers); at run time
    # `__getattr__` imports them on first use.
    from keras_selfattn.recipes.language_model import (
        LanguageModelData as LanguageModelData,
    )
    from keras_selfattn.recipes.language_model import (
        LanguageModelRun as LanguageModelRun,
    )
    from keras_selfattn.recipes.language_model import (
        build_language_model as build_language_model,
    )
    from keras_selfattn.recipes.language_model import (
        compile_language_model as compile_language_model,
    )
    from keras_selfattn.recipes.language_model import (
        evaluate_perplexity as evaluate_perplexity,
    )
    from keras_selfattn.recipes.language_model import (
        fit_language_model as fit_language_model,
    )
    from keras_selfattn.recipes.language_model import (
        load_language_model_run as load_language_model_run,
    )
    from keras_selfattn.recipes.language_model import (
        publish_language_model as publish_language_model,
    )
    from keras_selfattn.recipes.language_model import (
        read_language_model_data as read_language_model_data,
    )
    from keras_selfattn.recipes.language_model import (
        sample_continuations as sample_continuations,
    )
    from keras_selfattn.recipes.language_model import (
        train_language_model as train_language_model,
    )
    from keras_selfattn.recipes.seq2seq import Seq2SeqData as Seq2SeqData
    from keras_selfattn.recipes.seq2seq import build_seq2seq as build_seq2seq
    from keras_selfattn.recipes.seq2seq import (
        evaluate_seq2seq as evaluate_seq2seq,
    )
    from keras_selfattn.recipes.seq2seq import export_seq2seq as export_seq2seq
    from keras_selfattn.recipes.seq2seq import fit_seq2seq as fit_seq2seq
    from keras_selfattn.recipes.seq2seq import (
        make_text_generator as make_text_generator,
    )
    from keras_selfattn.recipes.seq2seq import (
        plot_cross_attention as plot_cross_attention,
    )
    from keras_selfattn.recipes.seq2seq import (
        read_seq2seq_data as read_seq2seq_data,
    )
    from keras_selfattn.recipes.seq2seq import train_seq2seq as train_seq2seq

__all__ = [
    "EpochScalars",
    "LanguageModelData",
    "LanguageModelOptions",
    "LanguageModelRun",
    "RunStart",
    "Seq2SeqData",
    "Seq2SeqOptions",
    "StopAtStep",
    "TimeBudget",
    "TrainingOptions",
    "add_language_model_arguments",
    "add_seq2seq_arguments",
    "add_training_arguments",
    "build_language_model",
    "build_seq2seq",
    "compare_with_published",
    "compile_language_model",
    "evaluate_perplexity",
    "evaluate_seq2seq",
    "export_seq2seq",
    "fit_language_model",
    "fit_resumable",
    "fit_seq2seq",
    "learning_rate_schedule",
    "load_language_model_run",
    "make_strategy",
    "make_text_generator",
    "plot_cross_attention",
    "prepare_output_dir",
    "publish_language_model",
    "read_language_model_data",
    "read_seq2seq_data",
    "report_finished_run",
    "require_modules",
    "sample_continuations",
    "start_run",
    "tensorboard_callback",
    "train_language_model",
    "train_seq2seq",
    "worker_output_dir",
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
