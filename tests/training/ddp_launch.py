"""Helpers of the 2-process CPU DDP tests: a small prepared data set and a torchrun launch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sessrec.cli import main as cli_main

SCRIPTS = Path(__file__).resolve().parents[1] / "ddp_scripts"


def tiny_data(root: Path, n_items: int) -> Path:
    """Generate and prepare 301 sessions over `n_items` items in root (unequal sessions per rank); the
    prepared folder."""
    for args in (["generate", "--out", str(root / "raw"), "--n-items", str(n_items), "--n-sessions", "301"],
                 ["prepare", str(root / "raw" / "events.tsv"), "--out", str(root / "prepared")]):
        with pytest.raises(SystemExit) as info:
            cli_main(args)
        assert info.value.code == 0
    return root / "prepared"


def torchrun(script: str, *args: str) -> None:
    """Run tests/ddp_scripts/`script` in 2 CPU processes (1 thread each); fail with its stderr's end."""
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", str(SCRIPTS / script), *args]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
