"""configs/trainer/validated.yaml: validation each epoch, early stopping and the best epoch's checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sessrec.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_the_validated_stack_keeps_the_best_epoch_and_stops_early(tiny_prepared, tmp_path):
    run = tmp_path / "run"
    stack = ["--config", str(REPO / "configs/trainer/default.yaml"), "--config", str(REPO / "configs/data/synthetic.yaml"),
             "--config", str(REPO / "configs/trainer/validated.yaml"), "--config", str(REPO / "configs/model/prnn.yaml")]
    args = [*stack, "--data.data_dir", str(tiny_prepared), "--trainer.default_root_dir", str(run),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--model.init_args.lr", "1e-9",  # below float32 resolution: validation cannot improve
            "--model.init_args.n_sample", "32"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 0
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    assert best.is_file() and last.is_file()
    best_state = torch.load(best, weights_only=True)
    last_state = torch.load(last, weights_only=True)
    early = next(v for k, v in last_state["callbacks"].items() if k.startswith("EarlyStopping"))
    assert early["stopped_epoch"] == 3 and early["wait_count"] == 3  # epochs 1-3 did not beat epoch 0
    assert best_state["epoch"] == 0 and last_state["epoch"] == 4  # the best kept; max_epochs (30) not reached
    with pytest.raises(SystemExit) as exit_info:
        main(["test", *args, "--ckpt_path", str(best)])
    assert exit_info.value.code == 0
