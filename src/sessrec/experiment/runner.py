"""Run an experiment: every unfinished run is fitted and tested in turn, then the table is written.

Layout under `out_dir`:

    results.md, results.csv     the table (finished runs, in the experiment's order)
    wandb/                      the W&B "results" run with the table (when W&B is on)
    <run>/run.yaml              the composed LightningCLI config the run was built from
    <run>/config.yaml           LightningCLI's resolved config (every default filled in)
    <run>/metrics.csv           CSVLogger: train_loss_step per logged step; per epoch train_loss_epoch
                                and, with a TrainingSchedule, schedule/phase_index_epoch; test_* at the end
    <run>/hparams.yaml          the module's hyperparameters and the full config
    <run>/checkpoints/last.ckpt the trained weights (`python -m sessrec test --config <run>/run.yaml
                                --ckpt_path ...` reproduces the test)
    <run>/wandb/                the run's W&B files (when W&B is on)
    <run>/result.json           written last, atomically: a run with it is finished and skipped on rerun
    <run>/error.log             the traceback of a run that failed

A run without result.json (never started, failed, interrupted) starts again from scratch: its folder is
cleared first, if it holds the run.yaml an experiment wrote (a non-empty folder without one is refused). Every composed config is parsed before the first run trains, so a typo in the last run
fails in seconds, not after the others have trained.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sessrec.errors import ConfigError, DataError, SessrecError
from sessrec.experiment.results import log_wandb_table, result_path, write_result, write_tables
from sessrec.experiment.spec import Experiment, RunSpec, compose, input_paths
from sessrec.io import atomic_write, claim_output

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one invocation did: runs trained and skipped, the table rows, the table paths."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    markdown: Path | None = None


def _check_clearable(experiment: Experiment, runs: list[RunSpec]) -> None:
    """DataError before anything is cleared when a run's folder holds something an experiment did not
    write: a file, or a non-empty folder without run.yaml (e.g. another run's outputs under the same name)."""
    for run in runs:
        run_dir = experiment.run_dir(run)
        if not os.path.lexists(run_dir):
            continue
        if run_dir.is_symlink() or not run_dir.is_dir():
            raise DataError(f"{run_dir}: run {run.name!r} needs this folder, but it is not one; not replaced")
        if any(run_dir.iterdir()) and not (run_dir / "run.yaml").is_file():
            raise DataError(f"{run_dir}: exists and was not written by this experiment (no run.yaml): not "
                            f"cleared; rename run {run.name!r} or out_dir, or move that folder")


def _prepare(experiment: Experiment, run: RunSpec) -> Path:
    """Clear the run folder and write its composed config (run.yaml)."""
    run_dir = experiment.run_dir(run)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    path = run_dir / "run.yaml"
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(compose(experiment, run), sort_keys=False))
    return path


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _train(experiment: Experiment, run: RunSpec, config: Path) -> dict:
    from sessrec.experiment.train import train_and_test

    try:
        return train_and_test(config)
    except SessrecError as err:
        raise SessrecError(f"run {run.name!r}: {err}") from err
    except Exception as err:  # a failing run is reported on one line; the traceback goes to error.log
        error_log = experiment.run_dir(run) / "error.log"
        error_log.write_text(traceback.format_exc())
        raise SessrecError(f"run {run.name!r} failed: {_one_line(err)} (traceback: {error_log})") from err


def run_experiment(
    experiment: Experiment,
    only: list[str] | None = None,
    force: bool = False,
    command: str = "",
    source: str | Path | None = None,
) -> Outcome:
    """Fit and test the selected runs that have no result.json (all selected ones with `force`).

    Writes the tables after every run, so an interrupted experiment keeps what finished; a failing run
    raises SessrecError (one line) and leaves no result.json. Before anything, `out_dir` is checked
    against what the runs read (and `source`, the experiment file) and locked for the whole run.
    """
    inputs = [source, *input_paths(experiment)]
    option = f"{source}: out_dir" if source else "out_dir"
    with claim_output(experiment.out_dir, inputs, option=option, folder=True):
        return _run_all(experiment, only, force, command)


def _run_all(experiment: Experiment, only: list[str] | None, force: bool, command: str) -> Outcome:
    from sessrec.encoders.registry import discover
    from sessrec.experiment.train import check_config

    discover()  # plug-in encoders become nameable in the run configs, as in `sessrec fit`
    outcome = Outcome()
    todo = []
    for run in experiment.select(only):
        if result_path(experiment, run).is_file() and not force:
            outcome.skipped.append(run.name)
        else:
            todo.append(run)
    if outcome.skipped:
        log.info("finished before, skipped: %s", ", ".join(outcome.skipped))
    _check_clearable(experiment, todo)
    configs = {run.name: _prepare(experiment, run) for run in todo}
    for run in todo:
        try:
            check_config(configs[run.name])
        except ConfigError as err:
            raise ConfigError(f"run {run.name!r}: {err}") from None
    for i, run in enumerate(todo, 1):
        log.info("run %d/%d: %s (%s)", i, len(todo), run.name, run.title)
        start = time.perf_counter()
        result = _train(experiment, run, configs[run.name])
        write_result(experiment, run, result)
        outcome.trained.append(run.name)
        metrics = result["metrics"]
        log.info("run %s done in %.0f s: Recall@20 %.4f, MRR@20 %.4f", run.name, time.perf_counter() - start,
                 metrics.get("test_recall@20", float("nan")), metrics.get("test_mrr@20", float("nan")))
        write_tables(experiment, command)
    outcome.rows = write_tables(experiment, command)
    outcome.markdown = Path(experiment.out_dir) / "results.md"
    if log_wandb_table(experiment, outcome.rows):
        log.info("W&B: results table logged (project %s, group %s)", experiment.wandb.project,
                 experiment.name)
    return outcome
