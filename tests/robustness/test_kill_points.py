"""kill -9 at random points of `prepare`, `extract` and `fit`: nothing half-written is ever read.

Each command runs as `python -m sessrec` in a subprocess and is killed after a delay drawn (seeded) from
its measured run time. Afterwards the output either does not exist or is complete and byte-identical to
an uninterrupted run's; a rerun to the same output succeeds, gives that same output and leaves no
temporary files behind (the stale ones of the killed run included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from robust_helpers import run_cli, subprocess_env, tiny_config

from sessrec.training.checkpoints import load_checkpoint
from sessrec.data.prepared import PreparedData


def _start(args: list, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sessrec", *map(str, args)], cwd=cwd, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _timed(args: list, cwd: Path) -> float:
    start = time.monotonic()
    proc = _start(args, cwd)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return time.monotonic() - start


def _kill_after(args: list, cwd: Path, delay: float) -> bool:
    """Run and kill -9 after `delay` s; True when it was killed (False: it finished first)."""
    proc = _start(args, cwd)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def _files(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith((".tmp", ".old"))]


def _delays(seed: int, total: float, n: int) -> list[float]:
    """`n` kill times spread over the run, the first ones early (start-up is a good part of a short run)."""
    rng = np.random.default_rng(seed)
    return sorted(float(d) for d in rng.uniform(0.1, 1.0, n) * total)


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    """A raw log big enough that prepare spends a while reading and writing."""
    root = tmp_path_factory.mktemp("killlog")
    code = run_cli_code(["generate", "--out", root / "raw", "--n-items", "1000", "--n-sessions", "30000"])
    assert code == 0
    return root / "raw"


def run_cli_code(args: list) -> int:
    from sessrec.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_prepare_killed_anywhere_leaves_nothing_half_written(log: Path, tmp_path: Path) -> None:
    args = ["prepare", log / "events.tsv", "--overwrite"]
    total = _timed([*args, "--out", tmp_path / "ref"], tmp_path)
    reference = _files(tmp_path / "ref")
    out = tmp_path / "out"
    for delay in _delays(18, total, 4):
        _kill_after([*args, "--out", out], tmp_path, delay)
        found = _files(out)
        assert found in ({}, reference), f"half-written output after a kill at {delay:.2f} s"
        if found:
            PreparedData.load(out).split("test")  # and it reads
    _timed([*args, "--out", out], tmp_path)  # the rerun after the last kill
    assert _files(out) == reference
    assert not _leftovers(tmp_path), _leftovers(tmp_path)


def test_extract_text_killed_anywhere_leaves_nothing_half_written(log: Path, tmp_path: Path) -> None:
    args = ["extract", "text", log / "items.parquet", "--text-cols", "text", "--min-df", "1"]
    total = _timed([*args, "--out", tmp_path / "ref" / "text.npz"], tmp_path)
    reference = _files(tmp_path / "ref")
    out = tmp_path / "out"
    for delay in _delays(19, total, 3):
        _kill_after([*args, "--out", out / "text.npz"], tmp_path, delay)
        found = {k: v for k, v in _files(out).items() if not k.startswith(".")}
        assert found in ({}, reference), f"half-written output after a kill at {delay:.2f} s"
    _timed([*args, "--out", out / "text.npz"], tmp_path)
    assert {k: v for k, v in _files(out).items() if not k.startswith(".")} == reference
    assert not _leftovers(tmp_path), _leftovers(tmp_path)


def test_fit_killed_anywhere_leaves_only_loadable_checkpoints(small: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    config = tiny_config(tmp_path / "tiny.yaml", small / "prepared", run, every=4)
    total = _timed(["fit", "--config", config], tmp_path)
    for delay in _delays(20, total, 2):
        for ckpt in (run / "checkpoints").glob("*.ckpt"):
            ckpt.unlink()
        _kill_after(["fit", "--config", config], tmp_path, delay)
        for ckpt in (run / "checkpoints").glob("*.ckpt"):  # every checkpoint a kill left loads
            assert "state_dict" in load_checkpoint(ckpt)
    last = run / "checkpoints" / "last.ckpt"
    if last.exists():  # and the newest resumes
        result = run_cli(["fit", "--config", config, "--ckpt_path", last], capsys)
        assert result.code == 0, result.err[-3000:]
