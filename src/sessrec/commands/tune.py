"""Search hyperparameters with Optuna: trials train on train, score on valid; best.yaml for `fit`."""

from __future__ import annotations

import argparse

from sessrec.errors import SessrecError
from sessrec.io import check_output
from sessrec.tune.spec import load_tune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="tune file, e.g. configs/tune/gru4rec-synthetic.yaml")


def run(args: argparse.Namespace) -> int:
    spec = load_tune(args.config)
    # a study resumes in its own folder (no lock: several processes may share it), but never over inputs
    inputs = [args.config, *spec.base, spec.overrides.get("data.data_dir")]
    check_output(spec.out, inputs, option=f"{args.config}: out")
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
