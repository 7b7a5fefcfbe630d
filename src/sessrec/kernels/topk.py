"""The screened top-k of a large item table (numba, `sessrec.kernels.topk_jit`).

`ScreenTopK` lists, for R queries, the items that may belong to each query's exact top k, from the int8
products of `sessrec.evaluation.screening` one column block at a time (a min-heap of the k largest lower
bounds per query, and every item whose upper bound reaches it). Reference: `torch.topk` of the dense
float32 scores, which tests/serving/test_topk.py compares `ScreenedTable.top_k` against. Returns None
(the caller scores densely) when numba is off or the tensors are not contiguous float32 CPU tensors.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from sessrec.kernels.loader import as_numpy, fits, load

__all__ = ["ScreenTopK"]


class ScreenTopK:
    """Candidate lists of the top `k` of R queries, fed block by block (`block`), read by `candidates`."""

    def __init__(self, jit: ModuleType, rows: tuple, columns: tuple, k: int, cap: int) -> None:
        self._jit, self._rows, self._columns = jit, rows, columns
        n_rows = rows[0].shape[0]
        self.heap = np.full((n_rows, k), -np.inf, np.float32)  # (R, k) lower bounds, a min-heap per row
        self.heap_n = np.zeros(n_rows, np.int64)
        self.cand = np.zeros((n_rows, cap), np.int64)  # (R, L) listed items
        self.cand_up = np.zeros((n_rows, cap), np.float32)  # (R, L) their upper bounds
        self.cand_n = np.zeros(n_rows, np.int64)
        self.overflow = np.zeros(n_rows, np.uint8)
        self.tau = np.empty(n_rows, np.float32)  # (R,) scratch: each row's heap minimum
        self.hits = np.empty(n_rows, np.int32)  # (R,) scratch: bounds reaching it in a chunk

    @classmethod
    def start(cls, *, sq: Tensor, ea: Tensor, ec: Tensor, slack: Tensor, st: Tensor, eu: Tensor, ev: Tensor,
              bias: Tensor, k: int, cap: int) -> ScreenTopK | None:
        """Per query (R,) float32: sq (int8 scale), ea = ||q||, ec = ||q - sq q8||, slack (float32
        rounding allowance); per item (N,) float32: st (int8 scale), eu = ||w - st w8||, ev = ||st w8||,
        bias. k: list size wanted; cap: most items listed per query. None when the kernel does not apply."""
        jit = load("topk_jit")
        if jit is None or not fits(sq, ea, ec, slack, st, eu, ev, bias) or k < 1 or cap < k:
            return None
        rows = tuple(as_numpy(t) for t in (sq, ea, ec, slack))
        columns = tuple(as_numpy(t) for t in (st, eu, ev, bias))
        return cls(jit, rows, columns, k, cap)

    def block(self, acc: Tensor, c0: int) -> None:
        """acc (C, R) int32: the int8 products of the items c0..c0+C-1 (rows) with the R queries."""
        self._jit.topk_block(acc.numpy(), c0, *self._rows, *self._columns, self.heap, self.heap_n, self.cand,
                             self.cand_up, self.cand_n, self.overflow, self.tau, self.hits)

    def candidates(self, row: int) -> Tensor | None:
        """The items (M,) int64 that may be in `row`'s top k; None when the row's list overflowed."""
        if self.overflow[row]:
            return None
        n = int(self.cand_n[row])
        tau = self.heap[row, 0] if self.heap_n[row] == self.heap.shape[1] else -np.inf
        keep = self.cand_up[row, :n] >= tau
        return torch.from_numpy(self.cand[row, :n][keep].copy())
