"""The screened top-k as a numba kernel (wrapped by `sessrec.kernels.topk`; imported on first use).

`topk_block` reads one block of the int8 product (C items x R queries, int32) and, per query,
keeps the k largest LOWER bounds of the item scores seen so far in a min-heap and lists every item whose
UPPER bound reaches the heap's smallest (the k-th largest lower bound): the exact top k are among the
listed items. Reference: `torch.topk` of the dense float32 scores, which tests/serving/test_topk.py
compares the whole screened top-k (`sessrec.evaluation.screening.ScreenedTable.top_k`) against.
"""

from __future__ import annotations

import numpy as np

from sessrec.kernels.jit import inlined, jit

_CHUNK = 64  # items per vectorised screening pass


@inlined
def _sift_down(heap, r, n):  # pragma: no cover - compiled
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        small = left
        if left + 1 < n and heap[r, left + 1] < heap[r, left]:
            small = left + 1
        if heap[r, i] <= heap[r, small]:
            return
        heap[r, i], heap[r, small] = heap[r, small], heap[r, i]
        i = small


@inlined
def _sift_up(heap, r, i):  # pragma: no cover - compiled
    while i > 0:
        parent = (i - 1) // 2
        if heap[r, parent] <= heap[r, i]:
            return
        heap[r, parent], heap[r, i] = heap[r, i], heap[r, parent]
        i = parent


@jit
def topk_block(acc, c0, sq, ea, ec, slack, st, eu, ev, bias, heap, heap_n, cand, cand_up, cand_n, overflow,
               tau, hits):  # pragma: no cover - compiled
    """acc (C, R) int32: the products of the items c0..c0+C-1 (rows) with the R queries (columns); per
    query r: sq, ea = ||q||, ec = ||q - sq q8||, slack; per item: st, eu, ev, bias. State: heap (R, K)
    float32 with heap_n (R,) used; cand (R, L) int64, cand_up (R, L) float32, cand_n (R,); overflow (R,)
    uint8 set when a row's list is full of items that may still belong to its top k (the caller then
    scores that row densely); tau (R,) float32 and hits (R,) int32 scratch. Items are taken in chunks of _CHUNK: a
    branch-free (vectorised over the queries) pass counts the upper bounds that reach their query's
    heap, and only the queries with any in a chunk visit its items one by one (after the first blocks:
    a few chunks in a hundred)."""
    cols, rows = acc.shape
    k = heap.shape[1]
    st_b, eu_b, ev_b, bias_b = st[c0 : c0 + cols], eu[c0 : c0 + cols], ev[c0 : c0 + cols], bias[c0 : c0 + cols]
    for r in range(rows):  # an overflowed row takes nothing more
        tau[r] = np.float32(np.inf) if overflow[r] else (heap[r, 0] if heap_n[r] == k else np.float32(-np.inf))
    for j0 in range(0, cols, _CHUNK):
        j1 = min(j0 + _CHUNK, cols)
        hits[:rows] = 0
        for j in range(j0, j1):
            s_j, b_j, u_j, v_j = st_b[j], bias_b[j], eu_b[j], ev_b[j]
            for r in range(rows):  # no branch, float32 and int32 only: LLVM vectorises it
                up = (sq[r] * s_j * np.float32(acc[j, r]) + b_j) + (ea[r] * u_j + ec[r] * v_j + slack[r])
                hits[r] += np.int32(up >= tau[r])
        for r in range(rows):
            if hits[r] == 0:
                continue
            for j in range(j0, j1):
                approx = sq[r] * st_b[j] * np.float32(acc[j, r]) + bias_b[j]
                bound = ea[r] * eu_b[j] + ec[r] * ev_b[j] + slack[r]
                if approx + bound >= tau[r]:
                    _take(c0 + j, r, approx, bound, heap, heap_n, cand, cand_up, cand_n, overflow, tau)


@inlined
def _take(i, r, approx, bound, heap, heap_n, cand, cand_up, cand_n, overflow, tau):  # pragma: no cover
    """Item i may be in row r's top k: its lower bound into the heap, the item onto the list."""
    k = heap.shape[1]
    n = heap_n[r]
    low = approx - bound
    if n < k:
        heap[r, n] = low
        _sift_up(heap, r, n)
        heap_n[r] = n + 1
        if n + 1 == k:
            tau[r] = heap[r, 0]
    elif low > heap[r, 0]:
        heap[r, 0] = low
        _sift_down(heap, r, k)
        tau[r] = heap[r, 0]
    m = cand_n[r]
    if m == cand.shape[1]:  # drop the listed items that can no longer make the top k
        kept = 0
        for t in range(m):
            if cand_up[r, t] >= tau[r]:
                cand[r, kept] = cand[r, t]
                cand_up[r, kept] = cand_up[r, t]
                kept += 1
        m = kept
        if m == cand.shape[1]:
            overflow[r] = 1
            tau[r] = np.float32(np.inf)
            return
    cand[r, m] = i
    cand_up[r, m] = approx + bound
    cand_n[r] = m + 1
