"""Row bookkeeping of the training step as numba kernels (wrapped, with the shapes and the checks, by
`sessrec.kernels.rows`; imported on first use by `sessrec.kernels.loader`).

* `min_max`, `unique`: `torch.unique(ids, return_inverse=True)` of a step's item ids by marking them
  in an (N,) scratch array (the reference: `torch.unique` in `sessrec.models.rows.gather_rows`).
* `index_add`: `out.index_add_(0, index, values)` for row blocks, in the order of `index` (the
  reference: `index_add_` in the backward of `sessrec.models.rows.gather_rows`).
* `guided_search`: `torch.searchsorted(cdf, u, right=True)` through a guide table (the reference:
  `searchsorted` in `sessrec.training.sampler`).
"""

from __future__ import annotations

import numpy as np

from sessrec.kernels.jit import jit


@jit
def min_max(ids):  # pragma: no cover - compiled
    lo, hi = ids[0], ids[0]
    for i in range(1, ids.shape[0]):
        lo, hi = min(lo, ids[i]), max(hi, ids[i])
    return lo, hi


@jit
def unique(ids, mark, scan):  # pragma: no cover - compiled
    # ids (M,) int64 in range; mark (N,) int32, all -1 on entry and on return
    m = ids.shape[0]
    if scan:  # mark, then number the marked rows in increasing order
        for i in range(m):
            mark[ids[i]] = 0
        u = 0
        for r in range(mark.shape[0]):
            if mark[r] == 0:
                mark[r] = u
                u += 1
        rows = np.empty(u, np.int64)
        for i in range(m):
            rows[mark[ids[i]]] = ids[i]
    else:  # collect the first occurrences, sort them, number them
        first = np.empty(m, np.int64)
        u = 0
        for i in range(m):
            if mark[ids[i]] < 0:
                mark[ids[i]] = 0
                first[u] = ids[i]
                u += 1
        rows = np.sort(first[:u])
        for j in range(u):
            mark[rows[j]] = j
    inverse = np.empty(m, np.int64)
    for i in range(m):
        inverse[i] = mark[ids[i]]
    for j in range(rows.shape[0]):
        mark[rows[j]] = -1
    return rows, inverse


@jit
def index_add(out, index, values):  # pragma: no cover - compiled
    # out (U, D) += values (M, D) at rows index (M,), in order
    for i in range(index.shape[0]):
        r = index[i]
        for d in range(out.shape[1]):
            out[r, d] += values[i, d]


@jit
def guided_search(cdf, guide, scale, u, out):  # pragma: no cover - compiled
    # cdf (N,) float64 non-decreasing; guide (G,) int64 with guide[g] = first i with cdf[i] > g / scale
    # (approximately: the two loops below make the result exact whatever the guide's rounding);
    # u (M,) float64; out (M,) int64 = the first i with cdf[i] > u, N when none (searchsorted right=True)
    n, g_max = cdf.shape[0], guide.shape[0] - 1
    for m in range(u.shape[0]):
        x = u[m]
        g = min(max(int(x * scale), 0), g_max)
        i = guide[g]
        while i > 0 and cdf[i - 1] > x:
            i -= 1
        while i < n and cdf[i] <= x:
            i += 1
        out[m] = i
