"""Faults: kill -9 during training or extraction, then resume; the same seed gives the same metrics.

Resume is exact on the CPU: a run killed after a checkpoint and resumed with `--ckpt_path` reaches
bitwise the same test metrics as a run never stopped (tolerance: none). What makes it exact: the
checkpoint holds the weights, the optimiser, the data loader's block position, the sub-step counter,
the sampler's stream, the training hidden state and the global RNG state (dropout); the data loaders
draw their seeds from a private generator, so nothing consumes the global RNG between a checkpoint and
the next block. Not deterministic, and so not compared bitwise: GPU runs (atomic adds in embedding
backward and index_add), and runs with another number of CPU threads or devices than the first run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from robust_helpers import parse_test_metrics, run_cli, subprocess_env, tiny_config

from sessrec.extract.image import extract_images
from sessrec.features.store import ids_path
from sessrec.io import output_lock


@pytest.fixture
def one_thread():
    """In-process runs use one thread, like the subprocesses (float sums must match across them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fit_and_test(config: Path, run: Path, capsys, *extra) -> dict[str, float]:
    """Fit with `config` (whose run folder is `run`), then test its last checkpoint."""
    fit = run_cli(["fit", "--config", config, *extra], capsys)
    assert fit.code == 0, fit.err[-3000:]
    test = run_cli(["test", "--config", config, "--ckpt_path", run / "checkpoints" / "last.ckpt",
                    "--trainer.callbacks", "[]"], capsys)
    assert test.code == 0, test.err[-3000:]
    return parse_test_metrics(test.out)


def test_same_seed_same_test_metrics(small, tmp_path, capsys, one_thread) -> None:
    """Two fits with the same seed on the CPU: identical test metrics (dropout, sampling, init)."""
    runs = [tmp_path / "a", tmp_path / "b"]
    first, second = (
        _fit_and_test(tiny_config(run.with_suffix(".yaml"), small / "prepared", run), run, capsys,
                      "--trainer.max_epochs", "1")
        for run in runs
    )
    assert first == second
    assert 0.0 < first["test_recall@20"] < 1.0


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            tail = proc.stderr.read()[-3000:]
            raise AssertionError(f"exited ({proc.returncode}) before {path.name} appeared:\n{tail}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout:.0f} s")
        time.sleep(0.02)


def _kill_when(args: list, marker: Path, cwd: Path, message: str, settle: float = 0.0) -> None:
    """Run `python -m sessrec ARGS`, kill -9 it once `marker` exists (after `settle` s), wait for the death."""
    proc = subprocess.Popen([sys.executable, "-m", "sessrec", *map(str, args)], cwd=cwd, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, proc)
        time.sleep(settle)
        assert proc.poll() is None, message
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def test_kill_during_training_then_resume_is_exact(small, tmp_path, capsys, one_thread) -> None:
    data = small / "prepared"
    ref = tmp_path / "ref"
    reference = _fit_and_test(tiny_config(tmp_path / "ref.yaml", data, ref), ref, capsys)

    # the same run in a subprocess, slowed after its checkpoint at step 32 so that it is killed mid-epoch
    killed = tiny_config(tmp_path / "killed.yaml", data, tmp_path / "killed")
    killed.write_text(killed.read_text().replace(
        "  callbacks:\n",
        "  callbacks:\n    - {class_path: robust_helpers.Pause, init_args: {after: 33, seconds: 5}}\n",
    ))
    checkpoints = tmp_path / "killed" / "checkpoints"
    _kill_when(["fit", "--config", killed], checkpoints / "step=32.ckpt", tmp_path,
               "the run ended before it could be killed", settle=0.3)
    assert not (checkpoints / "step=48.ckpt").exists()  # killed in the first epoch (73 steps an epoch)
    state = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert state["global_step"] in (16, 32) and state["loops"]["fit_loop"]["state_dict"]["combined_loader"]

    # resume from the newest complete checkpoint, as a user would: same final metrics, bitwise
    config = tiny_config(tmp_path / "resumed.yaml", data, tmp_path / "resumed")
    resumed = _fit_and_test(config, tmp_path / "resumed", capsys, "--ckpt_path", checkpoints / "last.ckpt")
    assert resumed == reference


def _images(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg")
    return folder


def test_kill_during_extraction_then_rerun_gives_identical_output(tmp_path, capsys, one_thread) -> None:
    images = _images(tmp_path / "images", 40)
    common = ["extract", "image", images, "--chunk-size", "2", "--workers", "0", "--no-progress"]
    reference = run_cli([*common, "--out", tmp_path / "ref" / "img.npy"], capsys)
    assert reference.code == 0, reference.err

    out = tmp_path / "out" / "img.npy"
    parts = out.with_name("img.npy.parts")
    _kill_when([*common, "--out", out], parts / "progress.json", tmp_path, "extraction ended before it could be killed")
    assert not out.exists() and not ids_path(out).exists()  # nothing merged, nothing half-written
    with output_lock(out):  # the killed run's lock died with it: no "another sessrec run is writing here"
        pass
    assert parts.is_dir()  # (it may hold a `.progress.json.*.tmp` the kill cut short: never read)

    done = json.loads((parts / "progress.json").read_text())["done"]
    assert 1 <= len(done) < 20 and all((parts / d["file"]).is_file() for d in done.values())

    again = extract_images(images, out, chunk_size=2, num_workers=0, progress=False)  # the rerun
    assert again.merged and again.skipped_shards == len(done) and again.processed_shards == 20 - len(done)
    assert out.read_bytes() == (tmp_path / "ref" / "img.npy").read_bytes()
    assert ids_path(out).read_text() == ids_path(tmp_path / "ref" / "img.npy").read_text()
    assert not parts.exists() and not list(out.parent.rglob("*.tmp"))
