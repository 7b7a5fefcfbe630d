"""The AdagradMomentum update as numba kernels (wrapped, with the shapes and the checks, by
`sessrec.kernels.optim`; imported on first use by `sessrec.kernels.loader`).

Per element ``acc += g^2; v = momentum v - lr g / sqrt(acc + eps); p += v`` (``p += -lr g / sqrt(acc +
eps)`` without momentum), in the operation order of the torch reference `_dense_update` /
`_sparse_update` of `sessrec.training.optim`:

* `sparse`: the rows of a table listed in `rows` (prefetched ahead: they are scattered in a large table);
* `dense`: every element of several dense tensors, in one call;
* `row_update`: the fused GRU4Rec step's table update (`sessrec.training.fused`): the step's two
  gradient parts summed into the unique rows in autograd's order, then `sparse` on those rows.
"""

from __future__ import annotations

import numpy as np

from sessrec.kernels.jit import AHEAD, inlined, jit, prefetch_row


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
    sparse_rows(p, acc, mom, rows, values, lr, momentum, eps, has_mom)


@inlined
def sparse_rows(p, acc, mom, rows, values, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
    # p, acc, mom (N, D) float32; rows (K,) int64 unique; values (K, D) float32: each row as dense_one
    n = rows.shape[0]
    for k in range(n):
        if k + AHEAD < n:
            ahead = rows[k + AHEAD]
            prefetch_row(p, ahead)
            prefetch_row(acc, ahead)
            if has_mom:
                prefetch_row(mom, ahead)
        r = rows[k]
        dense_one(p[r], values[k], acc[r], mom[r], lr, momentum, eps, has_mom)


@jit
def dense(ps, grads, accs, moms, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
    # tuples of (M_i,) float32 views
    for i in range(len(ps)):
        dense_one(ps[i], grads[i], accs[i], moms[i], lr, momentum, eps, has_mom)


@jit
def row_update(p, acc, mom, rows, inverse, grad_in, grad_cols, values, lr, momentum, eps,
               has_mom):  # pragma: no cover - compiled
    # The shared table's row-wise update from the step's two gradient parts: grad_in (B, H) for the
    # input rows (columns :H), then grad_cols (C, D) for the scored rows, summed into values (>=U, D)
    # at rows inverse[:B] and inverse[B:] (autograd's order), then `sparse` on the U unique rows.
    u, batch, d = rows.shape[0], grad_in.shape[0], p.shape[1]
    out = values[:u]
    out[:] = 0.0
    for i in range(batch):
        r = inverse[i]
        for j in range(grad_in.shape[1]):
            out[r, j] += grad_in[i, j]
    for i in range(grad_cols.shape[0]):
        r = inverse[batch + i]
        for j in range(d):
            out[r, j] += grad_cols[i, j]
    sparse_rows(p, acc, mom, rows, out, lr, momentum, eps, has_mom)
