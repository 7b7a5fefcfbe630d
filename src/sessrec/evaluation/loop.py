"""The one evaluation loop every scorer goes through (recurrent models and baselines alike)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sessrec.data.batching import Block
from sessrec.evaluation.metrics import RankingMetrics, target_ranks
from sessrec.evaluation.screening import FactoredScores

StepFn = Callable[[Tensor, Tensor], Tensor | FactoredScores]  # (inputs (B,), reset (B,)) -> (B, N) scores


@torch.no_grad()
def evaluate_block(
    step: StepFn,
    block: Block,
    metrics: RankingMetrics,
    tie_mode: str = "conservative",
    candidates: Tensor | None = None,
) -> None:
    """Score every step of a session-parallel block and add the targets' ranks to `metrics`.

    `step` carries its own per-slot state (hidden state, session history) between calls.
    Inactive rows (finished slots, DDP padding) are excluded from the metrics. Ranks above the largest
    cutoff need not be exact (they add nothing to Recall@k or MRR@k): see `target_ranks`.
    """
    steps, batch = block.inputs.shape
    full = block.n_events == steps * batch
    max_rank = max(metrics.cutoffs)
    for t in range(steps):
        scores = step(block.inputs[t], block.reset[t])  # (B, N) or factored
        ranks = target_ranks(scores, block.targets[t], tie_mode, candidates, max_rank)  # (B,)
        metrics.update(ranks if full else ranks[block.active[t]])
