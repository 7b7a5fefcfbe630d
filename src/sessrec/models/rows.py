"""Row lookups into large item tables with cheap, already-coalesced sparse gradients.

`gather_rows(table, idx)` is `table[idx]` whose gradient w.r.t. `table` is a sparse COO tensor over the
unique rows of `idx`, flagged coalesced: the optimiser's row-wise update needs no sort of its own and
duplicates are summed once (index_add into the unique rows) instead of by a sparse coalesce.
`gather_row_sets(table, [idx_1, idx_2])` reads several index sets with ONE such gradient over their
union (GRU4Rec's shared embedding reads the input rows and the scored rows of the same table).

Tables read this way are marked with `mark_row_sparse`: DDP cannot bucket sparse gradients, so under
DDP the module leaves the marked tables out of DDP and averages their rows itself
(`sessrec.training.distributed.all_reduce_row_sparse`). A plug-in encoder with its own sparse table marks it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sessrec import kernels

_MARK = "_sessrec_row_sparse"


def mark_row_sparse(param: nn.Parameter, sparse: bool = True) -> nn.Parameter:
    """Flag `param` as a table with row-sparse gradients (when `sparse`); returns it."""
    if sparse:
        setattr(param, _MARK, True)
    return param


def row_sparse_parameters(module: nn.Module) -> list[str]:
    """Qualified names of the parameters with row-sparse gradients: marked tables and the weights of
    `nn.Embedding` / `nn.EmbeddingBag` built with `sparse=True`."""
    names = []
    for prefix, mod in module.named_modules():
        sparse_embedding = isinstance(mod, (nn.Embedding, nn.EmbeddingBag)) and mod.sparse
        for name, param in mod.named_parameters(recurse=False):
            if getattr(param, _MARK, False) or (sparse_embedding and name == "weight"):
                names.append(f"{prefix}.{name}" if prefix else name)
    return names


class _GatherRowSets(torch.autograd.Function):
    """(table, idx_1, ..., idx_k) -> (table[idx_1], ..., table[idx_k]) with ONE coalesced sparse gradient.

    Forward finds the unique rows of all the sets (`sessrec.kernels.unique_inverse` on CPU) and reads the
    outputs from the table; elsewhere it reads the unique rows once, in increasing row order (a
    cache-friendly sweep of a large table), and the outputs from that small buffer. Backward sums every
    output's gradient into a buffer over the same unique rows (one index_add_ per set, no concatenated
    copy) and returns it as a sparse COO tensor flagged coalesced.
    """

    @staticmethod
    def forward(ctx, table: Tensor, *idx: Tensor) -> tuple[Tensor, ...]:
        all_idx = idx[0] if len(idx) == 1 else torch.cat(idx)  # (M,)
        fused = kernels.unique_inverse(all_idx, table.shape[0])  # CPU: no sort
        by_kernel = fused is not None
        if fused is None:
            fused = torch.unique(all_idx, return_inverse=True)
        rows, inverse = fused  # (U,) sorted, (M,)
        parts = inverse.split([i.numel() for i in idx])  # [(M_k,)] positions among the unique rows
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(rows, *parts)
        ctx.table_shape = table.shape
        if by_kernel:  # CPU: straight from the table (a sorted sweep first gains nothing there)
            return tuple(table.index_select(0, i) for i in idx)  # (M_k, D) each
        unique_rows = table.index_select(0, rows)  # (U, D)
        return tuple(unique_rows.index_select(0, part) for part in parts)  # (M_k, D) each

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        rows, *parts = ctx.saved_tensors
        none = (None,) * len(parts)
        used = [(part, g) for part, g in zip(parts, grads) if g is not None]
        if not used:
            return (None, *none)
        values = used[0][1].new_zeros((rows.numel(), *ctx.table_shape[1:]))  # (U, D)
        for part, g in used:  # the summation order of one index_add_ over the concatenation
            _index_add(values, part, g)
        return (_coalesced(rows, values, ctx.table_shape), *none)


def _index_add(out: Tensor, index: Tensor, values: Tensor) -> None:
    """out.index_add_(0, index, values), by the kernel on CPU."""
    if not kernels.index_add_rows_(out, index, values.contiguous()):
        out.index_add_(0, index, values)


def _coalesced(rows: Tensor, values: Tensor, shape: torch.Size) -> Tensor:
    """A sparse COO tensor of `shape` with the sorted unique `rows` (U,) holding `values` (U, D)."""
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape, is_coalesced=True, check_invariants=False)


def row_sparse_grad(table: Tensor, ids: Tensor, values: Tensor) -> Tensor:
    """The coalesced row-sparse gradient (N, D) of `table` whose rows `ids` (M,) received `values`
    (M, D), summed in the order of `ids` (what `gather_rows` gives autograd, for a step written by hand)."""
    unique = kernels.unique_inverse(ids, table.shape[0])  # CPU: no sort
    rows, inverse = unique if unique is not None else torch.unique(ids, return_inverse=True)  # (U,), (M,)
    summed = values.new_zeros(rows.numel(), values.shape[1])  # (U, D)
    _index_add(summed, inverse, values)
    return _coalesced(rows, summed, table.shape)


def gather_row_sets(table: Tensor, idx: Sequence[Tensor], sparse: bool = True) -> tuple[Tensor, ...]:
    """table (N, D), idx [(M_k,)] -> [(M_k, D)]: `table[i]` for each index set, read in one go.

    With sparse=True `table` gets a single coalesced row-sparse gradient over the union of the sets
    (e.g. GRU4Rec's shared embedding: the input rows and the scored rows).
    """
    if not sparse or not torch.is_grad_enabled() or not table.requires_grad:
        return tuple(F.embedding(i, table) for i in idx)  # (M_k, D) each
    return _GatherRowSets.apply(table, *idx)


def gather_rows(table: Tensor, idx: Tensor, sparse: bool = True) -> Tensor:
    """table (N, D), idx (M,) -> (M, D); sparse=True gives `table` a coalesced row-sparse gradient."""
    return gather_row_sets(table, (idx,), sparse)[0]


_SCORE_ROWS, _SCORE_COLS = 64, 4096  # (64, 4096) output blocks: MKL's fast shape, 1 MiB of output


def score_rows(x: Tensor, rows: Tensor) -> Tensor:
    """x (B, D), rows (N, D) -> x @ rows.T (B, N), the full-catalogue scores.

    Without autograd on CPU the product is computed in (64, 4096) blocks of the output written in place:
    measured on a 1-thread Intel Xeon (AVX-512) for B=512, N=20K, D=101, 32-33 us per row against 39-62 us
    for one call or for (512, 512) blocks (a large output block leaves the cache before it is written
    back). Every block is the same dot products, so the scores equal the one-call product up to the BLAS
    kernel's rounding.
    """
    n_rows, n = x.shape[0], rows.shape[0]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or rows.requires_grad)
    if needs_grad or x.device.type != "cpu" or (n_rows <= _SCORE_ROWS and n <= _SCORE_COLS):
        return x @ rows.t()  # (B, N)
    out = x.new_empty(n_rows, n)  # (B, N)
    for r in range(0, n_rows, _SCORE_ROWS):
        for c in range(0, n, _SCORE_COLS):
            block = out[r : r + _SCORE_ROWS, c : c + _SCORE_COLS]  # (<=64, <=4096) view
            torch.mm(x[r : r + _SCORE_ROWS], rows[c : c + _SCORE_COLS].t(), out=block)
    return out
