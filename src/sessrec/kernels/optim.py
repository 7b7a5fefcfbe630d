"""AdagradMomentum's update in one pass over memory (numba, `sessrec.kernels.optim_jit`).

The torch reference is `sessrec.training.optim`: `_sparse_update` (row-sparse gradients) and
`_dense_update`, the code `AdagradMomentum.step` runs with ``SESSREC_NUMBA=0`` and for what the kernels
do not handle; tests/kernels/test_kernels.py trains both ways and compares, and
tests/training/test_fused.py compares `row_update_` (inside the fused step) with autograd's step.

* `sparse_adagrad_momentum_`: the row-wise update of ~2,000 scattered rows of three large tables
  (parameter, accumulator, velocity): one read and write of each row instead of five gathers and
  scatters.
* `dense_adagrad_momentum_`: the same update for all the dense tensors of a parameter group, in one
  call (one pass each instead of six ops).
* `row_update_`: the fused GRU4Rec step's table update (`sessrec.training.fused`): its two gradient
  parts summed into the unique rows (the sum `torch.index_add_` would make, in autograd's order), then
  the row-wise update.

Each returns False (nothing done) when it does not apply (numba off, not contiguous float32 CPU
tensors); the caller then runs the torch code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sessrec.kernels.loader import as_numpy, fits, load

__all__ = ["dense_adagrad_momentum_", "row_update_", "sparse_adagrad_momentum_"]


def sparse_adagrad_momentum_(
    p: Tensor, acc: Tensor, mom: Tensor | None, rows: Tensor, values: Tensor, lr: float, momentum: float,
    eps: float,
) -> bool:
    """Row-wise AdagradMomentum update in place; False (nothing done) when the kernel does not apply.

    p, acc, mom (N, D); rows (K,) sorted unique int64 row ids; values (K, D) their summed gradients.
    Per element ``acc += g^2; v = momentum v - lr g / sqrt(acc + eps); p += v``
    (``p -= lr g / sqrt(acc + eps)`` without momentum), the arithmetic of `sessrec.training.optim`'s torch
    code.
    """
    jit = load("optim_jit")
    tables = (p, acc) if mom is None else (p, acc, mom)
    if jit is None or not fits(*tables, values) or rows.dtype != torch.int64 or p.dim() != 2:
        return False
    if any(t.shape != p.shape for t in tables) or values.shape != (rows.numel(), p.shape[1]):
        shapes = f"tables {tuple(p.shape)}, rows {tuple(rows.shape)}, values {tuple(values.shape)}"
        raise ValueError(f"row update: mismatched shapes: {shapes}")
    rows_np = rows.numpy()  # (K,) sorted: the ends bound every row (the kernel does not check bounds)
    if rows_np.size and (rows_np[0] < 0 or rows_np[-1] >= p.shape[0]):
        raise IndexError(f"gradient row out of range for a table of {p.shape[0]} rows")
    f32 = np.float32
    mom_np = as_numpy(acc if mom is None else mom)  # unused without momentum
    args = (f32(lr), f32(momentum), f32(eps), mom is not None)
    jit.sparse(as_numpy(p), as_numpy(acc), mom_np, rows_np, as_numpy(values), *args)
    return True


def dense_adagrad_momentum_(
    tensors: list[tuple[Tensor, Tensor, Tensor, Tensor | None]], lr: float, momentum: float, eps: float
) -> bool:
    """Dense AdagradMomentum update in place of every (p, grad, acc, mom) in `tensors`, in ONE call.

    Each p, grad, acc, mom of one shape (any); mom is None for all or for none of them (momentum 0 or
    > 0). False (nothing done) when the kernel does not apply to all of them.
    """
    jit = load("optim_jit")
    if jit is None:
        return False
    has_mom = tensors[0][3] is not None
    flat: list[list[np.ndarray]] = [[], [], [], []]  # p, grad, acc, mom: (M_i,) views
    for p, grad, acc, mom in tensors:
        group = (p, grad, acc, mom if has_mom else acc)  # acc stands in for the unused velocity
        if (mom is not None) != has_mom or not fits(*group) or p.shape != grad.shape:
            return False
        for i, t in enumerate(group):
            flat[i].append(as_numpy(t).reshape(-1))
    f32 = np.float32
    jit.dense(*(tuple(f) for f in flat), f32(lr), f32(momentum), f32(eps), has_mom)
    return True


def row_update_(
    p: Tensor, acc: Tensor, mom: Tensor | None, rows: Tensor, inverse: Tensor, grad_in: Tensor,
    grad_cols: Tensor, values: Tensor, lr: float, momentum: float, eps: float,
) -> bool:
    """The row-wise update of `sparse_adagrad_momentum_` from a gradient given in two parts, in place.

    p, acc, mom (N, D) (mom None without momentum); rows (U,) the sorted unique int64 rows touched;
    inverse (B+C,) int64 in [0, U), the row (index into `rows`) of each gradient row: grad_in (B, H)
    (H <= D: it adds to the first H columns) first, then grad_cols (C, D); values (>= U, D) scratch,
    overwritten with the summed gradients. The caller guarantees the ranges (`rows` and `inverse` from
    `unique_inverse`): the kernel does not check them. False (nothing done) when it does not apply.
    """
    jit = load("optim_jit")
    tables = (p, acc) if mom is None else (p, acc, mom)
    if jit is None or not fits(*tables, grad_in, grad_cols, values):
        return False
    if rows.dtype != torch.int64 or inverse.dtype != torch.int64:
        return False
    f32 = np.float32
    mom_np = as_numpy(acc if mom is None else mom)  # unused without momentum
    jit.row_update(as_numpy(p), as_numpy(acc), mom_np, rows.numpy(), inverse.numpy(), as_numpy(grad_in),
                   as_numpy(grad_cols), as_numpy(values), f32(lr), f32(momentum), f32(eps), mom is not None)
    return True
