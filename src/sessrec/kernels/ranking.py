"""The evaluation's rank counts without a (B, N) temporary (numba, `sessrec.kernels.ranking_jit`).

* `count_at_least`: per row, how many scores are >= (or >) the row's target score: the rank count of
  `sessrec.evaluation.metrics.target_ranks`, in one pass. Reference: the chunked torch count `_count` of
  `sessrec.evaluation.metrics` (its fallback), which tests/kernels/test_kernels.py compares against.
* `screen_queries`, `ScreenCount`: the int8-screened exact ranking of `sessrec.evaluation.screening`
  (quantise the queries; count the items certainly above each target, one column block of the int8
  product at a time, and settle the undecided ones in float64). Reference: `target_ranks` of the dense
  float32 score matrix (`ScreenedTable.scores`), which tests/evaluation/test_screening.py compares
  against.

Each returns its "does not apply" value (None or False) when numba is off or the tensors are not of
the kinds listed; the caller then runs the torch code.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from sessrec.kernels.loader import as_numpy, fits, load

__all__ = ["ScreenCount", "count_at_least", "screen_queries"]


def count_at_least(scores: Tensor, target: Tensor, strict: bool, mask: Tensor | None) -> Tensor | None:
    """Per row, how many (masked) columns of scores (B, N) are >= target (B, 1) (> when strict): (B,) int64.

    mask (N,) bool or None. None when the kernel does not apply. NaN scores never count (IEEE
    comparisons), as in torch.
    """
    jit = load("ranking_jit")
    if jit is None or not fits(scores) or target.dtype != torch.float32 or not target.is_cpu:
        return None
    out = np.zeros(scores.shape[0], np.int64)  # (B,)
    t = np.ascontiguousarray(as_numpy(target).reshape(-1))  # (B,)
    if mask is None:
        jit.count(as_numpy(scores), t, strict, out)
    else:
        jit.count_masked(as_numpy(scores), t, strict, mask.numpy().view(np.uint8), out)
    return torch.from_numpy(out)


def screen_queries(
    q: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, q8: Tensor, info: Tensor
) -> bool:
    """Quantise R queries to int8 and score their targets exactly; False (nothing done) when not applicable.

    q (R, D) float32 queries; weight (N, D), bias (N,) float32 the items; targets (R,) int64 in [0, N)
    (not checked). Out: q8 (R, D) int8 = round(q / sq) clipped to +-127; info (R, 4) float64 per query:
    sq = max |q| / 127 (rounded to float32), ||q||_2, ||q - sq q8||_2 and the target's score, summed in
    float64 in a fixed order (the order `ScreenCount.settle` scores the other items in).
    """
    jit = load("ranking_jit")
    if jit is None or not fits(q, weight, bias) or targets.dtype != torch.int64 or not targets.is_cpu:
        return False
    if q8.dtype != torch.int8 or info.dtype != torch.float64:
        return False
    if not all(t.is_cpu and t.is_contiguous() for t in (q8, info)):
        return False
    jit.screen_queries(as_numpy(q), as_numpy(weight), as_numpy(bias), targets.numpy(), q8.numpy(),
                       info.numpy())
    return True


class ScreenCount:
    """The screened count of one chunk of R queries against N items: `block` for each column block of
    their int8 product, then `settle`. Made by `start`, which converts the per-query and per-item arrays
    once; each `block` converts only its product.

    Item j is certainly above query b's target when its approximate score a = acc sq_b st_j + bias_j
    exceeds ts_b by more than the bound ea_b eu_j + ec_b ev_j + slack_b, certainly below when a + bound
    < ts_b; `settle` scores the undecided items exactly (all items when a query's list overflowed).
    """

    def __init__(self, jit: ModuleType, q: np.ndarray, weight: np.ndarray, rows: tuple, columns: tuple,
                 und: np.ndarray, und_up: np.ndarray, flags: np.ndarray) -> None:
        self.jit, self.q, self.weight = jit, q, weight
        self.rows = rows  # ts, sq, ea, ec, slack, targets: (R,) each
        self.columns = columns  # st, eu, ev, bias, mask: (N,) each; cap
        self.above, self.und_n = np.zeros(q.shape[0], np.int64), np.zeros(q.shape[0], np.int64)  # (R,)
        self.und, self.und_up, self.flags = und, und_up, flags

    @classmethod
    def start(
        cls, *, q: Tensor, targets: Tensor, ts: Tensor, sq: Tensor, ea: Tensor, ec: Tensor, slack: Tensor,
        weight: Tensor, bias: Tensor, st: Tensor, eu: Tensor, ev: Tensor, mask: Tensor, cap: int,
        und: Tensor, und_up: Tensor, flags: Tensor,
    ) -> ScreenCount | None:
        """The count for these queries and items, or None when the kernels do not apply.

        Queries: q (R, D) float32 and targets (R,) int64 (as given to `screen_queries`); ts (R,) float64
        their targets' exact scores (info[:, 3]: a strided view is fine); sq, ea, ec, slack (R,) float32:
        each query's int8 scale, its bound's factors ||q|| and ||q - sq q8|| (rounded up) and an allowance
        for float32 rounding. Items: weight (N, D), bias (N,) float32; st, eu, ev (N,) float32: each row's
        int8 scale, ||w - st w8|| and ||st w8|| (rounded up); mask (N,) uint8, the candidates. cap: a
        query stops counting once that many items are certainly above its target. Scratch, overwritten:
        und (R, L) int32, und_up (R, L) bool (at most L undecided items listed per query), flags (C,)
        uint8, C >= the widest block and a multiple of 8. All on the CPU, contiguous but ts.
        """
        jit = load("ranking_jit")
        kinds = (
            fits(q, sq, ea, ec, slack, weight, bias, st, eu, ev) and ts.dtype == torch.float64 and ts.is_cpu
            and targets.dtype == torch.int64 and mask.dtype == torch.uint8 and und.dtype == torch.int32
            and und_up.dtype == torch.bool and flags.dtype == torch.uint8 and flags.numel() % 8 == 0
            and all(t.is_cpu and t.is_contiguous() for t in (targets, mask, und, und_up, flags))
        )
        if jit is None or not kinds or not und.shape[0] == und_up.shape[0] == q.shape[0]:
            return None
        rows = (as_numpy(ts), as_numpy(sq), as_numpy(ea), as_numpy(ec), as_numpy(slack), targets.numpy())
        columns = (as_numpy(st), as_numpy(eu), as_numpy(ev), as_numpy(bias), mask.numpy(), cap)
        scratch = (und.numpy(), und_up.numpy(), flags.numpy())
        return cls(jit, as_numpy(q), as_numpy(weight), rows, columns, *scratch)

    def block(self, acc: Tensor, c0: int) -> None:
        """Count and list against items c0 .. c0 + C - 1: acc (R, C) int32 contiguous CPU, their int8
        products q8 @ w8[c0 : c0 + C].T."""
        self.jit.screen_block(acc.numpy(), c0, *self.rows, *self.columns, self.above, self.und, self.und_up,
                              self.und_n, self.flags)

    def settle(self) -> Tensor:
        """(R, 2) int64: per query the number of (masked) other items scoring > and == its target
        (exactly; the first is only a lower bound once it reaches cap)."""
        out = np.zeros((self.q.shape[0], 2), np.int64)  # (R, 2)
        ts, targets = self.rows[0], self.rows[5]
        bias, mask, cap = self.columns[3], self.columns[4], self.columns[5]
        self.jit.screen_settle(self.q, self.weight, bias, ts, targets, mask, cap, self.above, self.und,
                               self.und_up, self.und_n, out)
        return torch.from_numpy(out)
