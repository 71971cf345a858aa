"""A recipe's output folder: start, resume, report, or refuse; compare.

`start_run` is a driver's first step (strategy, folder, seed, in that
order); `prepare_output_dir` decides whether a run starts, resumes, stops
(already finished) or is refused, so a re-run never re-publishes by
accident;
`report_finished_run` and `compare_with_published` tell the operator what
is there. The module imports no TensorFlow: `compare_with_published`
imports it (through `keras_selfattn.export`) when called.
"""

import dataclasses
import json
import numbers
import os
import shutil

import keras

from keras_selfattn.layers import _validation
from keras_selfattn.recipes.fitting import BACKUP_DIR
from keras_selfattn.recipes.fitting import make_strategy
from keras_selfattn.recipes.fitting import worker_output_dir

# Written last by every recipe: its presence marks a finished run.
METRICS_FILE = "metrics.json"

__all__ = [
    "RunStart",
    "compare_with_published",
    "prepare_output_dir",
    "report_finished_run",
    "start_run",
]


def _used_entries(folder, ignore=()):
    """What `folder` holds of a run: hidden names, `workers/` (the other
    workers' sub-folders, see `worker_output_dir`) and the names in
    `ignore` do not count."""
    if not os.path.isdir(folder):
        return []
    return sorted(
        name
        for name in os.listdir(folder)
        if not name.startswith(".") and name != "workers" and name not in ignore
    )


def prepare_output_dir(
    output_dir,
    overwrite=False,
    strategy=None,
    ignore=(),
    restart_unfinished=False,
):
    """What a run finds in its output folder, and so what it must do.

    The examples call this before they read any data, so re-running a
    command never trains again nor publishes a new TF Serving version by
    accident:

    - `"new"`: the folder is missing or empty; train.
    - `"resume"`: it holds `backup/`, an interrupted run's
      `BackupAndRestore` state; train, and `fit_resumable` continues with
      the next epoch.
    - `"finished"`: it holds `metrics.json`, which a run writes last; do
      not train nor publish (`report_finished_run` says what is there).
    - `"overwrite"`: it holds a run (finished, interrupted or neither) and
      `overwrite` is `True`: this removes `backup/` and `metrics.json`, so
      the run trains from scratch; it then replaces the model files and
      `metrics.json` and publishes the next serving version. Nothing else
      is removed: earlier `serving/<version>` folders stay, and TensorBoard
      logs are appended to.

    Any other used folder (e.g. `checkpoint.keras` or `serving/` but no
    `backup/` and no `metrics.json`: a run that failed before its first
    epoch ended, or another run's files) is refused unless `overwrite`,
    or unless `restart_unfinished`: then it is taken for the former and
    the answer is `"new"`. Names starting with `.`, the `workers/`
    sub-folder and the names in `ignore` do not count.

    Under a multi-worker strategy every process checks `output_dir` (the
    chief's folder), so that all take the same decision, and an overwrite
    removes files only in the folder this process writes to
    (`worker_output_dir`).

    Args:
        output_dir: str, the run's folder (the `--output-dir` flag).
        overwrite: bool, start a fresh run in a used folder (the
            `--overwrite` flag). Defaults to `False`.
        strategy: a `tf.distribute.Strategy` or `None`, to find the folder
            this process writes to. Defaults to `None` (`output_dir`).
        ignore: sequence of str, entries of `output_dir` that are not this
            run's files and are left alone, even by an overwrite: e.g. the
            folder of a run nested inside it, which looks after itself
            (the classification example's `pretrain/`, a language-model
            run with its own `prepare_output_dir`). Defaults to `()`.
        restart_unfinished: bool, answer `"new"` instead of refusing a
            folder that holds neither a finished nor an interrupted run:
            for a folder that only this run writes to, such as a run
            nested in another run's folder (the classification example's
            `pretrain/`), where such files can only be this run's own,
            stopped before its first epoch ended. Defaults to `False`.

    Returns:
        str, one of `"new"`, `"resume"`, `"finished"` and `"overwrite"`.

    Raises:
        FileExistsError: `output_dir` holds files but neither a finished
            nor an interrupted run, and neither `overwrite` nor
            `restart_unfinished` is `True`; the message names the files
            and `--overwrite`.

    Example:

    >>> import os
    >>> import tempfile
    >>> from keras_selfattn.recipes import prepare_output_dir
    >>> run = tempfile.mkdtemp()
    >>> prepare_output_dir(run)
    'new'
    >>> os.makedirs(os.path.join(run, "backup"))
    >>> prepare_output_dir(run)
    'resume'
    >>> with open(os.path.join(run, "metrics.json"), "w") as f:
    ...     _ = f.write('{"test_accuracy": 0.8}')
    >>> prepare_output_dir(run)
    'finished'
    >>> os.makedirs(os.path.join(run, "serving", "1"))
    >>> prepare_output_dir(run, overwrite=True)
    'overwrite'
    >>> sorted(os.listdir(run))  # backup/ and metrics.json removed
    ['serving']
    >>> try:
    ...     prepare_output_dir(run)
    ... except FileExistsError as error:
    ...     message = str(error)
    >>> "--overwrite" in message and "serving" in message
    True
    >>> prepare_output_dir(run, restart_unfinished=True)
    'new'
    """
    if not isinstance(output_dir, (str, os.PathLike)):
        raise _validation.invalid(
            "output_dir", "a path", output_dir, error=TypeError
        )
    output_dir = os.fspath(output_dir)
    _validation.boolean("overwrite", overwrite)
    _validation.boolean("restart_unfinished", restart_unfinished)
    if isinstance(ignore, str) or not all(
        isinstance(name, str) for name in ignore
    ):
        raise _validation.invalid(
            "ignore", "a sequence of folder or file names", ignore, TypeError
        )
    used = _used_entries(output_dir, ignore)
    if not used:
        return "new"
    if not overwrite:
        if METRICS_FILE in used:
            return "finished"
        if BACKUP_DIR in used:
            return "resume"
        if restart_unfinished:
            return "new"
        shown = ", ".join(used[:6]) + (", ..." if len(used) > 6 else "")
        raise FileExistsError(
            f"The output folder {output_dir!r} holds files of an earlier run "
            f"({shown}) but neither a finished run ({METRICS_FILE}) nor an "
            f"interrupted one ({BACKUP_DIR}/). Pass --overwrite "
            "(overwrite=True) to train a fresh run there (it publishes the "
            "next serving version and keeps the existing ones), or choose "
            "another --output-dir."
        )
    # Only this process's own folder: under multi-worker training the chief
    # owns `output_dir` and every other worker a `workers/` sub-folder.
    own = output_dir
    if strategy is not None:
        own = worker_output_dir(output_dir, strategy)
    backup = os.path.join(own, BACKUP_DIR)
    if os.path.isdir(backup):
        shutil.rmtree(backup)
    metrics = os.path.join(own, METRICS_FILE)
    if os.path.exists(metrics):
        os.remove(metrics)
    return "overwrite"


