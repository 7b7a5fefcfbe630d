"""Back-propagation through `bptt` consecutive session-parallel sub-steps (`SessionRecModule(bptt=k)`).

The reference trains with one-step truncated BPTT: forward, backward and optimiser step at every
sub-step, the hidden state detached after each (`bptt=1`, the default, bitwise the reference path).
With `bptt=k > 1` a block of T sub-steps is cut into windows of k consecutive sub-steps:

- inside a window the graph is kept (the hidden state is not detached); a slot's reset mask still
  multiplies its hidden state by 0 where a new session starts, so no gradient flows from a session into
  the one that held the slot before it;
- the window's loss is the MEAN of its sub-step losses (each already a sum over the active rows / B),
  i.e. the sum over the window's events / (k B), the per-event normalisation of a (k, B) mini-batch.
  RecBole's GRU4Rec likewise averages over the batch, but it re-runs every session prefix from the
  session start and scores only its last position (full BPTT, O(L^2) recurrent steps per session);
  here each event is a target once and its gradient reaches back at most k - 1 steps (never before its
  session's start). With the scale-invariant optimisers (adagrad_momentum, adam, adamw) mean and sum
  differ only through the optimisers' epsilon; the mean keeps `train_loss` comparable across k;
- then ONE backward and ONE optimiser step, and the hidden state is detached;
- windows never cross a block boundary (the hidden state is detached at each block's end): when
  `steps_per_block` is not a multiple of k, or in the epoch's last, shorter block, the block's last
  window is shorter (its loss is the mean over its own sub-steps);
- sampled negatives and dropout masks are drawn per sub-step, in the same order as with k = 1.

Counters: `global_substep` counts sub-steps (it grows by each window's length), Lightning's
`trainer.global_step` counts optimiser steps (windows). Checkpoints are written between training steps
(blocks), so never inside a window: resume stays exact. Callbacks' `on_before_substep_step` run once per
window, with the global index of the window's first sub-step; `TrainingSchedule(mode="interleaved")`
switches subnets per sub-step and refuses k > 1. The fused step (`sessrec.training.fused`) is k = 1 only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from sessrec.data.batching import Block

Step = Callable[[Tensor, Tensor, list[Tensor], Tensor | None], tuple[Tensor, list[Tensor]]]


def windows(steps: int, k: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of the windows of k sub-steps in a block of `steps` (the last may be shorter)."""
    for start in range(0, steps, k):
        yield start, min(start + k, steps)


def window_loss(
    step: Step, block: Block, keep: Tensor, start: int, stop: int, hidden: list[Tensor], full: bool,
    losses: Tensor,
) -> tuple[Tensor, list[Tensor]]:
    """Sub-steps start..stop-1 of `block` through `step(inputs, targets, hidden, active)`, keeping the graph.

    keep (T, B, 1): 0 where a slot starts a new session (its hidden row is zeroed before the sub-step);
    full: every row active (no `active` mask passed). Writes each sub-step's detached loss to losses (T,).
    Returns the window's loss (the mean over its sub-steps; the sub-step's own loss for one) and the
    hidden state after it, NOT detached.
    """
    window = []
    for t in range(start, stop):
        hidden = [h * keep[t] for h in hidden]  # (B, H_l) a new session's row is 0: no gradient crosses
        loss, hidden = step(block.inputs[t], block.targets[t], hidden, None if full else block.active[t])
        losses[t] = loss.detach()
        window.append(loss)
    return (window[0] if len(window) == 1 else torch.stack(window).mean()), hidden
