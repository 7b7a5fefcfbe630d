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


def test_lib_copies_best_configs_and_finished_results(tmp_path):
    """lib.sh (shared by both leaderboard scripts): `studies` copies each best.yaml, `final_runs` copies
    result.json + run.yaml of finished runs only; sessrec itself is stubbed out (SESSREC_PY=true)."""
    (tmp_path / "runs" / "tune-d-x").mkdir(parents=True)
    (tmp_path / "runs" / "tune-d-x" / "best.yaml").write_text("seed_everything: 3\n")
    (tmp_path / "benchmarks" / "recbole" / "tuned").mkdir(parents=True)
    for run, finished in (("a-s0", True), ("a-s1", False)):
        (tmp_path / "out" / run).mkdir(parents=True)
        (tmp_path / "out" / run / "run.yaml").write_text(run)
        if finished:
            (tmp_path / "out" / run / "result.json").write_text("{}")
    lib = SCRIPT.with_name("lib.sh")
    script = f"SESSREC_PY=true; source {lib}; studies configs/tune/d-x.yaml; final_runs exp.yaml out results"
    done = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    best = tmp_path / "benchmarks" / "recbole" / "tuned" / "d-x-best.yaml"
    assert best.read_text() == "seed_everything: 3\n"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["a-s0"]
    assert sorted(p.name for p in (tmp_path / "results" / "a-s0").iterdir()) == ["result.json", "run.yaml"]
