"""Issue 6 acceptance: features made by `extract` train a p-RNN through a config, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "sessrec", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_extracted_text_and_properties_train_prnn(tiny_prepared, tmp_path, repo_root):
    raw = tiny_prepared.parent / "raw"
    feats = tmp_path / "features"
    text = _run(["extract", "text", str(raw / "items.parquet"), "--out", str(feats / "text.npz"),
                 "--id-col", "item_id", "--text-cols", "text", "--min-df", "1"], repo_root)
    assert text.returncode == 0, text.stderr[-2000:]
    props = _run(["extract", "properties", str(raw / "items.parquet"), "--out", str(feats / "props.parquet"),
                  "--id-col", "item_id", "--categorical", "category", "brand", "--price-col", "price"], repo_root)
    assert props.returncode == 0, props.stderr[-2000:]
    config = yaml.safe_load((repo_root / "configs" / "prnn" / "prnn.yaml").read_text())
    net = config["model"]["init_args"]["net"]["init_args"]
    net["encoders"] = {
        "id": {"class_path": "ItemIdEncoder", "init_args": {"dim": 16}},
        "text": {"class_path": "SparseTextEncoder", "init_args": {"path": str(feats / "text.npz"), "dim": 16}},
        "props": {"class_path": "PropertyEncoder",
                  "init_args": {"path": str(feats / "props.parquet"), "categorical": ["category", "brand"]}},
    }
    net["layers"] = [16]
    config["trainer"].update(max_epochs=1, default_root_dir=str(tmp_path / "run"), enable_progress_bar=False)
    config["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    config["data"]["data_dir"] = str(tiny_prepared)
    cfg = tmp_path / "prnn.yaml"
    cfg.write_text(yaml.safe_dump(config))
    fit = _run(["fit", "--config", str(cfg)], repo_root)
    assert fit.returncode == 0, fit.stderr[-3000:]
    test = _run(["test", "--config", str(cfg), "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")], repo_root)
    assert test.returncode == 0, test.stderr[-3000:]
    recall = next(float(line.replace("│", " ").split()[-1]) for line in test.stdout.splitlines()
                  if "test_recall@20" in line)
    assert 0.05 < recall <= 1.0