def _format_metrics(record, keys):
    parts = []
    for key in keys:
        if key not in record:
            continue
        value = record[key]
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = f"{value:.4g}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def report_finished_run(output_dir, keys=None):
    """Say that `output_dir` holds a finished run, and return its metrics.

    What an example does instead of training when `prepare_output_dir`
    returns `"finished"`: it prints one line with the key metrics of
    `<output_dir>/metrics.json`, its steps and its export path, and how to
    train again (`--overwrite`).

    Args:
        output_dir: str, the finished run's folder.
        keys: list of str or `None`, the metrics to print. Defaults to
            `None`: the `key_metrics` list recorded in `metrics.json` (the
            examples write one).

    Returns:
        dict, the finished run's metrics as read from `metrics.json`.

    Example:

    >>> import json
    >>> import os
    >>> import tempfile
    >>> from keras_selfattn.recipes import report_finished_run
    >>> run = tempfile.mkdtemp()
    >>> with open(os.path.join(run, "metrics.json"), "w") as f:
    ...     json.dump({"test_accuracy": 0.80281, "steps": 315,
    ...                "key_metrics": ["test_accuracy"],
    ...                "export_dir": "runs/sst2/serving/1"}, f)
    >>> metrics = report_finished_run(run)
    The run in ... is finished: test_accuracy 0.8028, steps 315; exported
    to runs/sst2/serving/1. Nothing trained or published; pass --overwrite
    to train again (it publishes the next serving version).
    >>> metrics["steps"]
    315
    """
    path = os.path.join(os.fspath(output_dir), METRICS_FILE)
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    if keys is None:
        keys = metrics.get("key_metrics") or []
    summary = _format_metrics(metrics, [*keys, "steps"])
    export_dir = metrics.get("export_dir")
    exported = f"; exported to {export_dir}" if export_dir else ""
    print(
        f"The run in {os.fspath(output_dir)} is finished: "
        f"{summary or 'no key metrics recorded'}{exported}. Nothing trained "
        "or published; pass --overwrite to train again (it publishes the "
        "next serving version)."
    )
    return metrics


