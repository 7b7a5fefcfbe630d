"""Fused CPU kernels for the hot loops, compiled with numba; plain-torch code is the fallback.

Each kernel does in ONE pass over memory what the torch code does in several passes with a temporary
per pass, which matters where the data is large or cold:

* `sparse_adagrad_momentum_`: the optimiser's row-wise update of ~2,000 scattered rows of three large
  tables (parameter, accumulator, velocity): one read and write of each row instead of five gathers
  and scatters.
* `dense_adagrad_momentum_`: the same update for all the dense tensors of a parameter group, in one
  call (one pass each instead of six ops).
* `count_at_least`: per row, how many scores are >= (or >) the row's target score: the evaluation's
  rank count, without a (B, N) boolean temporary.
* `unique_inverse`: `torch.unique(ids, return_inverse=True)` for the ~2,000 item ids of a training step,
  by marking the ids in an (N,) scratch array instead of sorting them (4x faster for 20K items).
* `index_add_rows_`: `out.index_add_(0, index, values)` for row blocks, summed in the same order.
* `screen_kernels`: the int8-screened exact ranking of `sessrec.screening` (quantise the queries;
  count the items certainly above each target and settle the undecided ones in float64).

The kernels run only on contiguous float32 CPU tensors; every function returns False / None when it
does not apply (other device or dtype, numba missing, ``SESSREC_NUMBA=0`` in the environment) and the
caller runs its torch code, which the tests compare the kernels against. Compiled code is cached on
disk (numba ``cache=True``), so only the first process pays the ~1 s compilation.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "count_at_least", "dense_adagrad_momentum_", "enabled", "index_add_rows_", "screen_kernels",
    "sparse_adagrad_momentum_", "unique_inverse",
]

_KERNELS: dict[str, Any] | None = None
_LOADED = False
_MARKS: dict[int, np.ndarray] = {}  # n_rows -> (n_rows,) int32 scratch of unique_inverse (-1 between calls)


def enabled() -> bool:
    """True when numba imports and ``SESSREC_NUMBA`` is not "0"."""
    return _kernels() is not None


def _kernels() -> dict[str, Any] | None:
    global _KERNELS, _LOADED
    if os.environ.get("SESSREC_NUMBA", "1") == "0":
        return None
    if not _LOADED:
        _LOADED = True
        try:
            _KERNELS = _compile()
        except ImportError:  # numba not installed or not built for this Python / numpy
            _KERNELS = None
    return _KERNELS


def _fits(*tensors: Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


def sparse_adagrad_momentum_(
    p: Tensor, acc: Tensor, mom: Tensor | None, rows: Tensor, values: Tensor, lr: float, momentum: float,
    eps: float,
) -> bool:
    """Row-wise AdagradMomentum update in place; False (nothing done) when the kernel does not apply.

    p, acc, mom (N, D); rows (K,) sorted unique int64 row ids; values (K, D) their summed gradients.
    Per element ``acc += g^2; v = momentum v - lr g / sqrt(acc + eps); p += v``
    (``p -= lr g / sqrt(acc + eps)`` without momentum), the arithmetic of `sessrec.optim`'s torch code.
    """
    k = _kernels()
    tables = (p, acc) if mom is None else (p, acc, mom)
    if k is None or not _fits(*tables, values) or rows.dtype != torch.int64 or p.dim() != 2:
        return False
    if any(t.shape != p.shape for t in tables) or values.shape != (rows.numel(), p.shape[1]):
        shapes = f"tables {tuple(p.shape)}, rows {tuple(rows.shape)}, values {tuple(values.shape)}"
        raise ValueError(f"row update: mismatched shapes: {shapes}")
    rows_np = rows.numpy()  # (K,) sorted: the ends bound every row (the kernel does not check bounds)
    if rows_np.size and (rows_np[0] < 0 or rows_np[-1] >= p.shape[0]):
        raise IndexError(f"gradient row out of range for a table of {p.shape[0]} rows")
    f32 = np.float32
    mom_np = _np(acc if mom is None else mom)  # unused without momentum
    args = (f32(lr), f32(momentum), f32(eps), mom is not None)
    k["sparse"](_np(p), _np(acc), mom_np, rows_np, _np(values), *args)
    return True


def dense_adagrad_momentum_(
    tensors: list[tuple[Tensor, Tensor, Tensor, Tensor | None]], lr: float, momentum: float, eps: float
) -> bool:
    """Dense AdagradMomentum update in place of every (p, grad, acc, mom) in `tensors`, in ONE call.

    mom is None for all or for none of them (momentum 0 or > 0). False (nothing done) when the kernel
    does not apply to all of them.
    """
    k = _kernels()
    if k is None:
        return False
    has_mom = tensors[0][3] is not None
    flat: list[list[np.ndarray]] = [[], [], [], []]  # p, grad, acc, mom: (M_i,) views
    for p, grad, acc, mom in tensors:
        group = (p, grad, acc, mom if has_mom else acc)  # acc stands in for the unused velocity
        if (mom is not None) != has_mom or not _fits(*group) or p.shape != grad.shape:
            return False
        for i, t in enumerate(group):
            flat[i].append(_np(t).reshape(-1))
    f32 = np.float32
    k["dense"](*(tuple(f) for f in flat), f32(lr), f32(momentum), f32(eps), has_mom)
    return True


def count_at_least(scores: Tensor, target: Tensor, strict: bool, mask: Tensor | None) -> Tensor | None:
    """Per row, how many (masked) columns of scores (B, N) are >= target (B, 1) (> when strict): (B,) int64.

    None when the kernel does not apply. NaN scores never count (IEEE comparisons), as in torch.
    """
    k = _kernels()
    if k is None or not _fits(scores) or target.dtype != torch.float32 or target.device.type != "cpu":
        return None
    out = np.zeros(scores.shape[0], np.int64)  # (B,)
    t = np.ascontiguousarray(_np(target).reshape(-1))  # (B,)
    if mask is None:
        k["count"](_np(scores), t, strict, out)
    else:
        k["count_masked"](_np(scores), t, strict, mask.numpy().view(np.uint8), out)
    return torch.from_numpy(out)


def unique_inverse(ids: Tensor, n_rows: int) -> tuple[Tensor, Tensor] | None:
    """Sorted unique ids (U,) and the inverse (M,) of int64 CPU ids (M,) in [0, n_rows), or None.

    None when not applicable (numba off, other device or dtype, no ids).

    Equal to `torch.unique(ids, return_inverse=True)`. Marks the ids in an (n_rows,) scratch array and
    scans it when n_rows <= 16 M (the scan is then cheaper than a sort), else sorts the marked ids.
    Raises IndexError for an id outside [0, n_rows).
    """
    k = _kernels()
    if k is None or ids.device.type != "cpu" or ids.dtype != torch.int64 or ids.dim() != 1 or not ids.numel():
        return None
    ids_np = ids.numpy()
    lo, hi = k["min_max"](ids_np)
    if lo < 0 or hi >= n_rows:
        raise IndexError(f"item id {lo if lo < 0 else hi} out of range for a table of {n_rows} rows")
    mark = _MARKS.get(n_rows)
    if mark is None:
        mark = _MARKS[n_rows] = np.full(n_rows, -1, np.int32)
    rows, inverse = k["unique"](ids_np, mark, n_rows <= 16 * ids_np.shape[0])
    return torch.from_numpy(rows), torch.from_numpy(inverse)


def index_add_rows_(out: Tensor, index: Tensor, values: Tensor) -> bool:
    """`out.index_add_(0, index, values)` for out (U, D), index (M,) int64 in [0, U), values (M, D).

    Summed in the order of `index`, as torch's CPU kernel does. False (nothing done) when not applicable.
    The caller guarantees the index range (an inverse from `unique_inverse`).
    """
    k = _kernels()
    if k is None or not _fits(out, values) or index.dtype != torch.int64 or out.dim() != 2:
        return False
    k["index_add"](_np(out), index.numpy(), _np(values))
    return True


def screen_kernels() -> dict[str, Any] | None:
    """The int8-screened ranking kernels (`screen_queries`, `screen_block`, `screen_settle`) of
    `sessrec.screening`, or None when numba is off."""
    return _kernels()


def _compile() -> dict[str, Any]:
    try:
        return _define(cache=True)
    except RuntimeError:  # numba found no writable cache directory: compile in every process
        return _define(cache=False)


def _define(cache: bool) -> dict[str, Any]:
    import numba

    # error_model="numpy": no zero-division checks, which would keep LLVM from vectorising the loops
    options = dict(cache=cache, nogil=True, boundscheck=False, error_model="numpy")
    jit = numba.njit(**options)
    inlined = numba.njit(inline="always", **options)  # inlined into its callers: no call per row

    @inlined
    def dense_one(p, grad, acc, mom, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
        # all (M,) float32 views of the same shape
        neg_lr = -lr
        for i in range(p.shape[0]):
            g = grad[i]
            a = acc[i] + g * g
            acc[i] = a
            step = neg_lr * g / np.sqrt(a + eps)  # torch's addcdiv order: (value * t1) / t2
            if has_mom:
                v = mom[i] * momentum + step
                mom[i] = v
                p[i] += v
            else:
                p[i] += step

    @jit
    def sparse(p, acc, mom, rows, values, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
        # p, acc, mom (N, D) float32; rows (K,) int64 unique; values (K, D) float32: each row as dense_one
        for k in range(rows.shape[0]):
            r = rows[k]
            dense_one(p[r], values[k], acc[r], mom[r], lr, momentum, eps, has_mom)

    @jit
    def dense(ps, grads, accs, moms, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
        # tuples of (M_i,) float32 views
        for i in range(len(ps)):
            dense_one(ps[i], grads[i], accs[i], moms[i], lr, momentum, eps, has_mom)

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
        # scratch. (Loops over a whole block row: LLVM vectorises those, not 64-column chunks.)
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
                flags[k] = np.uint8((a - e <= t) & (a + e >= t) & (mask[k] != 0))
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
                    und_up[b, und_n[b]] = np.float32(row[k]) * (s * st[k]) + bias[k] > t
                    und_n[b] += 1

    @jit
    def screen_settle(q, weight, bias, ts, targets, mask, cap, above, und, und_up, und_n, out):  # pragma: no cover
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

    return {
        "sparse": sparse, "dense": dense, "count": count, "count_masked": count_masked, "min_max": min_max,
        "unique": unique, "index_add": index_add, "screen_queries": screen_queries,
        "screen_block": screen_block, "screen_settle": screen_settle,
    }
