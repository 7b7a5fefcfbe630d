"""2-process CPU DDP fit of a ParallelRNN with the hand-written step and with autograd
(launch: torchrun --nproc_per_node 2 THIS --data PREPARED --out DIR).

For each step kind: fit 2 epochs under the alternating schedule (one subnet frozen per epoch), then each
rank saves its parameters and the name of the step that trained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from test_fused_prnn import _catalogue, _net  # noqa: E402

from sessrec.data.datamodule import SessionDataModule  # noqa: E402
from sessrec.training.module import SessionRecModule  # noqa: E402
from sessrec.training.schedules import TrainingSchedule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    for fused in (False, True):
        dm = SessionDataModule(args.data, batch_size=8, eval_batch_size=64, steps_per_block=4,
                               train_split="train_full", val_split="test")
        features = out / f"features-{os.environ['LOCAL_RANK']}-{fused}"  # (the same file per rank and kind)
        features.mkdir()
        net = _net(_catalogue(features, dm.n_items), "concat", "own", dropout_hidden=0.2)
        module = SessionRecModule(net, n_sample=16, lr=0.1, momentum=0.3, logq=1.0, fused_step=fused)
        schedule = TrainingSchedule(mode="alternating", order=["id", "image", "text"], epochs_per_phase=1)
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                            limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=out,
                            callbacks=[schedule])
        L.seed_everything(0)
        trainer.fit(module, dm)
        tag, rank = ("handwritten" if fused else "autograd"), trainer.global_rank
        torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, out / f"{tag}-rank{rank}.pt")
        (out / f"{tag}-rank{rank}.json").write_text(json.dumps({"step": type(module._fast).__name__}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
