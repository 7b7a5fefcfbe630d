"""Helpers of the robustness tests: the CLI in-process or as a subprocess, a tiny config, metrics.

Also importable by the subprocesses these tests start (their PYTHONPATH holds this folder), which is
how `Pause` reaches a `fit` that a test kills.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lightning.pytorch.callbacks import Callback

from sessrec.cli import main

if TYPE_CHECKING:
    import pytest

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> Result:
    """`python -m sessrec <args>` in this process (fast: Lightning is imported once per session)."""
    capsys.readouterr()
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        code = 0 if stop.code is None else stop.code
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_one_line(result: Result, *says: str) -> None:
    """The CLI failed with exit status 2 and one `sessrec: error:` line holding every text in `says`."""
    assert result.code == 2, result.err[-2000:]
    assert result.last_line.startswith("sessrec: error:"), result.err[-2000:]
    assert "Traceback" not in result.err
    for text in says:
        assert text in result.last_line, result.last_line


def run_subprocess(args: list[str], cwd: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """`python -m sessrec <args>` in a fresh interpreter (one thread, W&B offline, tests on the path)."""
    return subprocess.run([sys.executable, "-m", "sessrec", *map(str, args)], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout, **popen)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", SESSREC_LOG_LEVEL="WARNING")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


TINY_CONFIG = """\
seed_everything: 42
trainer:
  max_epochs: 2
  accelerator: cpu
  devices: 1
  limit_val_batches: 0
  logger: false
  enable_progress_bar: false
  default_root_dir: {run}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        dirpath: {run}/checkpoints
        filename: "{{step}}"
        every_n_train_steps: {every}
        save_top_k: -1
        save_last: true
        enable_version_counter: false
model:
  class_path: sessrec.training.module.SessionRecModule
  init_args:
    net:
      class_path: sessrec.models.gru4rec.GRU4Rec
      init_args:
        layers: [16]
        dropout_hidden: 0.2
    n_sample: 32
    sample_cache_size: 1000
    lr: 0.1
data:
  data_dir: {data}
  batch_size: 16
  eval_batch_size: 64
  steps_per_block: 4
  train_split: train_full
"""


def tiny_config(path: Path, data: Path, run: Path, every: int = 16) -> Path:
    """A GRU4Rec config with dropout, sampling and a checkpoint every `every` optimiser steps."""
    path.write_text(TINY_CONFIG.format(data=data, run=run, every=every))
    return path


def parse_test_metrics(output: str) -> dict[str, float]:
    """The `test_*` metrics of Lightning's results table in `output`."""
    metrics = {}
    for line in output.splitlines():
        cells = line.replace("│", " ").split()
        if len(cells) == 2 and cells[0].startswith("test_"):
            metrics[cells[0]] = float(cells[1])
    assert metrics, f"no test metrics in:\n{output[-2000:]}"
    return metrics


class Pause(Callback):
    """Sleeps `seconds` after each training batch from optimiser step `after` on (a window to kill in)."""

    def __init__(self, after: int = 0, seconds: float = 0.5) -> None:
        self.after, self.seconds = after, seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.after:
            time.sleep(self.seconds)
