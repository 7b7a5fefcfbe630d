"""GPU smoke benchmark (< 5 min): one epoch of ID-only GRU4Rec and of a 2-subnet p-RNN on generated data.

    python benchmarks/gpu_check.py [--sessions 200000]

Prints training events/s for each. Needs CUDA: exits with status 2 and a message otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def _fit(module, dm) -> float:
    import lightning as L

    trainer = L.Trainer(accelerator="gpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(module, dm)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    from sessrec.cli import main as cli
    from sessrec.data.datamodule import SessionDataModule
    from sessrec.encoders.item_id import ItemIdEncoder
    from sessrec.models.gru4rec import GRU4Rec
    from sessrec.models.prnn import ParallelRNN
    from sessrec.training.module import SessionRecModule

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for argv in (["generate", "--out", str(root / "raw"), "--n-items", str(args.items),
                      "--n-sessions", str(args.sessions)],
                     ["prepare", str(root / "raw" / "events.tsv"), "--out", str(root / "prepared")]):
            try:
                cli(argv)
            except SystemExit as exit_info:
                if exit_info.code:
                    return int(exit_info.code)
        dm = SessionDataModule(str(root / "prepared"), batch_size=64, train_split="train_full")
        events = int(dm.split("train").offsets.size and (dm.split("train").items.size - dm.split("train").offsets.size + 1))
        nets = {
            "gru4rec (ID only)": lambda: GRU4Rec(dm.n_items, [100]),
            "p-RNN (2 ID subnets, concat)": lambda: ParallelRNN(
                dm.n_items, {"id": ItemIdEncoder(100), "id2": ItemIdEncoder(100)}, layers=[100]),
        }
        print(f"{torch.cuda.get_device_name()}: {events:,} training events, {dm.n_items:,} items")
        for name, make in nets.items():
            seconds = _fit(SessionRecModule(make(), n_sample=2048, lr=0.05), dm)
            print(f"{name:<32} {seconds:7.1f} s  {events / seconds:12,.0f} events/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
