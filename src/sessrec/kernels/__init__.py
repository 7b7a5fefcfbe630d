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
* `screen_kernels`: the int8-screened exact ranking of `sessrec.evaluation.screening` (quantise the queries;
  count the items certainly above each target and settle the undecided ones in float64).

The kernels run only on contiguous float32 CPU tensors; every function returns False / None when it
does not apply (other device or dtype, numba missing, ``SESSREC_NUMBA=0`` in the environment) and the
caller runs its torch code, which the tests compare the kernels against. The numba functions live in
`sessrec.kernels.compiled` (module level, so numba's ``cache=True`` hits across processes: only the first
process pays the ~3 s compilation).
"""

from __future__ import annotations

import os
import tempfile
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
    (``p -= lr g / sqrt(acc + eps)`` without momentum), the arithmetic of `sessrec.training.optim`'s torch code.
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


class GuidedSearch:
    """`torch.searchsorted(cdf, u, right=True)` for many u over one fixed cdf, in O(1) per value.

    A guide table (Chen and Asau) of G = N + 1 entries holds, for each of G equal slices of
    [0, cdf[-1]], the first index whose cdf exceeds the slice's start; each search then steps from
    there, usually by 0 or 1 entries (against ~log2 N cache misses of a binary search: ~8x faster for
    N = 20K on 1 CPU thread). The result equals searchsorted's for every u, whatever the rounding
    of the guide (the search steps both ways until it holds the first index with cdf > u).
    """

    def __init__(self, cdf: Tensor) -> None:  # cdf (N,) float64 non-decreasing, on CPU
        self.source = cdf  # the tensor searched (the caller's: to tell when it is replaced)
        self.cdf = cdf.detach().contiguous()
        n = self.cdf.numel()
        total = float(self.cdf[-1]) if n else 0.0
        self.scale = n / total if total > 0 else 0.0  # slices per unit of cumulative weight
        starts = torch.arange(n + 1, dtype=torch.float64) / self.scale if total > 0 else torch.zeros(1)
        self.guide = torch.searchsorted(self.cdf, starts.to(self.cdf.dtype), right=True)  # (G,) int64

    @staticmethod
    def applies(cdf: Tensor) -> bool:
        k = _kernels()
        return k is not None and cdf.device.type == "cpu" and cdf.dtype == torch.float64 and cdf.dim() == 1

    def __call__(self, u: Tensor, out: Tensor) -> Tensor:
        """u float64 CPU (any shape), out int64 of u's shape, contiguous: filled and returned."""
        flat_u = u.contiguous().view(-1)
        _kernels()["guided_search"](self.cdf.numpy(), self.guide.numpy(), self.scale, flat_u.numpy(),
                                    out.view(-1).numpy())
        return out


def screen_kernels() -> dict[str, Any] | None:
    """The int8-screened ranking kernels (`screen_queries`, `screen_block`, `screen_settle`) of
    `sessrec.evaluation.screening`, or None when numba is off."""
    return _kernels()


def _compile() -> dict[str, Any]:
    import numba

    try:
        from sessrec.kernels import compiled as nk
    except RuntimeError:  # numba found no writable cache directory: cache in a temporary one instead
        numba.config.CACHE_DIR = tempfile.mkdtemp(prefix="sessrec-numba-")
        from sessrec.kernels import compiled as nk
    return {name: getattr(nk, name) for name in _NAMES}


_NAMES = (
    "sparse", "dense", "count", "count_masked", "min_max", "unique", "index_add", "screen_queries",
    "screen_block", "screen_settle", "guided_search",
    "gru_backward", "gather_columns", "cross_entropy_grad", "row_update", "bpr_max_grad",
)
