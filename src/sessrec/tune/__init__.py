"""Hyperparameter search with Optuna over a LightningCLI config (`python -m sessrec tune --config T.yaml`).

`spec` reads the tune file, `compose` builds trial and best configs and checks them against the real
parser, `study` runs the Optuna study (TPE, median pruning, shared storage), `report` writes the outputs.
"""

from sessrec.tune.spec import Param, TuneSpec, load_tune, parse_tune

__all__ = ["Param", "TuneSpec", "load_tune", "parse_tune"]
