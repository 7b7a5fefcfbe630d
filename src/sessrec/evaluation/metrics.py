"""Next-item ranking metrics: target ranks with tie modes, and Recall@k / MRR@k as DDP-safe sums.

Ranks are against all N items, or against a candidate set (e.g. the N most popular items, as in the
p-RNN video experiment); the target itself is never one of the "others" it is compared with:

* ``standard``:     #(others > target) + 1
* ``conservative``: #(others >= target) + 1   (the GRU4Rec papers' choice: ties count against you)
* ``median``:       the average of the two

Non-finite scores never help the target: a target whose score is NaN or +-inf ranks last (number of
others + 1, in every tie mode: an all-+inf row is not "all tied at the top"); other items' scores compare
as IEEE numbers (+inf ranks above a finite target, -inf below) and a NaN other never ranks above the
target. So a model that only produces NaN or inf scores gets Recall@k = MRR@k = 0 for every k below the
number of items. `RankingMetrics` counts a NaN or inf rank as a miss. Candidates are a set (duplicates
count once); a target outside the candidate set is still ranked by its score against the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Literal, get_args

import torch
from torchmetrics import Metric

from sessrec import kernels
from sessrec.checks import check_choice, check_number
from sessrec.errors import ConfigError
from sessrec.evaluation.screening import FactoredScores

TieMode = Literal["standard", "conservative", "median"]  # how tied scores rank (see target_ranks)
TIE_MODES: tuple[str, ...] = get_args(TieMode)
_CHUNK_ELEMENTS = 1 << 26  # bool elements of one comparison chunk (64 MiB) on accelerators
_CPU_CHUNK_ELEMENTS = 1 << 18  # on CPU: cache-sized chunks (256 KiB), 4x faster than 64 MiB ones


def _count(
    scores: torch.Tensor, target: torch.Tensor, strict: bool, mask: torch.Tensor | None
) -> torch.Tensor:
    """Per row, how many (masked) columns score above (``strict``) or at least ``target``: (B,) int64."""
    fused = kernels.count_at_least(scores, target, strict, mask)  # one pass on CPU, no temporary
    if fused is not None:
        return fused
    n_rows, n_cols = scores.shape
    elements = _CPU_CHUNK_ELEMENTS if scores.device.type == "cpu" else _CHUNK_ELEMENTS
    chunk = max(1, min(elements, _CHUNK_ELEMENTS) // max(1, n_rows))
    total = torch.zeros(n_rows, dtype=torch.int64, device=scores.device)  # (B,)
    for lo in range(0, n_cols, chunk):
        part = scores[:, lo : lo + chunk]  # (B, c) view
        cmp = part > target if strict else part >= target  # (B, c) bool, the only (B, c) temporary
        if mask is not None:
            cmp &= mask[lo : lo + chunk]
        total += cmp.sum(1, dtype=torch.int32)  # exact: a chunk holds < 2**31 columns
    return total


def check_eval_options(cutoffs: Sequence[int], tie_mode: str, eval_top_n: int | None) -> None:
    """ConfigError naming the evaluation option (of `SessionRecModule`, `BaselineModule`) that is invalid."""
    ints = isinstance(cutoffs, Sequence) and not isinstance(cutoffs, str) and all(
        isinstance(k, Integral) and not isinstance(k, bool) for k in cutoffs)
    if not ints or not cutoffs or min(cutoffs) < 1 or len(set(cutoffs)) != len(cutoffs):
        raise ConfigError(f"cutoffs must be a non-empty list of distinct positive integers, got {cutoffs!r}")
    check_choice("tie_mode", tie_mode, TIE_MODES)
    if eval_top_n is not None:
        check_number("eval_top_n", eval_top_n, low=1, integer=True,
                     what="an integer >= 1, or null for all items")
        if max(cutoffs) >= eval_top_n:  # every candidate ranks within such a cut-off
            raise ConfigError(f"cutoffs: {max(cutoffs)} is not below eval_top_n {eval_top_n}: from there on, "
                              "Recall@k only counts the targets among the candidates; use smaller cut-offs")


def top_n_items(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Ids (n,) of the n most popular items (ties by id): the p-RNN paper's candidate set."""
    return torch.argsort(torch.as_tensor(counts), descending=True, stable=True)[:n]


