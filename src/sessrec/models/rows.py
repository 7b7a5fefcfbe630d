"""Row lookups into large item tables with cheap, already-coalesced sparse gradients.

`gather_rows(table, idx)` is `table[idx]` whose gradient w.r.t. `table` is a sparse COO tensor over the
unique rows of `idx`, flagged coalesced: the optimiser's row-wise update needs no sort of its own and
duplicates are summed once (index_add into the unique rows) instead of by a sparse coalesce.

Tables read this way are marked with `mark_row_sparse`: DDP cannot bucket sparse gradients, so under
DDP the module leaves the marked tables out of DDP and averages their rows itself
(`sessrec.distributed.all_reduce_row_sparse`). A plug-in encoder with its own sparse table marks it too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

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


class _GatherUniqueRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: Tensor, rows: Tensor) -> Tensor:  # rows (U,) unique, sorted
        ctx.save_for_backward(rows)
        ctx.table_shape = table.shape
        return table.index_select(0, rows)  # (U, D)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (rows,) = ctx.saved_tensors
        sparse = torch.sparse_coo_tensor(
            rows.unsqueeze(0), grad.contiguous(), ctx.table_shape, is_coalesced=True, check_invariants=False
        )  # (N, D) with U non-zero rows
        return sparse, None


def gather_rows(table: Tensor, idx: Tensor, sparse: bool = True) -> Tensor:
    """table (N, D), idx (M,) -> (M, D); sparse=True gives `table` a coalesced row-sparse gradient."""
    if not sparse or not torch.is_grad_enabled() or not table.requires_grad:
        return F.embedding(idx, table)  # (M, D)
    rows, inverse = torch.unique(idx, return_inverse=True)  # (U,), (M,)
    return _GatherUniqueRows.apply(table, rows).index_select(0, inverse)  # (M, D)
