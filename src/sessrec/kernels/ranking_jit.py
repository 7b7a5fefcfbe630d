"""The ranking kernels of the evaluation as numba kernels (wrapped, with the shapes and the checks, by
`sessrec.kernels.ranking`; imported on first use by `sessrec.kernels.loader`).

* `count`, `count_masked`: per row, how many (masked) scores are >= (or >) the row's target score, in
  one pass without a (B, N) boolean temporary. Reference: the chunked torch count `_count` of
  `sessrec.evaluation.metrics` (behind `target_ranks`).
* `screen_queries`, `screen_block`, `screen_settle`: the int8-screened exact ranking of
  `sessrec.evaluation.screening` (quantise the queries; count the items certainly above each target
  block by block; settle the undecided ones in float64). Reference: `target_ranks` of the dense float32
  score matrix (`ScreenedTable.scores`), which tests/evaluation/test_screening.py compares against.
"""

from __future__ import annotations

import numpy as np

from sessrec.kernels.jit import inlined, jit


@jit
def count(scores, target, strict, out):  # pragma: no cover - compiled
    # scores (B, N) float32, target (B,) float32, out (B,) int64 (added to)
    for i in range(scores.shape[0]):
        t = target[i]
        c = 0
        if strict:
            for j in range(scores.shape[1]):
                c += scores[i, j] > t
        else:
            for j in range(scores.shape[1]):
                c += scores[i, j] >= t
        out[i] += c


@jit
def count_masked(scores, target, strict, mask, out):  # pragma: no cover - compiled
    # as count, over the columns j with mask[j] != 0 (mask (N,) uint8)
    for i in range(scores.shape[0]):
        t = target[i]
        c = 0
        if strict:
            for j in range(scores.shape[1]):
                c += (scores[i, j] > t) & (mask[j] != 0)
        else:
            for j in range(scores.shape[1]):
                c += (scores[i, j] >= t) & (mask[j] != 0)
        out[i] += c


@inlined
def dot64(x, w, b):  # pragma: no cover - compiled
    # x, w (D,) float32, b float32: the exact-rank score in float64, in a fixed order (four partial
    # sums over d mod 4, then the tail), the same for every item: equal rows give equal scores
    s0 = s1 = s2 = s3 = 0.0
    n4 = x.shape[0] - x.shape[0] % 4
    for d in range(0, n4, 4):
        s0 += np.float64(x[d]) * np.float64(w[d])
        s1 += np.float64(x[d + 1]) * np.float64(w[d + 1])
        s2 += np.float64(x[d + 2]) * np.float64(w[d + 2])
        s3 += np.float64(x[d + 3]) * np.float64(w[d + 3])
    for d in range(n4, x.shape[0]):
        s0 += np.float64(x[d]) * np.float64(w[d])
    return ((s0 + s1) + (s2 + s3)) + np.float64(b)


@jit
def screen_queries(q, weight, bias, targets, q8, info):  # pragma: no cover - compiled
    # q (R, D) float32 queries -> q8 (R, D) int8 = round(q / sq); info (R, 4) float64 per row:
    # sq, ||q||_2 (A), ||q - sq q8||_2 (C), the target's float64 score (ts)
    for b in range(q.shape[0]):
        top = 0.0
        for d in range(q.shape[1]):
            top = max(top, abs(np.float64(q[b, d])))
        sq = np.float64(np.float32(top / 127.0))
        a2 = 0.0
        c2 = 0.0
        for d in range(q.shape[1]):
            x = np.float64(q[b, d])
            k = np.floor(x / sq + 0.5) if sq > 0.0 else 0.0
            k = min(127.0, max(-127.0, k))
            q8[b, d] = np.int8(k)
            a2 += x * x
            c2 += (x - sq * k) ** 2
        info[b, 0] = sq
        info[b, 1] = np.sqrt(a2)
        info[b, 2] = np.sqrt(c2)
        info[b, 3] = dot64(q[b], weight[targets[b]], bias[targets[b]])


