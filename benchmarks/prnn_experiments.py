"""p-RNN acceptance runs: fit each config through the CLI, then test it split by head / long-tail targets.

    OMP_NUM_THREADS=1 python benchmarks/prnn_experiments.py configs/prnn/id-only.yaml configs/prnn/prnn.yaml \
        --tail-threshold 20 --out prnn.json

Tail = target items with fewer than `--tail-threshold` events in the training split (train_split of the
config). Metrics: conservative ties, ranked against all items, as `python -m sessrec test`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from sessrec.data.batching import SessionParallelIterator
from sessrec.lightning_cli import SessrecCLI
from sessrec.metrics import target_ranks


def fit(config: str, extra: list[str]) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "sessrec", "fit", "--config", config, "--trainer.enable_progress_bar", "false"]
    subprocess.run(cmd + extra, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(config: str, extra: list[str], threshold: int) -> dict[str, float]:
    cli = SessrecCLI(args=["--config", config, *extra], run=False)
    model, dm = cli.model, cli.datamodule
    if not getattr(model.net, "is_bound", True):
        model.net.bind(dm.catalogue())
    ckpt = Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    model.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    model.eval()
    counts = torch.as_tensor(dm.train_counts())  # (N,)
    split = dm.split("test")
    ranks, targets = [], []
    for block in SessionParallelIterator(split.items, split.offsets, 512, 32):
        for t in range(block.inputs.shape[0]):
            scores = model.score_step(block.inputs[t], block.reset[t])  # (B, N)
            r = target_ranks(scores, block.targets[t], model.hparams.tie_mode)  # (B,)
            ranks.append(r[block.active[t]])
            targets.append(block.targets[t][block.active[t]])
    rank, target = torch.cat(ranks), torch.cat(targets)  # (E,), (E,)
    out = {}
    for name, mask in {"all": torch.ones_like(rank, dtype=torch.bool), "head": counts[target] >= threshold,
                       "tail": counts[target] < threshold}.items():
        r = rank[mask]
        out[f"{name}_events"] = int(mask.sum())
        out[f"{name}_recall@20"] = float((r <= 20).double().mean())
        out[f"{name}_mrr@20"] = float(torch.where(r <= 20, 1.0 / r.double(), 0.0).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--tail-threshold", type=int, default=20)
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="extra CLI overrides, e.g. --trainer.max_epochs=5")
    parser.add_argument("--out", default="prnn.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results = {}
    for config in args.configs:
        seconds = 0.0 if args.skip_fit else fit(config, args.set)
        results[config] = {"fit_s": round(seconds, 1), **evaluate(config, args.set, args.tail_threshold)}
        print(config, json.dumps(results[config]), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
