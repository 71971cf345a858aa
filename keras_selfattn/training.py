"""Deprecated: the training utilities moved to `keras_selfattn.recipes`.

`keras_selfattn.training` held the examples' callbacks, schedules,
strategies, resumable `fit`, output-folder rules and flags. They are
application scaffolding, not the library, and now live in
`keras_selfattn.recipes` (`recipes.callbacks`, `recipes.fitting`,
`recipes.runs`, `recipes.args`). Each old name still works here and warns
(`DeprecationWarning`) with its new place; this module will be removed in
a later release.
"""

import importlib
import warnings

# Each old name and the `keras_selfattn.recipes` module that defines it now.
_MOVED = {
    "BACKUP_DIR": "fitting",
    "EXAMPLES_INSTALL": "args",
    "EpochScalars": "callbacks",
    "METRICS_FILE": "runs",
    "SCHEDULES": "fitting",
    "STRATEGIES": "fitting",
    "StopAtStep": "callbacks",
    "TimeBudget": "callbacks",
    "add_training_arguments": "args",
    "compare_with_published": "runs",
    "fit_resumable": "fitting",
    "learning_rate_schedule": "fitting",
    "make_strategy": "fitting",
    "prepare_output_dir": "runs",
    "report_finished_run": "runs",
    "require_modules": "args",
    "tensorboard_callback": "callbacks",
    "worker_output_dir": "fitting",
}

# As in 0.1 (the names but the constants), so that
# `from keras_selfattn.training import *` still brings them, each with its
# warning.
__all__ = sorted(name for name in _MOVED if not name.isupper())


def __getattr__(name):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = f"keras_selfattn.recipes.{_MOVED[name]}"
    warnings.warn(
        f"`keras_selfattn.training.{name}` is deprecated; use "
        f"`{module}.{name}` (also `keras_selfattn.recipes.{name}`).",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted({*globals(), *_MOVED})
