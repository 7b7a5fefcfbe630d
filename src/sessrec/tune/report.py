"""The study's outputs: trials.csv, best.yaml, Optuna's plots, and the refit's test.json.

    <out>/trials.csv         Optuna's trials_dataframe: number, value, state, times, params_*, and
                             user_attrs_error (the one-line reason of a FAIL)
    <out>/best.yaml          a LightningCLI config: base + overrides + the best trial's values, on
                             train_full (`python -m sessrec fit --config <out>/best.yaml`)
    <out>/history.png        optimisation history; importances.png: parameter importances (fANOVA),
                             from 2 complete trials on (matplotlib needed; otherwise skipped with a note)
    <out>/test.json          with `refit: true`: best.yaml trained on train_full and tested once (with
                             `seeds`: once per seed, the mean, sample std and each seed's result)
    <out>/refit/             the refit's LightningCLI outputs (config.yaml, checkpoints; seed-<s>/ each)
    <out>/trials/<n>/        trial.yaml (what trial n trained; with `seeds`: seed-<s>/trial.yaml each),
                             error.log (a failed trial's traceback)
    <out>/study.db           the default storage
    W&B (with `wandb`)       besides each trial's own run: a "<study>-study" run with the trials table
                             and the best trial, logged once per content (<out>/.wandb-study)

Every process sharing the study rewrites the files from the whole study when its trials end.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import statistics
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from sessrec.errors import DataError
from sessrec.io import atomic_write
from sessrec.tune.compose import best_config
from sessrec.tune.spec import TuneSpec

log = logging.getLogger(__name__)


def best_params(spec: TuneSpec, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The best trial's config values (categorical labels back to their choices, tied keys from their
    source), in the space's order."""
    values: dict[str, Any] = {}
    for p in spec.space:
        if p.key in trial.params:
            values[p.key] = p.value(trial.params[p.key])
        elif p.same_as is not None and p.same_as.key in values and all(
                values.get(k) == v for k, v in p.when.items()):
            values[p.key] = copy.deepcopy(values[p.same_as.key])
    return values


def _write_text(path: Path, text: str) -> None:
    try:
        with atomic_write(path) as tmp:
            tmp.write_text(text)
    except DataError as err:  # another process of the study is writing the same report right now
        log.warning("%s not written: %s", path, err)


def _best_yaml(spec: TuneSpec, base: dict[str, Any], study: optuna.Study) -> Path | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    path = Path(spec.out) / "best.yaml"
    header = (f"# Best of study {spec.study_name} ({len(complete)} complete trials): trial {best.number}, "
              f"{spec.objective} {best.value:.4f} on valid.\n"
              f"# Trains on train_full and tests on test: python -m sessrec fit --config {path}\n")
    config = best_config(spec, base, best_params(spec, best))
    _write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def _plots(spec: TuneSpec, study: optuna.Study) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as plots
    except ImportError:
        log.info("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    wanted = {"history.png": plots.plot_optimization_history}
    if complete >= 2:
        wanted["importances.png"] = plots.plot_param_importances
    else:
        log.info("importances.png skipped: parameter importances need 2 complete trials (%d so far)",
                 complete)
    written = []
    for name, plot in wanted.items():
        path = Path(spec.out) / name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            with atomic_write(path) as tmp:
                figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")  # long dotted keys
            plt.close(figure)
            written.append(path)
        except (ValueError, RuntimeError, DataError) as err:  # e.g. importances of a single-valued space
            log.info("%s skipped: %s", name, " ".join(str(err).split()))
    return written


def write_reports(spec: TuneSpec, base: dict[str, Any], study: optuna.Study) -> dict[str, Path | None]:
    """trials.csv, best.yaml (None without a complete trial) and the plots, from the whole study."""
    trials = Path(spec.out) / "trials.csv"
    table = study.trials_dataframe().to_csv(index=False)
    _write_text(trials, table)
    paths: dict[str, Path | None] = {"trials": trials, "best": _best_yaml(spec, base, study)}
    for path in _plots(spec, study):
        paths[path.stem] = path
    return paths


def _cell(value: Any) -> Any:
    """A wandb.Table cell: numbers and strings as they are, NaN as empty, times and lists as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if value is None or isinstance(value, (bool, int, str)) else str(value)


def log_study(spec: TuneSpec, study: optuna.Study, init_timeout: float = 60.0) -> bool:
    """With the tune file's `wandb`: log the trials table and the best trial to a "<study>-study" run
    of the study's W&B group (offline unless WANDB_MODE says otherwise), once per content: a hash of
    what was logged is kept in <out>/.wandb-study. Returns True when it logged."""
    from sessrec.training.loggers import log_table_once

    if spec.wandb is None or not study.trials:
        return False
    frame = study.trials_dataframe()
    summary = {}
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        summary = {"best_trial": study.best_trial.number, f"best_{spec.objective}": study.best_value}
    columns = [str(c) for c in frame.columns]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    return log_table_once(
        spec.wandb, spec.study_name, f"{spec.study_name}-study", "study", spec.out, ".wandb-study", "trials",
        columns, rows, config={"study": spec.study_name, "objective": spec.objective}, summary=summary,
        init_timeout=init_timeout)


def refit(spec: TuneSpec, base: dict[str, Any], study: optuna.Study, best: Path) -> Path:
    """Train best.yaml on train_full and test it once, in this process; write test.json. With `seeds`:
    once per seed (configs <out>/refit/seed-<s>.yaml); "metrics" is then the mean over the seeds,
    "metrics_std" the sample standard deviation and "runs" each seed's result."""
    from sessrec.experiment.train import train_and_test

    trial = study.best_trial
    params = best_params(spec, trial)
    record: dict[str, Any] = {"study": spec.study_name, "trial": trial.number,
                              f"valid_{spec.objective}": trial.value, "params": params, "config": str(best)}
    if not spec.seeds:
        log.info("refit: training %s on train_full, then testing once", best)
        record.update(train_and_test(best))
    else:
        runs = {}
        for seed in spec.seeds:
            config = Path(spec.out) / "refit" / f"seed-{seed}.yaml"
            _write_text(config, yaml.safe_dump(best_config(spec, base, params, seed), sort_keys=False))
            log.info("refit: training %s on train_full, then testing once (seed %d)", config, seed)
            runs[str(seed)] = train_and_test(config)
        names = runs[str(spec.seeds[0])]["metrics"]
        per_metric = {name: [run["metrics"][name] for run in runs.values()] for name in names}
        record["seeds"] = list(spec.seeds)
        record["metrics"] = {name: statistics.fmean(v) for name, v in per_metric.items()}
        record["metrics_std"] = {name: statistics.stdev(v) if len(v) > 1 else 0.0
                                 for name, v in per_metric.items()}
        record["runs"] = runs
    path = Path(spec.out) / "test.json"
    _write_text(path, json.dumps(record, indent=2) + "\n")
    return path