def compare_with_published(export_dir, metrics, keys):
    """Print how this run compares with the latest published version.

    Call it just before exporting: TF Serving serves the highest version
    number, so an operator should see at once when a new version scores
    worse than the one it replaces, e.g. `serving/1: test_accuracy 0.803;
    this run: test_accuracy 0.551`. The earlier numbers come from the
    version's record (`keras_selfattn.export.published_versions`, whose
    module imports TensorFlow on this call).

    Args:
        export_dir: str, the base folder of the versions (`serving/`).
        metrics: dict, this run's metrics.
        keys: list of str, the metrics to compare.

    Returns:
        str, the printed line, or `None` (nothing printed) when no version
        was published yet.

    Example:

    >>> import os
    >>> import tempfile
    >>> import keras
    >>> import keras_selfattn
    >>> from keras_selfattn.recipes import compare_with_published
    >>> base = os.path.join(tempfile.mkdtemp(), "serving")
    >>> compare_with_published(base, {"test_loss": 0.5}, ["test_loss"])
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> _ = keras_selfattn.export.export_model(
    ...     model, base, metadata={"test_loss": 0.25})
    >>> line = compare_with_published(base, {"test_loss": 0.5}, ["test_loss"])
    serving/1: test_loss 0.25; this run: test_loss 0.5
    """
    from keras_selfattn.export.saved_model import published_versions

    versions = published_versions(export_dir)
    if not versions:
        return None
    latest = versions[-1]
    name = os.path.join(
        os.path.basename(os.path.normpath(os.fspath(export_dir))),
        str(latest["version"]),
    )
    line = (
        f"{name}: {_format_metrics(latest, keys) or 'no recorded metrics'}; "
        f"this run: {_format_metrics(metrics, keys) or 'no metrics'}"
    )
    print(line)
    return line


@dataclasses.dataclass(frozen=True)
class RunStart:
    """What `start_run` found and set up (it makes these; a driver reads
    them).

    Args:
        state: str, `prepare_output_dir`'s answer: `"new"`, `"resume"`,
            `"finished"` or `"overwrite"`.
        output_dir: str, the folder this process writes to
            (`worker_output_dir`: a sub-folder on a non-chief worker).
        strategy: the `tf.distribute.Strategy` of `make_strategy`.
        config: dict, the run's configuration to record in its metrics.
        finished_metrics: dict or `None`, a finished run's metrics
            (`report_finished_run`'s): the driver returns them and does
            nothing else. Defaults to `None`.

    Example:

    >>> from keras_selfattn.recipes import RunStart
    >>> run = RunStart("resume", "runs/lm", None, {"seed": 0})
    >>> run.state, run.finished_metrics
    ('resume', None)
    """

    state: str
    output_dir: str
    strategy: object
    config: dict
    finished_metrics: dict | None = None


def start_run(data_dir, output_dir, options, config=None, **prepare):
    """A recipe driver's first step: strategy, output folder, seed.

    In the order they must come: `make_strategy(options.strategy)` (before
    any other TensorFlow work, which multi-worker set-up needs), then
    `prepare_output_dir` (a finished run is reported by
    `report_finished_run` and nothing else happens), `worker_output_dir`
    (only the chief writes to `output_dir`) and
    `keras.utils.set_random_seed(options.seed)`.

    Args:
        data_dir: str, the run's data folder (recorded in the default
            `config`).
        output_dir: str, the run's folder.
        options: a `TrainingOptions` dataclass (its `strategy`,
            `overwrite` and `seed` are used).
        config: dict or `None`, the configuration to record. Defaults to
            `None`: `data_dir`, `output_dir` and the options' fields.
        **prepare: more arguments of `prepare_output_dir` (`ignore`,
            `restart_unfinished`).

    Returns:
        A `RunStart`.

    Example:

    >>> import tempfile
    >>> from keras_selfattn.recipes import TrainingOptions
    >>> from keras_selfattn.recipes import start_run
    >>> run = start_run("data", tempfile.mkdtemp(), TrainingOptions(seed=3))
    >>> run.state, run.finished_metrics, run.config["seed"]
    ('new', None, 3)
    """
    if config is None:
        config = {
            "data_dir": data_dir,
            "output_dir": output_dir,
            **dataclasses.asdict(options),
        }
    # Before any other TensorFlow work: multi-worker set-up must come first.
    strategy = make_strategy(options.strategy)
    # A finished run is reported, not trained nor published again.
    state = prepare_output_dir(
        output_dir, options.overwrite, strategy, **prepare
    )
    if state == "finished":
        return RunStart(
            state,
            output_dir,
            strategy,
            config,
            finished_metrics=report_finished_run(output_dir),
        )
    # Only the chief writes to `output_dir` (other workers: a sub-folder).
    output_dir = worker_output_dir(output_dir, strategy)
    keras.utils.set_random_seed(options.seed)
    return RunStart(state, output_dir, strategy, config)
