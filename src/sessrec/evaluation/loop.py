"""The one evaluation loop every scorer goes through (recurrent models and baselines alike).

`block_scores` feeds the steps of a session-parallel block to a scorer and yields its scores; the
metrics (`evaluate_block`), prediction (`sessrec.evaluation.predict`) and the per-event analysis
(`sessrec.evaluation.analysis`) all step through blocks with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from sessrec.data.batching import Block
from sessrec.evaluation.metrics import RankingMetrics, target_ranks
from sessrec.evaluation.screening import FactoredScores

StepFn = Callable[[Tensor, Tensor], Tensor | FactoredScores]  # (inputs (B,), reset (B,)) -> (B, N) scores


def block_scores(step: StepFn, block: Block) -> Iterator[tuple[int, Tensor | FactoredScores]]:
    """(t, scores of step t) for every step of `block`, in order; `step` carries its own per-slot state
    (hidden state, session history) from one call to the next, also across blocks."""
    for t in range(block.inputs.shape[0]):
        yield t, step(block.inputs[t], block.reset[t])  # (B, N) or factored


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
    for t, scores in block_scores(step, block):
        ranks = target_ranks(scores, block.targets[t], tie_mode, candidates, max_rank)  # (B,)
        metrics.update(ranks if full else ranks[block.active[t]])
