"""2-process CPU DDP run of every TrainingSchedule mode (launch: torchrun --nproc_per_node 2 THIS ...).

Per mode: fit 2 epochs on data where the ranks hold unequal session counts, then each rank saves its
parameters, the frozen-check result and (mode "alternating") the 2-process test metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from fake_prnn import FakeParallelRNN  # noqa: E402

from sessrec.training.schedules import TrainingSchedule  # noqa: E402
from sessrec.data.datamodule import SessionDataModule  # noqa: E402
from sessrec.training.module import SessionRecModule  # noqa: E402


class FrozenCheck(L.Callback):
    """Compares each subnet's parameters at every epoch end with the epoch start."""

    def __init__(self) -> None:
        self.changed: list[dict[str, bool]] = []

    def _params(self, module):
        return {k: [p.detach().clone() for p in s.parameters()] for k, s in module.net.subnets.items()}

    def on_train_epoch_start(self, trainer, module) -> None:
        self.start = self._params(module)

    def on_train_epoch_end(self, trainer, module) -> None:
        end = self._params(module)
        self.changed.append({k: any(not torch.equal(a, b) for a, b in zip(self.start[k], end[k])) for k in end})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sparse", type=int, default=0)
    parser.add_argument("--momentum", type=float, default=0.5)
    parser.add_argument("--tag", default="", help="prefix of the output files")
    parser.add_argument("--modes", default="simultaneous,residual,alternating,interleaved")
    args = parser.parse_args()
    out = Path(args.out)
    for mode in args.modes.split(","):
        L.seed_everything(0)
        dm = SessionDataModule(args.data, batch_size=8, eval_batch_size=64, steps_per_block=4,
                               train_split="train_full", val_split="test", test_split="test")
        net = FakeParallelRNN(dm.n_items, hidden=8, sparse_grad=bool(args.sparse))
        module = SessionRecModule(net, n_sample=16, lr=0.05, momentum=args.momentum)
        check = FrozenCheck()
        schedule = TrainingSchedule(mode, order=["image", "id"])
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                            limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=out,
                            callbacks=[schedule, check])
        trainer.fit(module, dm)
        rank = trainer.global_rank
        torch.save({k: v.detach().clone() for k, v in module.net.state_dict().items()},
                   out / f"{args.tag}{mode}-rank{rank}.pt")
        result = {"changed": check.changed, "substeps": module.global_substep}
        if mode == "alternating" and not args.tag:
            trainer.save_checkpoint(out / "alternating.ckpt")  # collective: every rank calls it
            metrics = trainer.test(module, dm, verbose=False)[0]
            result["test"] = {k: float(v) for k, v in metrics.items()}
        (out / f"{args.tag}{mode}-rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
