"""The Optuna study: TPE sampling, median pruning on per-epoch validation, persistent shared storage.

Each trial composes its config (sessrec.tune.compose), writes it to <out>/trials/<number>/trial.yaml and
trains it in this process through SessrecCLI, as `sessrec experiment` does. With `seeds` it trains once per
seed (<out>/trials/<number>/seed-<s>/trial.yaml) and scores the mean of the runs' objectives; only the
first seed's epochs are reported for pruning, so a pruned trial stops before its other seeds train. A trial that raises (a
constructor rejecting a combination, a non-finite loss, any error in training) is recorded as FAIL
with its one-line message (user attribute `error`, traceback in <out>/trials/<number>/error.log) and
the study goes on; only TrialPruned ends a trial early on purpose. Before the first trial the validation
split is checked: no targets stops the study (ConfigError), fewer than SMALL_VALID is named with the bound
on the objective's standard error. With the tune file's `wandb`, every trial (and seed) trains with its own
W&B logger (compose.trial_config) whose run gets the outcome in its summary and is finished afterwards.

Storage is an Optuna RDB URL (SQLite file by default) opened with `load_if_exists`, so a rerun resumes
the study and several processes (or machines, with a database server) share it, each running its own
trials. `n_trials` counts the study's finished trials (complete, pruned or failed) across processes
(Optuna's MaxTrialsCallback), so a rerun after a kill completes the count; one process never starts
more than `n_trials` itself. A trial whose process died (kill -9, lost machine) stays RUNNING until its
heartbeat is `GRACE_S` old: the next process to start a trial then marks it FAIL and queues its values
again once (RetryHeartbeatStaleTrialCallback).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import math
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.model_helpers import is_overridden
from optuna.trial import TrialState

from sessrec.errors import ConfigError
from sessrec.io import atomic_write
from sessrec.training.loggers import WandbLogger
from sessrec.tune.compose import base_config, check, trial_config
from sessrec.tune.spec import Param, TuneSpec

log = logging.getLogger(__name__)

SMALL_VALID = 1000  # below this many validation targets, tune says how coarse its objective is
HEARTBEAT_S = 30  # a running trial writes a heartbeat this often ...
GRACE_S = 120  # ... and is failed as dead (and retried) when none came for this long
SCHEMA_RETRIES = 3  # opening the storage again after another process created its tables meanwhile
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class TrialReport(Callback):
    """Reports the objective to Optuna after every validation; prunes; a non-finite objective fails the
    trial (a non-finite training loss already stops the run: `SessionRecModule`'s TrainingDiverged)."""

    def __init__(self, trial: optuna.Trial | None, metric: str) -> None:
        self.trial, self.metric = trial, metric  # trial None: only measure (a trial's later seeds)
        self.value: float | None = None
        self.reports = 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            logged = ", ".join(sorted(k for k in trainer.callback_metrics if k.startswith("val_"))) or "none"
            raise ConfigError(f"objective {self.metric} was not logged (validation metrics: {logged})")
        self.value = float(value)
        if not math.isfinite(self.value):
            raise FloatingPointError(f"{self.metric} is {self.value} at epoch {trainer.current_epoch}")
        if self.trial is None:
            return
        self.trial.report(self.value, self.reports)
        self.reports += 1
        if self.trial.should_prune():
            epoch = trainer.current_epoch
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self.metric} {self.value:.4f}")


def suggest(trial: optuna.Trial, spec: TuneSpec) -> dict[str, Any]:
    """The trial's config values, in the space's order; a conditional key only when its condition holds."""
    values: dict[str, Any] = {}
    for param in spec.space:
        if not all(k in values and values[k] == v for k, v in param.when.items()):
            continue
        if param.same_as is None:
            values[param.key] = param.value(_suggest_one(trial, param))
        elif param.same_as.key in values:  # tied to an earlier key (not one of Optuna's dimensions)
            values[param.key] = copy.deepcopy(values[param.same_as.key])
    return values


