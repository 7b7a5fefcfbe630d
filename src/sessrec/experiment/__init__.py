"""Experiments: named sets of LightningCLI runs, trained and tested in turn, reported as one table.

`python -m sessrec experiment --config configs/paper/synthetic.yaml` (see `spec` for the file, `runner`
for the output layout, `results` for the tables).
"""

from sessrec.experiment.spec import Experiment, RunSpec, WandbSpec, compose, load_experiment

__all__ = ["Experiment", "RunSpec", "WandbSpec", "compose", "load_experiment"]
