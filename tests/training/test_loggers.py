"""W&B runs (offline): each run's config.yaml in its own folder and in the W&B run files; test tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sessrec.cli import main


def _config(path: Path, data_dir: Path, save_dir: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                    "logger": {"class_path": "sessrec.training.loggers.WandbLogger",
                               "init_args": {"project": "p", "save_dir": str(save_dir)}}},
        "model": {"class_path": "sessrec.training.module.SessionRecModule",
                  "init_args": {"net": {"class_path": "sessrec.models.gru4rec.GRU4Rec",
                                        "init_args": {"layers": [8]}}, "n_sample": 16}},
        "data": {"data_dir": str(data_dir), "batch_size": 16},
    }))
    return path


def _run(args: list[str]) -> None:
    """One command, as its own process would run it (the W&B run ends with the command)."""
    import wandb

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    wandb.finish()


def test_each_wandb_run_keeps_its_config_and_test_logs_tables(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    save_dir = tmp_path / "runs"
    config = _config(tmp_path / "c.yaml", tiny_prepared, save_dir)
    for _ in range(2):
        _run(["fit", "--config", str(config)])
    folders = sorted(p.parent for p in save_dir.glob("p/*/config.yaml"))
    assert len(folders) == 2 and not (save_dir / "config.yaml").exists()  # one per run, none shared
    assert all((f / "checkpoints").is_dir() for f in folders)  # the run folder is where its checkpoints are
    assert len(list(save_dir.glob("wandb/offline-run-*/files/config.yaml"))) == 2

    ckpt = next((folders[0] / "checkpoints").glob("*.ckpt"))
    _run(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    (results,) = save_dir.glob("wandb/offline-run-*/files/media/table/test_results_*.table.json")
    table = json.loads(results.read_text())
    assert table["columns"] == ["metric", "value"]
    assert "test_recall@20" in {row[0] for row in table["data"]}
    (examples,) = save_dir.glob("wandb/offline-run-*/files/media/table/examples_*.table.json")
    rows = json.loads(examples.read_text())["data"]
    assert len(rows) == 10 and all(len(row[3].split()) == 10 and 0 <= row[4] <= 10 for row in rows)
    assert len(list(save_dir.glob("p/*/config-test.yaml"))) == 1


def test_log_table_once_logs_again_only_when_the_table_changes(tmp_path, monkeypatch):
    from sessrec.training.loggers import WandbLogger, log_table_once

    monkeypatch.setenv("WANDB_MODE", "offline")
    args = {"project": "p", "group": "g", "name": "g-t", "job_type": "t", "out": tmp_path, "marker": ".m",
            "key": "rows", "columns": ["a", "b"], "summary": {"best": 1.5}}
    assert log_table_once(rows=[[1, "x"]], **args)
    assert not log_table_once(rows=[[1, "x"]], **args)  # same content: nothing new
    assert log_table_once(rows=[[2, "y"]], **args)
    runs = sorted(tmp_path.glob("wandb/offline-run-*"))
    assert len(runs) == 2
    assert len(list(tmp_path.glob("wandb/offline-run-*/files/media/table/rows_*.table.json"))) == 2
    for run in runs:
        (run_log,) = run.glob("run-*.wandb")
        assert b"best" in run_log.read_bytes()  # the summary
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not log_table_once(rows=[[3, "z"]], **args)
    logger = WandbLogger(project="p", save_dir=str(tmp_path / "l"))
    assert not logger.started
    _ = logger.experiment  # starts the run
    assert logger.started
    logger.finish()
    assert not logger.started
