"""benchmarks/recbole/tuned_leaderboard.sh: arguments checked before any work, the H&M explanation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recbole" / "tuned_leaderboard.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, said", [
    (("nope",), "unknown DATASET 'nope'"),
    (("all", "bogus"), "unknown stage 'bogus'"),
    (("diginetica", "bogus"), "unknown stage 'bogus'"),
])
def test_bad_arguments_stop_with_one_line(args, said):
    done = _run(*args)
    assert done.returncode == 2 and said in done.stderr
    assert "==" not in done.stderr  # `all` stopped before running any data set


def test_hm_explains_why_there_is_no_table():
    done = _run("hm", "table")
    assert done.returncode == 0 and "4 (and at most 4 valid targets)" in done.stdout
