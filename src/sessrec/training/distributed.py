"""Row-sparse gradients under DDP: the item tables are left out of DDP and averaged here.

DDP all-reduces gradients in dense buckets: a sparse COO gradient fails there, and NCCL has no sparse
all-reduce. Densifying a 1M-row table's gradient every step would cost a full pass (and all-reduce) of
the table. Instead the module tells DDP to ignore the row-sparse tables
(`DistributedDataParallel._set_params_and_buffers_to_ignore_for_model`) and after each backward calls
`all_reduce_row_sparse`: every rank all-gathers the touched rows and their gradients, sums duplicates
and divides by the world size, which is exactly DDP's average, still row-sparse. So the reference
optimiser keeps its lazy row-wise update on every rank, and the ranks' tables stay identical.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sessrec.training.optim import coalesced_rows

__all__ = ["all_reduce_row_sparse", "broadcast_parameters", "ignore_in_ddp", "leave_row_sparse_to_us"]


def leave_row_sparse_to_us(module: nn.Module) -> list[nn.Parameter]:
    """Tell the DDP wrapper to come to skip `module`'s row-sparse tables and return them: the module
    averages their gradients with `all_reduce_row_sparse` and broadcasts them at fit start."""
    from sessrec.models.rows import row_sparse_parameters

    names = row_sparse_parameters(module)
    params = dict(module.named_parameters())
    ignore_in_ddp(module, names)
    return [params[n] for n in names]


def ignore_in_ddp(module: nn.Module, names: list[str]) -> None:
    """Make the DDP wrapper that will be built around `module` skip the parameters `names`."""
    from torch.nn.parallel import DistributedDataParallel

    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)


def broadcast_parameters(params: list[nn.Parameter], src: int = 0) -> None:
    """Copy rank `src`'s values of `params` to every rank (DDP does this for the parameters it owns)."""
    with torch.no_grad():
        for param in params:
            dist.broadcast(param.data, src)


def _gather(tensor: Tensor, world_size: int) -> list[Tensor]:
    out = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(out, tensor)
    return out


def all_reduce_row_sparse(params: list[nn.Parameter], world_size: int) -> None:
    """Replace each parameter's gradient by its average over the ranks, keeping it row-sparse.

    A rank without a gradient for a parameter contributes nothing (zero); if no rank has one, the
    gradient stays None. If any rank holds a dense gradient for a parameter, all ranks all-reduce it
    densely (the collectives must match on every rank). One host sync per call (the row counts).
    """
    if not params:
        return
    grads = [None if p.grad is None else (coalesced_rows(p.grad) if p.grad.is_sparse else p.grad) for p in params]
    device = params[0].device
    meta = torch.tensor(
        [[g._nnz() if g is not None and g.is_sparse else 0, int(g is not None and not g.is_sparse)] for g in grads],
        dtype=torch.long, device=device,
    )  # (P, 2): rows, dense flag
    metas = torch.stack(_gather(meta, world_size)).cpu()  # (W, P, 2)
    for i, (param, grad) in enumerate(zip(params, grads)):
        counts = metas[:, i, 0].tolist()
        if bool(metas[:, i, 1].any()):
            full = torch.zeros_like(param) if grad is None else grad.to_dense()  # (N, D)
            dist.all_reduce(full)
            param.grad = full.div_(world_size)
            continue
        if max(counts) == 0:
            param.grad = None
            continue
        param.grad = _average_rows(param, grad, counts, world_size)


def _average_rows(param: Tensor, grad: Tensor | None, counts: list[int], world_size: int) -> Tensor:
    width = max(counts)
    rows = torch.zeros(width, dtype=torch.long, device=param.device)  # (M,) padded
    values = param.new_zeros((width, *param.shape[1:]))  # (M, D) padded
    if grad is not None and grad._nnz():
        rows[: grad._nnz()] = grad._indices()[0]
        values[: grad._nnz()] = grad._values()
    all_rows = torch.cat([r[:c] for r, c in zip(_gather(rows, world_size), counts)])  # (sum K,)
    all_values = torch.cat([v[:c] for v, c in zip(_gather(values, world_size), counts)])  # (sum K, D)
    unique, inverse = torch.unique(all_rows, return_inverse=True)  # (U,), (sum K,)
    summed = all_values.new_zeros((unique.numel(), *param.shape[1:])).index_add_(0, inverse, all_values)  # (U, D)
    return torch.sparse_coo_tensor(
        unique.unsqueeze(0), summed.div_(world_size), param.shape, is_coalesced=True, check_invariants=False
    )