def _suggest_one(trial: optuna.Trial, param: Param) -> Any:
    if param.kind == "categorical":
        return trial.suggest_categorical(param.key, param.labels)
    if param.kind == "int":
        return trial.suggest_int(param.key, param.low, param.high, step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def check_valid_split(spec: TuneSpec, trial: Any) -> None:
    """Before any trial: the split every trial is scored on must have targets (ConfigError), and a
    small one is named with the bound on the objective's standard error.

    Every ranking metric lies in [0, 1], so its mean over n targets has a standard error of at most
    0.5 / sqrt(n): trials closer than that cannot be told apart however many run (docs/tuning.md)."""
    from sessrec.data.prepared import PreparedData

    data_dir, split = trial.data.data_dir, trial.data.val_split
    val = PreparedData.load(data_dir).split(split)
    targets = val.n_events - val.n_sessions  # every position t >= 1 of a session is a target
    if targets == 0:
        raise ConfigError(f"{spec.source}: split {split!r} of {data_dir} has no targets, and every trial is "
                          "scored on it (prepare the data with --valid-days > 0)")
    if targets < SMALL_VALID:
        log.warning("%s is a mean over %d targets of split %r of %s: its standard error can reach %.3f "
                    "(0.5/sqrt(n)), so trials closer than that are not told apart; more seeds per trial do "
                    "not fix this, a longer validation period does (docs/tuning.md)", spec.objective, targets,
                    split, data_dir, 0.5 / math.sqrt(targets))


def _summarise(trainer: Trainer, values: dict[str, Any]) -> None:
    """Put the trial's outcome in the summary of its W&B run (when one was started)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger.started:  # not started: e.g. failed before fit
            logger.experiment.summary.update(values)


def _train(config: Path, metric: str, trial: optuna.Trial | None) -> float:
    from sessrec.experiment.train import _cli, _finish_loggers
    from sessrec.lightning_cli import SessrecCLI

    cli = _cli(SessrecCLI, config)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    report = TrialReport(trial, metric)
    trainer.callbacks.append(report)
    try:
        if is_overridden("training_step", model):
            trainer.fit(model, datamodule=data)
        else:  # a baseline: nothing to train, its parameters are scored as they are
            trainer.validate(model, datamodule=data, verbose=False)
        if report.value is None:
            raise RuntimeError(f"no validation ran, so {metric} was never measured (check limit_val_batches)")
        _summarise(trainer, {"tune/state": "COMPLETE", f"tune/{metric}": report.value})
        return report.value
    except optuna.TrialPruned:
        _summarise(trainer, {"tune/state": "PRUNED"})
        raise
    except Exception as err:
        _summarise(trainer, {"tune/state": "FAIL", "tune/error": _one_line(err)})
        raise
    finally:
        _finish_loggers(trainer)  # the next trial's W&B run must not reuse this one


class Objective:
    """Optuna's objective: compose the trial's config, train it (once per seed), return the last
    validation objective (the mean over the seeds)."""

    def __init__(self, spec: TuneSpec, base: dict[str, Any]) -> None:
        self.spec, self.base = spec, base

    def __call__(self, trial: optuna.Trial) -> float:
        folder = Path(self.spec.out) / "trials" / str(trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            params = suggest(trial, self.spec)
            if not self.spec.seeds:
                return self._run(trial, params, folder, None, f"trial-{trial.number}")
            values: list[float] = []
            for seed in self.spec.seeds:  # the first seed reports to the pruner, the others only measure
                values.append(self._run(trial if not values else None, params, folder / f"seed-{seed}", seed,
                                        f"trial-{trial.number}-seed-{seed}"))
                trial.set_user_attr("seed_values", values)
            return sum(values) / len(values)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # recorded as FAIL by study.optimize(catch=...): the study goes on
            trial.set_user_attr("error", _one_line(err))
            (folder / "error.log").write_text(traceback.format_exc())
            raise

    def _run(self, trial: optuna.Trial | None, params: dict[str, Any], folder: Path,
             seed: int | None, name: str) -> float:
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "trial.yaml"
        composed = trial_config(self.spec, self.base, params, folder, seed, name)
        with atomic_write(config) as tmp:
            tmp.write_text(yaml.safe_dump(composed, sort_keys=False))
        return _train(config, self.spec.objective, trial)


def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial: number, state, value, seconds, values (and why it failed)."""
    seconds = trial.duration.total_seconds() if trial.duration else float("nan")
    params = ", ".join(f"{k}={v}" for k, v in trial.params.items())
    value = "" if trial.value is None else f" {study.metric_names[0] if study.metric_names else 'value'}" \
        f"={trial.value:.4f}"
    seeds = trial.user_attrs.get("seed_values")
    if seeds:
        value += f" (per seed: {' / '.join(f'{v:.4f}' for v in seeds)})"
    error = trial.user_attrs.get("error")
    log.info("trial %d %s%s in %.1f s: %s%s", trial.number, trial.state.name, value, seconds, params,
             f" ({error})" if error else "")


@contextlib.contextmanager
def _lightning_quiet() -> Iterator[None]:
    """Lightning's per-trial banners (devices, seeds, the fused step) at WARNING while the study runs."""
    names = ("lightning.pytorch", "lightning.fabric", "sessrec.training.module")
    levels = {n: logging.getLogger(n).level for n in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def open_study(spec: TuneSpec) -> optuna.Study:
    """Create or load the study in its storage, with a TPE sampler and the median (or no) pruner."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    Path(spec.out).mkdir(parents=True, exist_ok=True)
    with _creation_lock(spec), warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats and metric names: stable enough
        # SQLite: several processes share one file; wait for a lock (60 s) instead of failing at once
        engine = {"connect_args": {"timeout": 60}} if spec.storage_url.startswith("sqlite") else None
        for attempt in range(SCHEMA_RETRIES + 1):
            try:
                storage = RDBStorage(spec.storage_url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                     grace_period=GRACE_S,
                                     heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
                break
            except Exception as err:  # SQLAlchemy's errors for a bad URL or an unreachable database
                # a process outside sessrec (optuna.load_study, a dashboard) created the tables at the same
                # moment: they exist now, so opening again succeeds
                if attempt < SCHEMA_RETRIES and "already exists" in str(err):
                    time.sleep(0.5)
                    continue
                raise ConfigError(f"{spec.source}: storage {spec.storage_url}: {_one_line(err)}") from None
        pruner = optuna.pruners.MedianPruner() if spec.pruner else optuna.pruners.NopPruner()
        study = optuna.create_study(storage=storage, study_name=spec.study_name, direction="maximize",
                                    pruner=pruner, load_if_exists=True)
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ConfigError(f"{spec.source}: study {spec.study_name!r} in {spec.storage_url} is "
                              "not maximised")
        study.set_metric_names([spec.objective])
        _check_search(spec, study)
    # A resumed study (or a second process) starts its sampler further on, not at the first trial's draws.
    seed = None if spec.seed is None else spec.seed + len(study.trials)
    study.sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return study


SEARCH_ATTR = "sessrec_search"  # the study's objective and space, as the first tune file gave them


def search_identity(spec: TuneSpec) -> str:
    """The objective and the search space of `spec` as one JSON string (what a resumed study must share)."""
    space = [[p.key, p.kind, p.low, p.high, p.step, p.log, list(p.labels), p.when,
              p.same_as.key if p.same_as is not None else None] for p in spec.space]
    return json.dumps({"objective": spec.objective, "space": space}, sort_keys=True, default=str)


def _check_search(spec: TuneSpec, study: optuna.Study) -> None:
    """ConfigError when the study in storage was run with another objective or space (an edited tune file,
    or two tune files on one storage and study name): its values would be ranked as this file's."""
    mine, saved = search_identity(spec), study.user_attrs.get(SEARCH_ATTR)
    if saved is None:
        study.set_user_attr(SEARCH_ATTR, mine)  # a new study, or one from before this check
        return
    if saved != mine:
        theirs = json.loads(saved)
        what = "objective" if theirs.get("objective") != spec.objective else "search space"
        raise ConfigError(f"{spec.source}: study {spec.study_name!r} in {spec.storage_url} was run with "
                          f"another {what} (objective {theirs.get('objective')}): give this tune file a new "
                          "study_name or out")


@contextlib.contextmanager
def _creation_lock(spec: TuneSpec) -> Iterator[None]:
    """Processes opening one SQLite study at the same moment take turns: SQLAlchemy's table creation
    is not atomic across processes (a second CREATE TABLE fails). Other storages manage themselves."""
    if not spec.storage_url.startswith("sqlite:///"):
        yield
        return
    database = Path(spec.storage_url.removeprefix("sqlite:///"))
    with open(database.with_name(f".{database.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        yield


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def run_study(spec: TuneSpec) -> tuple[optuna.Study, dict[str, Any], list[int]]:
    """Check the file against the parser, run trials until n_trials / timeout: (study, base, trials run)."""
    from sessrec.encoders.registry import discover

    discover()  # plug-in encoders become nameable in the configs, as in `sessrec fit`
    base = base_config(spec)
    check_valid_split(spec, check(spec, base))
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial from log_trial instead
    study = open_study(spec)
    mine: list[int] = []
    callbacks = [lambda s, t: mine.append(t.number), log_trial]
    if spec.n_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(spec.n_trials, states=COUNTED))
        if counted(study) >= spec.n_trials:
            log.info("study %s already has %d finished trials: nothing to run", spec.study_name,
                     counted(study))
            return study, base, mine
    log.info("study %s (%s): %d trial(s) in storage; tuning %d key(s) for %s", spec.study_name,
             spec.storage_url, len(study.trials), len(spec.space), spec.objective)
    start = time.perf_counter()
    with _lightning_quiet():
        study.optimize(Objective(spec, base), n_trials=spec.n_trials, timeout=spec.timeout,
                       catch=(Exception,), callbacks=callbacks, gc_after_trial=True)
    log.info("ran %d trial(s) in %.0f s", len(mine), time.perf_counter() - start)
    return study, base, mine
