"""Exact target ranks over all items without the (B, N) score matrix: int8 screening, float64 settling.

Evaluation ranks each target against every item, scores = query @ weight.T + bias. On a CPU the fp32
product is the cost (4 MFLOP an event for 20K items of 100 dims, at the core's fp32 peak). A
`ScreenedTable` instead computes each score approximately from int8 copies of the queries and the item
rows (`torch._int_mm`, exact int32 sums, ~4x the fp32 throughput with VNNI) together with a rigorous
per-(query, item) error bound (Cauchy-Schwarz on the quantisation residuals):

    |q . w - sq st (q8 . w8)| <= ||q|| ||w - st w8|| + ||q - sq q8|| ||st w8||      (+ float32 rounding)

An item whose approximate score is above the target's exact score by more than its bound certainly
ranks above it, one below by more than the bound certainly ranks below; only the few items inside the
bound are scored exactly (`sessrec.kernels.ranking`, float64 sums of the float32 values in index order,
the same code for the target and every item, so equal rows tie exactly). The counting runs in one numba
pass over each (256 queries x 1,024 items) block of int32 products while it is in cache, with no
(B, N) float matrix.

The ranks are those of the exact (float64) scores of the float32 parameters, with the tie modes and
candidate sets of `sessrec.evaluation.metrics.target_ranks`. They can differ from ranks of a float32 score matrix
only where two scores are within float32 rounding of each other. Everything that does not fit the
screened path (not CPU, numba off, `torch._int_mm` missing, non-finite values, huge dims) is scored
densely instead, exactly as `target_ranks` does for a score matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from sessrec import kernels

_ROWS = 256  # queries per int8 product (the item table is streamed once per 256 queries)
_COLS = 1024  # items per int8 product: its (256, 1024) int32 output (1 MiB) stays in the L2 cache
_LIST = 2048  # undecided items listed per query; more: that query is scored exactly over all items
_MIN_RANGE = 1 << 16  # fewest items a screening thread takes (fewer: not worth a thread)
_PREP_ROWS = 1 << 16  # table rows quantised at a time (bounds the float64 temporaries)
_MAX_DIM = (2**31 - 1) // (127 * 127)  # int32 sums of int8 products cannot overflow below this
_UP = 1.0 + 1e-6  # rounds a float64 norm up before it is stored as float32
_SLACK = 1e-6  # relative allowance for the float32 arithmetic of the count (~16 units of rounding)


class FactoredScores(NamedTuple):
    """Scores (B, N) = query @ table.weight.T + table.bias, kept as their two factors."""

    query: Tensor  # (B, D)
    table: ScreenedTable

    def dense(self) -> Tensor:
        """The (B, N) float32 score matrix."""
        return self.table.scores(self.query)


class ScreenedTable:
    """An item table prepared for exact ranking: `table` (N, D+1) = [weight | bias] (GRU4Rec's layout)
    or, with has_bias=False, (N, D) = weight.

    Build it once per evaluation (the table must not change while it is used).
    """

    def __init__(self, table: Tensor, has_bias: bool = True) -> None:
        self.table, self.has_bias = table.detach(), has_bias  # (N, D+1) or (N, D)
        self.weight = self.table[:, :-1] if has_bias else self.table  # (N, D)
        self.bias = self.table[:, -1] if has_bias else self.table.new_zeros(self.table.shape[0])  # (N,)
        self.screened = _screenable(self.weight, self.bias)
        self._threads: tuple[int, ThreadPoolExecutor | None] = (0, None)  # top_k's screening threads
        if self.screened:
            self._prepare()

    def _prepare(self) -> None:
        n = self.weight.shape[0]
        self.w8 = torch.empty(self.weight.shape, dtype=torch.int8)  # (N, D)
        self.st, self.eu, self.ev = (torch.empty(n) for _ in range(3))  # (N,) each
        for lo in range(0, n, _PREP_ROWS):  # float64 temporaries of _PREP_ROWS rows at a time
            w = self.weight[lo : lo + _PREP_ROWS].numpy().astype(np.float64)  # (n, D)
            st = (np.abs(w).max(1) / 127.0).astype(np.float32)  # (n,) per-row scale
            safe = np.where(st > 0, st, 1).astype(np.float64)[:, None]  # (n, 1)
            w8 = np.clip(np.floor(w / safe + 0.5), -127, 127)  # (n, D)
            approx = w8 * st.astype(np.float64)[:, None]  # (n, D) st w8, exact in float64
            self.w8[lo : lo + _PREP_ROWS] = torch.from_numpy(w8.astype(np.int8))
            self.st[lo : lo + _PREP_ROWS] = torch.from_numpy(st)
            self.eu[lo : lo + _PREP_ROWS] = torch.from_numpy(np.linalg.norm(w - approx, axis=1) * _UP)
            self.ev[lo : lo + _PREP_ROWS] = torch.from_numpy(np.linalg.norm(approx, axis=1) * _UP)
        self.w32 = self.weight.contiguous()  # (N, D)
        self.b32 = self.bias.contiguous()  # (N,)
        self.u_max, self.v_max = float(self.eu.max()), float(self.ev.max())
        self.b_max = float(self.b32.abs().max())
        self._blocks = [(c, self.w8[c : c + _COLS]) for c in range(0, n, _COLS)]  # column blocks
        widths = {block.shape[0] for _, block in self._blocks}
        self._acc = {c: torch.empty(_ROWS, c, dtype=torch.int32) for c in widths}  # (R, C) reused: in cache
        self._und = torch.empty(_ROWS, _LIST, dtype=torch.int32)  # (R, L) undecided items of each row
        self._und_up = torch.empty(_ROWS, _LIST, dtype=torch.bool)
        self._flags = torch.zeros(-(-min(_COLS, n) // 8) * 8, dtype=torch.uint8)  # (C,) whole uint64 words

    def scores(self, query: Tensor) -> Tensor:
        """query (B, D) -> dense scores (B, N) in float32 (the path for everything not screened)."""
        from sessrec.models.rows import score_rows

        if self.has_bias:
            query = torch.nn.functional.pad(query, (0, 1), value=1.0)  # (B, D+1)
        return score_rows(query, self.table)  # (B, N)

    def ranks(
        self, query: Tensor, targets: Tensor, mode: str, candidates: Tensor | None = None,
        max_rank: int | None = None,
    ) -> Tensor | None:
        """Exact ranks (B,) float32 of `targets` (B,) under `query` (B, D); None when not screenable.

        `mode` and `candidates` as in `sessrec.evaluation.metrics.target_ranks` (the caller checks `mode`). With
        `max_rank`, ranks above it are only guaranteed to be above it (enough for Recall@k and MRR@k with
        k <= max_rank, and much cheaper: a badly ranked target has many items near its score).
        """
        n, dim = self.weight.shape
        if query.dim() != 2 or query.shape[1] != dim or targets.shape != query.shape[:1]:
            shapes = f"{tuple(query.shape)} and {tuple(targets.shape)}"
            raise ValueError(f"expected query (B, {dim}) and targets (B,) for a table of {n} items, got {shapes}")
        if not self.screened or query.device.type != "cpu" or not bool(torch.isfinite(query).all()):
            return None  # (the dense path checks the targets itself)
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n):
            raise IndexError(f"target item out of range for a table of {n} items")
        mask = torch.ones(n, dtype=torch.uint8)  # (N,)
        if candidates is not None:
            mask = torch.zeros(n, dtype=torch.uint8)
            mask[candidates.long()] = 1
        targets = targets.long().contiguous()
        cap = n + 1 if max_rank is None else int(max_rank)
        parts = []  # [(R, 2)]: others scoring > and == the target
        for r in range(0, query.shape[0], _ROWS):
            part = self._counts(query[r : r + _ROWS].float().contiguous(), targets[r : r + _ROWS], mask, cap)
            if part is None:  # the kernels were switched off (SESSREC_NUMBA=0) since the table was made
                return None
            parts.append(part)
        counts = torch.cat(parts)  # (B, 2)
        greater, equal = counts[:, 0].float(), counts[:, 1].float()  # (B,)
        if mode == "standard":
            return greater + 1
        if mode == "conservative":
            return greater + equal + 1
        return greater + equal / 2 + 1

    def top_k(self, query: Tensor, k: int, workers: int = 1) -> tuple[Tensor, Tensor] | None:
        """The k best items of each query (B, D): (scores (B, k) float32, items (B, k) int64), best first;
        None when not screenable (then score densely). The items are the exact top k of the float32
        scores, found from the int8 products and their error bounds (`sessrec.kernels.topk`): only the
        items whose upper bound reaches the k-th largest lower bound are scored in float32. Scores equal
        the dense ones up to float rounding, so near-ties may be ordered differently.

        workers > 1: the items are cut into that many ranges, each screened in its own thread (the int8
        product and the numba screen both release the GIL; give torch 1 intra-op thread then); a query's
        candidates are the union of its ranges' lists, which holds its exact top k (each of those items
        is in its own range's top k)."""
        n, dim = self.weight.shape
        if query.dim() != 2 or query.shape[1] != dim:
            raise ValueError(f"expected query (B, {dim}) for a table of {n} items, got {tuple(query.shape)}")
        if not self.screened or query.device.type != "cpu" or not bool(torch.isfinite(query).all()):
            return None
        k = min(int(k), n)
        top_scores, top_items = torch.empty(query.shape[0], k), torch.empty(query.shape[0], k, dtype=torch.long)
        for r in range(0, query.shape[0], _ROWS):
            q = query[r : r + _ROWS].float().contiguous()  # (R, D)
            lists = self._candidates(q, k, max(1, int(workers)))
            if lists is None:
                return None
            for row, items in enumerate(lists):
                scores = (self.w32 @ q[row] + self.b32) if items is None else (self.w32[items] @ q[row]
                                                                               + self.b32[items])  # (M,)
                best, at = torch.topk(scores, k)  # (k,)
                top_scores[r + row], top_items[r + row] = best, at if items is None else items[at]
        return top_scores, top_items

    def _candidates(self, q: Tensor, k: int, workers: int = 1) -> list[Tensor | None] | None:
        """Per query of q (R, D): the items (M,) that may be in its top k (None: score it densely); None
        when the kernels do not apply. `workers` threads screen one item range each (see `top_k`)."""
        rows, n = q.shape[0], self.w8.shape[0]
        quantised = self._quantise(q, torch.zeros(rows, dtype=torch.long))  # (the target score is unused)
        if quantised is None:
            return None
        q8, info = quantised
        ea, ec = info[:, 1] * _UP, info[:, 2] * _UP  # (R,) float64
        magnitude = (ea + ec) * (self.v_max + self.u_max) + self.b_max  # bounds |score| and |approx|
        bounds = dict(sq=info[:, 0].float(), ea=ea.float(), ec=ec.float(), slack=(magnitude * _SLACK).float(),
                      st=self.st, eu=self.eu, ev=self.ev, bias=self.b32, k=k, cap=max(8 * k, _LIST))
        workers = max(1, min(workers, n // _MIN_RANGE))
        edges = [n * i // workers for i in range(workers + 1)]  # (workers + 1,) item ranges
        screens = [kernels.ScreenTopK.start(**bounds) for _ in edges[1:]]
        if any(topk is None for topk in screens):
            return None
        jobs = [(q8, topk.block, lo, hi) for topk, lo, hi in zip(screens, edges, edges[1:])]
        if len(jobs) == 1:
            self._stream_items(*jobs[0])
        else:
            for done in [self._pool(len(jobs)).submit(self._stream_items, *job) for job in jobs]:
                done.result()
        lists = [[topk.candidates(row) for topk in screens] for row in range(rows)]
        return [None if any(part is None for part in parts) else torch.cat(parts) for parts in lists]

    def _pool(self, workers: int) -> ThreadPoolExecutor:
        """The table's screening threads (made on first use, reused)."""
        count, pool = self._threads
        if count != workers:
            if pool is not None:
                pool.shutdown(wait=False)
            # one intra-op thread each (a thread's own OpenMP setting): `workers` threads, not workers^2
            self._threads = (workers, ThreadPoolExecutor(workers, thread_name_prefix="sessrec-screen",
                                                         initializer=torch.set_num_threads, initargs=(1,)))
        return self._threads[1]

    def _counts(self, q: Tensor, targets: Tensor, mask: Tensor, cap: int) -> Tensor | None:
        """q (R, D), targets (R,), mask (N,) uint8 -> (R, 2) int64 counts (see `ranks`); None when the
        kernels do not apply."""
        rows = q.shape[0]
        quantised = self._quantise(q, targets)
        if quantised is None:
            return None
        q8, info = quantised
        sq, ts = info[:, 0].float(), info[:, 3]  # (R,) each
        ea, ec = info[:, 1] * _UP, info[:, 2] * _UP  # (R,) float64
        magnitude = (ea + ec) * self.v_max + self.b_max + ea * self.u_max + ec * self.v_max + ts.abs()
        slack = (magnitude * _SLACK).float()  # (R,)
        count = kernels.ScreenCount.start(
            q=q, targets=targets, ts=ts, sq=sq, ea=ea.float(), ec=ec.float(), slack=slack, weight=self.w32,
            bias=self.b32, st=self.st, eu=self.eu, ev=self.ev, mask=mask, cap=cap, und=self._und[:rows],
            und_up=self._und_up[:rows], flags=self._flags,
        )
        if count is None:
            return None
        self._stream(q8, count.block)
        return count.settle()

    def _quantise(self, q: Tensor, targets: Tensor) -> tuple[Tensor, Tensor] | None:
        """q (R, D) -> (q8 (R, D) int8, info (R, 4) float64: sq, ||q||, ||q - sq q8||, the targets' scores);
        None when the kernels do not apply."""
        q8 = torch.empty(q.shape, dtype=torch.int8)
        info = torch.empty(q.shape[0], 4, dtype=torch.float64)
        return (q8, info) if kernels.screen_queries(q, self.w32, self.b32, targets, q8, info) else None

    def _stream(self, q8: Tensor, consume: Callable[[Tensor, int], None]) -> None:
        """consume(acc (R, C) int32, c0) for the int8 products of q8 (R, D) with each column block of
        items c0..c0+C-1, in order; the (R, C) product stays in cache."""
        for c0, w8_block in self._blocks:  # (C, D) int8 each
            acc = self._acc[w8_block.shape[0]][: q8.shape[0]]  # (R, C) int32
            torch._int_mm(q8, w8_block.t(), out=acc)
            consume(acc, c0)

    def _stream_items(self, q8: Tensor, consume: Callable[[Tensor, int], None], lo: int = 0,
                      hi: int | None = None) -> None:
        """consume(acc (C, R) int32, c0) for the items lo..hi-1: as `_stream`, items as rows. For the few
        queries of a top k: the int8 GEMM with the item block as its left operand runs ~2x faster here than
        the (R, C) one (1-16 queries, 700K items: 8-11 ms against 18-20), and blocks of 1 MiB of products
        need few calls."""
        rows, hi = q8.shape[0], self.w8.shape[0] if hi is None else hi
        cols = max(_COLS, _COLS * (_ROWS // rows))  # (C, R) int32: 1 MiB
        acc = torch.empty(min(cols, hi - lo), rows, dtype=torch.int32)  # (C, R)
        q8t = q8.t()  # (D, R)
        for c0 in range(lo, hi, cols):
            block = self.w8[c0 : min(c0 + cols, hi)]  # (C, D) int8
            out = acc if block.shape[0] == acc.shape[0] else torch.empty(block.shape[0], rows, dtype=torch.int32)
            torch._int_mm(block, q8t, out=out)
            consume(out, c0)


def _screenable(weight: Tensor, bias: Tensor) -> bool:
    """Whether the screened path applies: float32 CPU tables of finite values, int8 GEMM and numba."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or bias.dtype != torch.float32:
        return False
    if weight.dim() != 2 or not 0 < weight.shape[1] <= _MAX_DIM or bias.shape != weight.shape[:1]:
        return False
    if not kernels.enabled() or not hasattr(torch, "_int_mm"):
        return False
    return bool(torch.isfinite(weight).all()) and bool(torch.isfinite(bias).all())
