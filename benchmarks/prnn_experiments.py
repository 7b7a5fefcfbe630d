"""p-RNN acceptance runs: fit each config through the CLI, then test it split by head / long-tail targets.

    OMP_NUM_THREADS=1 python benchmarks/prnn_experiments.py configs/gru4rec/synthetic.yaml configs/prnn/prnn.yaml \
        --seeds 42 1 --out prnn.json

Each argument is one config file (a stack of layers: flatten it first with `sessrec fit ... --print_config`).

Head = the most popular items that together cover `--head-share` (default 0.8) of the events of the
training split (train_split of the config); tail = every other item (with `--tail-threshold K` instead:
tail = items with fewer than K training events). Split by TARGET item. Metrics: conservative ties, ranked
against all items, as `python -m sessrec test`. With several `--seeds`, every config is fitted once per
seed (`seed_everything`; the same run folder is reused) and the table shows the mean (the JSON keeps
every run). `--set` passes CLI overrides to every fit and test, e.g. `--set --data.data_dir=/tmp/prepared`
or, for model selection, `--set --data.train_split=train --data.test_split=valid`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sessrec.data.batching import SessionParallelIterator
from sessrec.lightning_cli import SessrecCLI
from sessrec.evaluation.metrics import target_ranks

METRICS = ("mrr@20", "recall@20")


def fit(config: str, extra: list[str]) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "sessrec", "fit", "--config", config,
           "--trainer.enable_progress_bar", "false"]
    subprocess.run(cmd + extra, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def head_items(counts: np.ndarray, head_share: float, tail_threshold: int | None) -> np.ndarray:
    """(N,) bool: the head items, by coverage of the training events (or by a count threshold)."""
    if tail_threshold is not None:
        return counts >= tail_threshold
    order = np.argsort(-counts, kind="stable")  # most popular first
    covered = np.cumsum(counts[order]) / max(counts.sum(), 1)  # (N,)
    n_head = int(np.searchsorted(covered, head_share)) + 1  # the first items reaching the share
    head = np.zeros(len(counts), dtype=bool)
    head[order[:n_head]] = True
    return head


@torch.no_grad()
def evaluate(config: str, extra: list[str], head_share: float = 0.8, tail_threshold: int | None = None
             ) -> dict[str, float]:
    cli = SessrecCLI(args=["--config", config, *extra], run=False)
    model, dm = cli.model, cli.datamodule
    if not getattr(model.net, "is_bound", True):
        model.net.bind(dm.catalogue())
    ckpt = Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    model.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    model.eval()
    counts = np.asarray(dm.train_counts())  # (N,)
    head_np = head_items(counts, head_share, tail_threshold)  # (N,)
    head = torch.as_tensor(head_np)
    split = dm.split("test")
    ranks, targets = [], []
    for block in SessionParallelIterator(split.items, split.offsets, 512, 32):
        for t in range(block.inputs.shape[0]):
            scores = model.score_step(block.inputs[t], block.reset[t])  # (B, N)
            r = target_ranks(scores, block.targets[t], model.hparams.tie_mode)  # (B,)
            ranks.append(r[block.active[t]])
            targets.append(block.targets[t][block.active[t]])
    rank, target = torch.cat(ranks), torch.cat(targets)  # (E,), (E,)
    out: dict[str, float] = {"head_items": int(head_np.sum()),
                             "tail_items": int((~head_np & (counts > 0)).sum())}
    for name, mask in {"all": torch.ones_like(rank, dtype=torch.bool), "head": head[target],
                       "tail": ~head[target]}.items():
        r = rank[mask]
        out[f"{name}_events"] = int(mask.sum())
        out[f"{name}_recall@20"] = float((r <= 20).double().mean())
        out[f"{name}_mrr@20"] = float(torch.where(r <= 20, 1.0 / r.double(), 0.0).mean())
    return out


def mean_runs(runs: list[dict]) -> dict[str, float]:
    """The mean of every numeric field over runs (one run: itself)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}


def table(results: dict[str, dict]) -> str:
    """Markdown rows: config | MRR@20 | Recall@20 | head MRR / Recall | tail MRR / Recall | fit s (means)."""
    lines = ["| config | seeds | MRR@20 | Recall@20 | head MRR / Recall | tail MRR / Recall | fit (s) |",
             "|---|---|---|---|---|---|---|"]
    for config, entry in results.items():
        m = mean_runs(entry["runs"])
        per_seed = " / ".join(f"{r['all_mrr@20']:.4f}" for r in entry["runs"])
        lines.append(f"| {config} | {len(entry['runs'])} | {m['all_mrr@20']:.4f} ({per_seed}) | "
                     f"{m['all_recall@20']:.4f} | {m['head_mrr@20']:.4f} / {m['head_recall@20']:.4f} | "
                     f"{m['tail_mrr@20']:.4f} / {m['tail_recall@20']:.4f} | {m['fit_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="seed_everything of each fit")
    parser.add_argument("--head-share", type=float, default=0.8)
    parser.add_argument("--tail-threshold", type=int, default=None)
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--set", nargs="*", default=[],
                        help="extra CLI overrides, e.g. --trainer.max_epochs=5")
    parser.add_argument("--out", default="prnn.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results: dict[str, dict] = {}
    for config in args.configs:
        runs = []
        for seed in args.seeds:
            extra = [*args.set, f"--seed_everything={seed}"]
            seconds = 0.0 if args.skip_fit else fit(config, extra)
            runs.append({"seed": seed, "fit_s": round(seconds, 1),
                         **evaluate(config, extra, args.head_share, args.tail_threshold)})
            print(config, json.dumps(runs[-1]), flush=True)
        results[config] = {"runs": runs, "mean": mean_runs(runs)}
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
