"""Shared fixtures: offline W&B / transformers, paths to the real data samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """Small synthetic data set, generated and prepared once per test session (~1 s)."""
    from sessrec.cli import main

    root = tmp_path_factory.mktemp("tiny")
    args = ["generate", "--out", str(root / "raw"), "--n-items", "400", "--n-sessions", "3000", "--n-topics", "10"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(root / "raw" / "events.tsv"), "--out", str(root / "prepared")])
    assert exit_info.value.code == 0
    return root / "prepared"


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> Path:
    """A very small generated data set: raw/ (events.tsv, image.npy, text.npz, items.parquet) and its
    prepared/ folder. About 80 items and 1,400 training events: a 1-epoch fit takes about a second."""
    from sessrec.cli import main

    root = tmp_path_factory.mktemp("small")
    for args in (
        ["generate", "--out", root / "raw", "--n-items", "100", "--n-sessions", "400", "--n-topics", "10"],
        ["prepare", root / "raw" / "events.tsv", "--out", root / "prepared"],
    ):
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in args])
        assert stop.value.code == 0
    return root
