"""Tune fixtures: a very small generated data set and a tune-file writer over configs/gru4rec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sessrec.cli import main

REPO = Path(__file__).resolve().parents[2]
GRU4REC = REPO / "configs" / "gru4rec" / "synthetic.yaml"


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> Path:
    """Generated raw data and its prepared folder: about 70 items, 900 training events (1 s per fit)."""
    root = tmp_path_factory.mktemp("small")
    for args in (
        ["generate", "--out", root / "raw", "--n-items", "100", "--n-sessions", "400", "--n-topics", "10"],
        ["prepare", root / "raw" / "events.tsv", "--out", root / "prepared"],
    ):
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in args])
        assert stop.value.code == 0
    return root


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
