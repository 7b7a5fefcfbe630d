"""Train and test a set of runs (e.g. the p-RNN paper's table); finished runs are skipped on rerun."""

from __future__ import annotations

import argparse
import shlex

from sessrec.experiment.spec import load_experiment


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected run names separated by commas")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment file, e.g. configs/paper/synthetic.yaml")
    parser.add_argument("--only", type=_names, default=None, metavar="NAME,...",
                        help="run only these runs (the table still lists every finished run)")
    parser.add_argument("--force", action="store_true", help="rerun the selected runs even when finished")


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.config)
    from sessrec.experiment.runner import run_experiment  # imports lightning: after the file is valid

    command = shlex.join(["python", "-m", "sessrec", "experiment", "--config", str(args.config)])
    outcome = run_experiment(experiment, only=args.only, force=args.force, command=command,
                             source=args.config)
    print(outcome.markdown.read_text(), end="")
    print(f"{outcome.markdown} (and results.csv): {len(outcome.trained)} run(s) trained now, "
          f"{len(outcome.skipped)} skipped as finished")
    return 0
