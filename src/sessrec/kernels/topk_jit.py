"""The screened top-k as a numba kernel (wrapped by `sessrec.kernels.topk`; imported on first use).

`topk_block` reads one column block of the int8 product (R queries x C items, int32) and, per query,
keeps the k largest LOWER bounds of the item scores seen so far in a min-heap and lists every item whose
UPPER bound reaches the heap's smallest (the k-th largest lower bound): the exact top k are among the
listed items. Reference: `torch.topk` of the dense float32 scores, which tests/serving/test_topk.py
compares the whole screened top-k (`sessrec.evaluation.screening.ScreenedTable.top_k`) against.
"""

from __future__ import annotations

import numpy as np

from sessrec.kernels.jit import inlined, jit


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
def topk_block(acc, c0, sq, ea, ec, slack, st, eu, ev, bias, heap, heap_n, cand, cand_up, cand_n,
               overflow):  # pragma: no cover - compiled
    """acc (R, C) int32 products of block c0; per query r: sq, ea = ||q||, ec = ||q - sq q8||, slack;
    per item: st, eu, ev, bias. State: heap (R, K) float32 with heap_n (R,) used; cand (R, L) int64,
    cand_up (R, L) float32, cand_n (R,); overflow (R,) uint8 set when a row's list is full of items
    that may still belong to its top k (the caller then scores that row densely)."""
    rows, cols = acc.shape
    k = heap.shape[1]
    cap = cand.shape[1]
    for r in range(rows):
        if overflow[r]:
            continue
        n = heap_n[r]
        tau = heap[r, 0] if n == k else -np.inf
        for j in range(cols):
            i = c0 + j
            approx = sq[r] * st[i] * np.float32(acc[r, j]) + bias[i]
            bound = ea[r] * eu[i] + ec[r] * ev[i] + slack[r]
            up = approx + bound
            if up < tau:
                continue
            low = approx - bound
            if n < k:
                heap[r, n] = low
                _sift_up(heap, r, n)
                n += 1
                if n == k:
                    tau = heap[r, 0]
            elif low > heap[r, 0]:
                heap[r, 0] = low
                _sift_down(heap, r, k)
                tau = heap[r, 0]
            m = cand_n[r]
            if m == cap:  # drop the listed items that can no longer make the top k
                kept = 0
                for t in range(m):
                    if cand_up[r, t] >= tau:
                        cand[r, kept] = cand[r, t]
                        cand_up[r, kept] = cand_up[r, t]
                        kept += 1
                m = kept
                if m == cap:
                    overflow[r] = 1
                    break
            cand[r, m] = i
            cand_up[r, m] = up
            cand_n[r] = m + 1
        heap_n[r] = n
