"""Robustness fixtures: a very small generated data set (helpers live in robust_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessrec.cli import main


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> Path:
    """Generated raw data (events.tsv, image.npy, text.npz, items.parquet) and its prepared folder.

    About 80 items and 1,400 training events: a 1-epoch fit takes about a second.
    """
    root = tmp_path_factory.mktemp("small")
    for args in (
        ["generate", "--out", root / "raw", "--n-items", "100", "--n-sessions", "400", "--n-topics", "10"],
        ["prepare", root / "raw" / "events.tsv", "--out", root / "prepared"],
    ):
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in args])
        assert stop.value.code == 0
    return root
