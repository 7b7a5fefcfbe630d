"""Tiny GRU4Rec and p-RNN (id + image + text + properties subnets) trained once on the `small` fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sessrec.cli import main

ENCODERS = {
    "id": {"class_path": "ItemIdEncoder", "init_args": {"dim": 8}},
    "image": {"class_path": "DenseEncoder", "init_args": {"path": "../raw/image.npy", "projection": 8}},
    "text": {"class_path": "SparseTextEncoder", "init_args": {"path": "../raw/text.npz", "dim": 8}},
    "properties": {"class_path": "PropertyEncoder",
                   "init_args": {"path": "../raw/items.parquet", "numeric": ["price"], "categorical": ["brand"]}},
}
NETS = {
    "gru4rec": {"class_path": "sessrec.models.gru4rec.GRU4Rec", "init_args": {"layers": [16]}},
    "prnn": {"class_path": "sessrec.models.prnn.ParallelRNN", "init_args": {"encoders": ENCODERS, "layers": [8]}},
}


def _config(net: dict, data_dir: Path, run_dir: Path) -> dict:
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(run_dir), "save_last": True, "save_top_k": 0,
                                "enable_version_counter": False}}
    trainer = {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "limit_val_batches": 0, "logger": False,
               "enable_progress_bar": False, "default_root_dir": str(run_dir), "callbacks": [checkpoint]}
    model = {"class_path": "sessrec.training.module.SessionRecModule",
             "init_args": {"net": net, "n_sample": 16, "sample_cache_size": 1000}}
    data = {"data_dir": str(data_dir), "batch_size": 16, "train_split": "train_full", "test_split": "test"}
    return {"seed_everything": 1, "trainer": trainer, "model": model, "data": data}


@pytest.fixture(scope="session")
def trained(small, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (config, checkpoint) of a 1-epoch fit of each net on `small`."""
    runs = {}
    for name, net in NETS.items():
        run_dir = tmp_path_factory.mktemp(f"run-{name}")
        config = run_dir / "train.yaml"
        config.write_text(yaml.safe_dump(_config(net, small / "prepared", run_dir)))
        with pytest.raises(SystemExit) as stop:
            main(["fit", "--config", str(config)])
        assert stop.value.code in (0, None)
        runs[name] = (config, run_dir / "last.ckpt")
    return runs


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory) -> dict[str, Path]:
    """name -> export folder written by `sessrec export`."""
    root = tmp_path_factory.mktemp("exports")
    for name, (config, ckpt) in trained.items():
        with pytest.raises(SystemExit) as stop:
            main(["export", "--ckpt_path", str(ckpt), "--config", str(config), "--out", str(root / name)])
        assert stop.value.code == 0
    return {name: root / name for name in trained}
