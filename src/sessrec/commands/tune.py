"""Search hyperparameters with Optuna: trials train on train, score on valid; best.yaml for `fit`."""

from __future__ import annotations

import argparse
from pathlib import Path

from sessrec.errors import DataError, SessrecError
from sessrec.io import check_output, read_yaml
from sessrec.tune.spec import TuneSpec, load_tune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="tune file, e.g. configs/tune/gru4rec-synthetic.yaml")


def _data_dir(spec: TuneSpec) -> str | None:
    """The data folder the trials read: the tune file's override, else the last base file that names one."""
    found = spec.overrides.get("data.data_dir")
    for path in spec.base if found is None else ():
        config = read_yaml(path) if Path(path).is_file() else None
        data = config.get("data") if isinstance(config, dict) else None  # a bad base: refused later
        if isinstance(data, dict):
            args = data.get("init_args") if isinstance(data.get("init_args"), dict) else data
            found = args.get("data_dir", found)
    return found if isinstance(found, str) else None


def _check_out(spec: TuneSpec, option: str) -> None:
    """DataError unless `out` is new, empty or a study's folder (its study.db or trials/): tune writes
    best.yaml, trials.csv, plots and trials/ there, and must not write over what something else left."""
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{option} {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not ((out / "study.db").exists() or (out / "trials").is_dir()):
        raise DataError(f"{option} {out}: an existing folder that holds no study (no study.db or "
                        "trials/): not written into; choose a new folder")


def run(args: argparse.Namespace) -> int:
    spec = load_tune(args.config)
    # a study resumes in its own folder (no lock: several processes may share it), but never over inputs
    inputs = [args.config, *spec.base, _data_dir(spec)]
    check_output(spec.out, inputs, option=f"{args.config}: out")
    _check_out(spec, f"{args.config}: out")
    from sessrec.tune.report import log_study, refit, write_reports  # lightning, optuna: once the file is valid
    from sessrec.tune.study import run_study

    study, base, mine = run_study(spec)
    paths = write_reports(spec, base, study)
    states = {}
    for trial in study.trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    print(f"study {spec.study_name}: {len(mine)} trial(s) run now; in storage: {summary}")
    if log_study(spec, study):
        print(f"W&B: trials table logged (project {spec.wandb}, group {spec.study_name})")
    if paths["best"] is None:
        raise SessrecError(f"study {spec.study_name}: no trial completed, so no best.yaml "
                           f"(reasons in {paths['trials']}, column user_attrs_error)")
    best = study.best_trial
    print(f"best: trial {best.number}, {spec.objective} {best.value:.4f}: {paths['best']} "
          f"(and {', '.join(str(p) for k, p in paths.items() if k != 'best')})")
    if spec.refit:
        print(f"refit on train_full, tested once: {refit(spec, base, study, paths['best'])}")
    return 0
