"""Stop a run whose training loss became NaN or infinite, without a host sync per step.

`DivergenceWatch.watch` notes a block's first non-finite sub-step loss on the device; `check` reads it
on the host (once per block on the CPU, every `CHECK_EVERY` blocks on accelerators, at each epoch end
and before a checkpoint is written) and raises `TrainingDiverged`. Under DDP every rank takes the
smallest bad step of all ranks, so every rank stops at the same point.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer
from torch import Tensor, nn

from sessrec.errors import ConfigError

CHECK_EVERY = 32  # blocks between the host-side checks on accelerators


class TrainingDiverged(ConfigError):
    """The training loss became NaN or infinite (the run fails: `sessrec: error: ...`, exit status 2)."""


class DivergenceWatch(nn.Module):
    """The first training step whose loss was not finite (-1: none) and that loss, kept on the device."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bad_step", torch.full((), -1, dtype=torch.long), persistent=False)
        self.register_buffer("bad_loss", torch.zeros(()), persistent=False)
        self.unchecked = 0  # blocks since the last host-side check

    def watch(self, losses: Tensor, last_step: int) -> bool:
        """Note the first non-finite of a block's sub-step losses (T,), whose last 1-based step is
        `last_step`; True when the caller should `check` now."""
        bad = ~losses.isfinite()  # (T,)
        first = bad.int().argmax()  # () the first bad sub-step of the block (0 when none)
        new = bad.any() & (self.bad_step < 0)  # ()
        step = last_step - losses.shape[0] + first + 1  # () its 1-based training step
        self.bad_step = torch.where(new, step, self.bad_step)
        self.bad_loss = torch.where(new, losses[first], self.bad_loss)
        self.unchecked += 1
        return losses.device.type == "cpu" or self.unchecked >= CHECK_EVERY

    def check(self, trainer: Trainer | None, describe: str) -> None:
        """Raise `TrainingDiverged` (naming the step, the loss and `describe`) when a loss was not finite;
        under DDP (`trainer.world_size` > 1) a min over the ranks makes every rank agree."""
        self.unchecked = 0
        step = self.bad_step
        if trainer is not None and trainer.world_size > 1:
            never = torch.iinfo(torch.long).max
            step = trainer.strategy.reduce(torch.where(step < 0, never, step), reduce_op="min")
            step = torch.where(step == never, -1, step)
        if int(step) < 0:
            return
        loss = float(self.bad_loss) if int(self.bad_step) == int(step) else "non-finite (on another rank)"
        raise TrainingDiverged(f"training loss became {loss} at step {int(step)} ({describe}): lower lr, or check "
                               "the inputs")
