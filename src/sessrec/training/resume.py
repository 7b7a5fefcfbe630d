"""What an exact mid-epoch resume needs besides the weights, the optimiser and the loader's position.

A checkpoint also holds the sampler's stream, the sub-step counter, every rank's training hidden state
(W, B, H_l) per layer and the global RNG state dropout draws from (rank 0's; the ranks agree). The
data loader's position is the data module's (`SessionDataModule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sessrec.training.checkpoints import rng_state, set_rng_state
from sessrec.training.sampler import PopularitySampler


@dataclass
class ResumeState:
    """Read from a checkpoint (`read`), consumed once by the run that resumes from it."""

    substep: int = 0
    sampler: dict[str, Any] | None = None
    hidden: list[Tensor] | None = None  # (W, B, H_l) per layer
    rng: dict[str, Tensor] | None = None

    @classmethod
    def read(cls, checkpoint: dict[str, Any]) -> ResumeState:
        return cls(checkpoint.get("sessrec_substep", 0), checkpoint.get("sessrec_sampler"),
                   checkpoint.get("sessrec_hidden"), checkpoint.get("sessrec_rng"))

    def restore_sampler(self, sampler: PopularitySampler | None, rank: int) -> None:
        """Saved by rank 0: every rank continues the stream of its own seed."""
        if sampler is None or self.sampler is None:
            return
        state = dict(self.sampler)
        state["seed"] = int(state["seed"]) + rank
        sampler.load_state_dict(state)

    def take_hidden(self, world_size: int, rank: int, device: torch.device) -> list[Tensor] | None:
        """This rank's saved hidden state (B, H_l) per layer, once; None when the world size changed."""
        saved, self.hidden = self.hidden, None
        if saved is None or saved[0].shape[0] != world_size:
            return None
        return [h[rank].to(device) for h in saved]

    def take_rng(self, device: torch.device) -> None:
        """Restore the saved global RNG state, once (nothing draws from it before the first batch)."""
        rng, self.rng = self.rng, None
        if rng is not None:
            set_rng_state(rng, device)


def write(checkpoint: dict[str, Any], module: Any, hidden: list[Tensor] | None) -> None:
    """Add a `SessionRecModule`'s resume state to a Lightning checkpoint: its sub-step counter and sampler,
    every rank's training hidden state `hidden` ((B, H_l) per layer on this rank; gathered: every rank
    calls this) and the RNG state."""
    if module.sampler is not None:
        checkpoint["sessrec_sampler"] = module.sampler.state_dict()
    checkpoint["sessrec_substep"] = module.global_substep
    if hidden is not None:
        distributed = module.trainer.world_size > 1
        checkpoint["sessrec_hidden"] = [(module.all_gather(h) if distributed else h[None]).cpu()
                                        for h in hidden]  # (W, B, H_l) per layer
    checkpoint["sessrec_rng"] = rng_state(module.device)
