"""`keras_selfattn.training`, the deprecated old name of the recipes' training
utilities: every old name still resolves, to the same object, and warns."""

import re
import warnings

import pytest

import keras_selfattn
from keras_selfattn import training

OLD_NAMES = [
    "BACKUP_DIR",
    "EXAMPLES_INSTALL",
    "EpochScalars",
    "METRICS_FILE",
    "SCHEDULES",
    "STRATEGIES",
    "StopAtStep",
    "TimeBudget",
    "add_training_arguments",
    "compare_with_published",
    "fit_resumable",
    "learning_rate_schedule",
    "make_strategy",
    "prepare_output_dir",
    "report_finished_run",
    "require_modules",
    "tensorboard_callback",
    "worker_output_dir",
]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_old_name_warns_and_is_the_recipes_object(name):
    # Exactly this deprecation, named with its new place; nothing else.
    message = re.escape(f"`keras_selfattn.training.{name}` is deprecated")
    with pytest.warns(DeprecationWarning, match=message) as record:
        obj = getattr(training, name)
    assert len(record) == 1
    assert f"keras_selfattn.recipes.{name}" in str(record[0].message)
    module = training._MOVED[name]
    recipes_module = getattr(keras_selfattn.recipes, module)
    assert obj is getattr(recipes_module, name)


def test_from_import_warns_too():
    with pytest.warns(DeprecationWarning, match="training.StopAtStep"):
        from keras_selfattn.training import StopAtStep
    assert StopAtStep is keras_selfattn.recipes.StopAtStep


def test_star_import_brings_the_old_public_names():
    namespace = {}
    with pytest.warns(DeprecationWarning) as record:
        exec("from keras_selfattn.training import *", namespace)
    assert set(training.__all__) <= set(namespace)
    assert set(training.__all__) <= set(OLD_NAMES)
    assert len(record) == len(training.__all__)
    assert namespace["fit_resumable"] is keras_selfattn.recipes.fit_resumable


def test_importing_the_module_alone_does_not_warn():
    # Only using an old name warns: the package's attribute access and
    # `dir()` stay quiet (warnings are errors here).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keras_selfattn.training is training
        assert "StopAtStep" in dir(training)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        training.no_such_name  # noqa: B018
