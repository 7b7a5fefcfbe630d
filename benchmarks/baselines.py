"""Baseline figures (issue 2): POP, session-POP and item-kNN on prepared data directories.

Each baseline is built from its config (`configs/baselines/<name>.yaml`: the net's class_path and
init_args, the data module's train/test splits) and evaluated with `lightning.Trainer.test` on
`sessrec.baselines.module.BaselineModule` + `sessrec.data.datamodule.SessionDataModule`, which is what
`python -m sessrec test --config configs/baselines/<name>.yaml --data.data_dir <dir>` runs, without
paying the Lightning import once per baseline. `--cli` runs that exact command instead (one
subprocess per baseline) and reads the metrics from a CSV logger.

Usage (from the repository root):

    python benchmarks/baselines.py /tmp/bench/syn/prepared [more dirs ...] [--label NAME ...]
        [--cutoff 20] [--tie-mode conservative] [--cli] [--out results.json]

Prints one Markdown table per data directory: Recall@k and MRR@k (ties as --tie-mode, all items),
plus the number of evaluated (input, target) pairs and the test time.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("pop", "spop", "iknn")
NAMES = {"pop": "POP", "spop": "session-POP", "iknn": "item-kNN"}


def _load_config(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "configs" / "baselines" / f"{name}.yaml").read_text())


def _build(spec: dict[str, Any]) -> Any:
    module, _, cls = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), cls)(**spec.get("init_args", {}))


def _test_events(data_dir: str, split: str) -> int:
    """(input, target) pairs of a split: events minus one per session of >= 2 events."""
    from sessrec.data.prepared import PreparedData

    s = PreparedData.load(data_dir).split(split)
    lengths = s.offsets[1:] - s.offsets[:-1]
    return int((lengths[lengths >= 2] - 1).sum())


def run_inprocess(name: str, data_dir: str, cutoffs: list[int], tie_mode: str) -> dict[str, float]:
    import lightning as L

    from sessrec.baselines.module import BaselineModule
    from sessrec.data.datamodule import SessionDataModule

    cfg = _load_config(name)
    model_cfg = cfg["model"]["init_args"]
    net = _build(model_cfg["net"])
    module = BaselineModule(net, cutoffs=cutoffs, tie_mode=tie_mode)
    data_cfg = {k: v for k, v in cfg.get("data", {}).items() if k != "data_dir"}
    dm = SessionDataModule(data_dir=data_dir, **data_cfg)
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        accelerator="cpu", devices=1,
    )
    t0 = time.perf_counter()
    (res,) = trainer.test(module, datamodule=dm, verbose=False)
    return {**{k: float(v) for k, v in res.items()}, "seconds": time.perf_counter() - t0}


def run_cli(name: str, data_dir: str, cutoffs: list[int], tie_mode: str) -> dict[str, float]:
    """`python -m sessrec test --config configs/baselines/<name>.yaml --data.data_dir <dir>` (+ a CSV logger)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "sessrec", "test", "--config", f"configs/baselines/{name}.yaml",
            "--data.data_dir", data_dir, "--model.init_args.tie_mode", tie_mode,
            "--model.init_args.cutoffs", json.dumps(cutoffs),
            "--trainer.default_root_dir", tmp, "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", tmp,
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        (metrics,) = Path(tmp).rglob("metrics.csv")
        rows = list(csv.DictReader(metrics.open()))
        out = {k: float(v) for row in rows for k, v in row.items() if k.startswith("test_") and v != ""}
    return {**out, "seconds": seconds}


def table(label: str, data_dir: str, results: dict[str, dict[str, float]], k: int, n_events: int) -> str:
    lines = [
        f"**{label}** (`{data_dir}`, {n_events:,} test (input, target) pairs)",
        "",
        f"| baseline | Recall@{k} | MRR@{k} | test time (s) |",
        "|---|---|---|---|",
    ]
    for name, res in results.items():
        lines.append(
            f"| {NAMES[name]} | {res[f'test_recall@{k}']:.4f} | {res[f'test_mrr@{k}']:.4f} | {res['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="+", help="prepared data directories")
    parser.add_argument("--label", action="append", default=[], help="a label per data dir (in order)")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated subset of pop,spop,iknn")
    parser.add_argument("--cutoff", type=int, default=20)
    parser.add_argument("--tie-mode", default="conservative", choices=["standard", "conservative", "median"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cli", action="store_true", help="run `python -m sessrec test` per baseline")
    parser.add_argument("--out", help="write all results as JSON")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import logging
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "GPU available", tips: keep the tables readable
    from sessrec.runtime import tune_malloc

    tune_malloc()  # as the CLI does
    runner = run_cli if args.cli else run_inprocess
    cutoffs = sorted({1, 5, 10, 20, args.cutoff})
    everything = {}
    for i, data_dir in enumerate(args.data_dirs):
        label = args.label[i] if i < len(args.label) else data_dir
        results = {b: runner(b, data_dir, cutoffs, args.tie_mode) for b in args.baselines.split(",")}
        n_events = _test_events(data_dir, _load_config("pop").get("data", {}).get("test_split", "test"))
        everything[label] = {"data_dir": data_dir, "test_pairs": n_events, "results": results}
        print(table(label, data_dir, results, args.cutoff, n_events), flush=True)
        print()
    if args.out:
        Path(args.out).write_text(json.dumps(everything, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