def target_ranks(
    scores: torch.Tensor | FactoredScores,
    targets: torch.Tensor,
    mode: str = "conservative",
    candidates: torch.Tensor | None = None,
    max_rank: int | None = None,
) -> torch.Tensor:
    """Rank (B,) float32 of each row's target among all items (or ``candidates`` (C,) item ids).

    ``scores`` (B, N), or `FactoredScores` (ranked by `sessrec.evaluation.screening` without the (B, N) matrix,
    from exact float64 scores); ``targets`` (B,) item ids. Exact up to 2**24 candidates. With
    ``max_rank``, factored scores may give a rank above max_rank only as "some rank > max_rank" (all
    Recall@k / MRR@k with k <= max_rank need). See the module docstring.
    """
    check_choice("rank mode", mode, TIE_MODES)
    if isinstance(scores, FactoredScores):
        ranks = scores.table.ranks(scores.query, targets, mode, candidates, max_rank)  # (B,) or None
        if ranks is not None:
            return ranks.to(targets.device)
        scores = scores.dense()  # (B, N): not screenable (device, non-finite values, ...)
    if scores.ndim != 2 or targets.shape != scores.shape[:1]:
        shapes = f"{tuple(scores.shape)} and {tuple(targets.shape)}"
        raise ValueError(f"expected scores (B, N) and targets (B,), got {shapes}")
    targets = targets.long()
    target = scores.gather(1, targets[:, None])  # (B, 1)
    if candidates is None:
        mask, in_set = None, torch.ones_like(targets)  # (B,) the target is always among the items
        n_others = torch.full_like(targets, scores.shape[1] - 1)  # (B,)
    else:
        mask = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)  # (N,)
        mask[candidates.long()] = True
        in_set = mask[targets].long()  # (B,)
        n_others = mask.sum() - in_set  # (B,)
    if mode == "standard":
        above = _count(scores, target, True, mask)  # (B,)
    else:
        at_least = _count(scores, target, False, mask) - in_set  # (B,) the target ties with itself
        above = at_least if mode == "conservative" else (_count(scores, target, True, mask) + at_least) / 2
    ranks = above.float() + 1  # (B,)
    return torch.where(target[:, 0].isfinite(), ranks, n_others.float() + 1)  # (B,) non-finite: last


class RankingMetrics(Metric):
    """Recall@k and MRR@k averaged over prediction events, from target ranks; sum states (DDP-safe).

    ``compute()`` returns ``{prefix}recall@k`` and ``{prefix}mrr@k`` per cutoff (0 before any update).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    hits: torch.Tensor
    rr: torch.Tensor
    count: torch.Tensor

    def __init__(self, cutoffs: Sequence[int] = (1, 5, 10, 20), prefix: str = "") -> None:
        super().__init__()
        cutoffs = tuple(int(k) for k in cutoffs)
        if not cutoffs or min(cutoffs) < 1 or len(set(cutoffs)) != len(cutoffs):
            raise ConfigError(f"cutoffs must be distinct positive integers, got {cutoffs}")
        self.cutoffs, self.prefix = cutoffs, prefix
        k = len(cutoffs)
        self.register_buffer("_k", torch.tensor(cutoffs, dtype=torch.float64), persistent=False)  # (K,)
        self.add_state("hits", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rr", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: torch.Tensor) -> None:
        """Add the ranks (M,) of M prediction events."""
        ranks = ranks.detach().reshape(-1).to(torch.float64)  # (M,)
        hit = ranks[:, None] <= self._k.to(ranks.device)  # (M, K) False for a NaN or inf rank
        self.hits += hit.sum(0)
        self.rr += torch.where(hit, 1 / ranks[:, None], 0.0).sum(0)  # (K,)
        self.count += ranks.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp_min(1)
        out = {}
        for i, k in enumerate(self.cutoffs):
            out[f"{self.prefix}recall@{k}"] = self.hits[i] / n
            out[f"{self.prefix}mrr@{k}"] = self.rr[i] / n
        return out