@jit
def screen_block(acc, c0, ts, sq, ea, ec, slack, targets, st, eu, ev, bias, mask, cap, above, und, und_up,
                 und_n, flags):  # pragma: no cover - compiled
    # acc (R, C) int32 = q8 @ w8[c0:c0+C].T, one column block of the int8 product; per row sq, ea, ec,
    # slack float32, ts float64 (the target's exact score); per column st, eu, ev, bias float32, mask
    # uint8 (all N columns). Item j is certainly above row b's target when its approximate score
    # a = acc sq st_j + bias_j exceeds ts by more than the bound e = ea eu_j + ec ev_j + slack, certainly
    # below when a + e < ts. Adds the first to above (R,) and lists the undecided others in und
    # (R, L) int32 / und_up (R, L) bool (approximately above?) with their number in und_n (R,) (L + 1:
    # the list overflowed). Rows with >= cap items certainly above list nothing more. flags (C,) uint8
    # scratch: 0 decided, 1 / 2 undecided with the approximate score below / above the target's.
    # (Loops over a whole block row: LLVM vectorises those, not 64-column chunks.)
    n_cols = acc.shape[1]
    cap_list = und.shape[1]
    c1 = c0 + n_cols  # this block's columns, indexed from 0
    st, eu, ev, bias, mask = st[c0:c1], eu[c0:c1], ev[c0:c1], bias[c0:c1], mask[c0:c1]
    for b in range(acc.shape[0]):
        t = np.float32(ts[b])
        s, a_b, c_b, sl = sq[b], ea[b], ec[b], slack[b]
        row = acc[b]
        up = 0
        band = 0
        for k in range(n_cols):  # vectorised: no branch
            a = np.float32(row[k]) * (s * st[k]) + bias[k]
            e = a_b * eu[k] + c_b * ev[k] + sl
            m = np.int64(mask[k])
            up += np.int64(a - e > t) * m
            band += np.int64(a + e >= t) * m
        above[b] += up
        tgt = targets[b] - c0
        own = 1 if (0 <= tgt < n_cols and mask[tgt] != 0) else 0  # inside its own bound
        if band - up <= own or above[b] >= cap or und_n[b] > cap_list:
            continue
        for k in range(n_cols):  # rare: flag the undecided items (vectorised), then list them
            a = np.float32(row[k]) * (s * st[k]) + bias[k]
            e = a_b * eu[k] + c_b * ev[k] + sl
            undecided = (a - e <= t) & (a + e >= t) & (mask[k] != 0)
            flags[k] = np.uint8(undecided) * np.uint8(1 + (a > t))  # 0, or 1 (below) / 2 (above) approx.
        if own:
            flags[tgt] = 0
        words = flags.view(np.uint64)
        for w in range(n_cols // 8 + (n_cols % 8 != 0)):
            if words[w] == 0:
                continue
            for k in range(8 * w, min(8 * w + 8, n_cols)):
                if flags[k] == 0:
                    continue
                if und_n[b] == cap_list:
                    und_n[b] = cap_list + 1
                    break
                und[b, und_n[b]] = c0 + k
                und_up[b, und_n[b]] = flags[k] == 2
                und_n[b] += 1


@jit
def screen_settle(q, weight, bias, ts, targets, mask, cap, above, und, und_up, und_n,
                  out):  # pragma: no cover - compiled
    # out (R, 2) int64: per row the number of (masked) other items scoring > and == the target, from
    # screen_block's lists; the undecided items approximately above go first, so that a badly ranked
    # target reaches cap after few exact scores (its count is then only a lower bound). A row whose
    # list overflowed is scored exactly over all items.
    for b in range(q.shape[0]):
        greater = above[b]
        equal = 0
        if greater < cap and und_n[b] > und.shape[1]:
            greater = 0
            for j in range(weight.shape[0]):
                if j != targets[b] and mask[j] != 0:
                    x = dot64(q[b], weight[j], bias[j])
                    greater += x > ts[b]
                    equal += x == ts[b]
        elif greater < cap:
            for phase in (True, False):
                for i in range(und_n[b]):
                    if greater >= cap:
                        break
                    if und_up[b, i] == phase:
                        x = dot64(q[b], weight[und[b, i]], bias[und[b, i]])
                        greater += x > ts[b]
                        equal += x == ts[b]
        out[b, 0] = greater
        out[b, 1] = equal
