"""Tune test helpers: a tune-file writer over configs/gru4rec (the data: the `small` fixture of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


REPO = Path(__file__).resolve().parents[2]
GRU4REC = REPO / "configs" / "gru4rec" / "synthetic.yaml"


def write_tune(folder: Path, prepared: Path, **fields: Any) -> Path:
    """A tune file in `folder` over configs/gru4rec/synthetic.yaml, 2 epochs on `prepared`.

    `fields` replace top-level keys."""
    data: dict[str, Any] = {
        "base": str(GRU4REC),
        "overrides": {"data.data_dir": str(prepared), "trainer.max_epochs": 2,
                      "model.init_args.n_sample": 64, "model.init_args.logq": 0.0},
        "space": {"model.init_args.lr": {"float": [0.02, 0.2], "log": True},
                  "model.init_args.net.init_args.layers.0": {"int": [20, 60], "step": 20}},
        "n_trials": 3,
        "seed": 0,
        "out": str(folder / "out"),
    }
    data.update(fields)
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
