"""The reference GRU4Rec optimiser: Adagrad with momentum and row-sparse updates.

Per element (facts from hidasib/GRU4Rec_PyTorch_Official ``IndexedAdagradM``, read for facts only)::

    acc += g^2                           # the accumulator includes this step's gradient
    step = g / sqrt(acc + eps)           # eps (1e-6) INSIDE the square root
    v    = momentum * v - lr * step      # only when momentum > 0 (no velocity state otherwise)
    p   += v                             # or p -= lr * step when momentum == 0

Sparse gradients (torch sparse COO, from ``nn.Embedding(sparse=True)`` / ``F.embedding(..., sparse=True)``)
are coalesced first (repeated rows summed: the update is non-linear, so each row is updated once with
its total gradient), then only the touched rows of ``acc``, ``v`` and ``p`` are read and written. As in
the reference, the velocity of UNTOUCHED rows is neither decayed nor applied ("lazy" momentum): a row
keeps its velocity frozen until the next batch that touches it. Dense gradients get the dense update,
where every element's velocity decays each step. So a dense gradient that is zero outside a few rows is
NOT equivalent to the sparse one when momentum > 0 (and costs a full pass over the table): turn it into
a sparse one with :func:`sparse_rows_grad`, or look the rows up with ``F.embedding(..., sparse=True)``
so autograd produces a sparse gradient directly (sparse + sparse accumulates sparse; sparse + dense
becomes dense: the full softmax, `SessionRecModule(negatives="all")`, scores every row of the output
table, so its gradient is dense and gets the dense update, one pass per step as the (B, N) scores).

`RowSparseAdam` is Adam / AdamW with the same split: the dense update for dense gradients, a lazy
row-wise one for row-sparse gradients (see its docstring). `build_optimizer` maps the module's
`optimizer` option to one of the two. Both read lr (and every other setting) from each parameter
group, on the dense and the row-sparse paths alike: `lr_scale_groups` builds the groups of the module's
`lr_scale` option (a learning rate per p-RNN subnet).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from sessrec import kernels

log = logging.getLogger("sessrec")
# Every optimiser here is adaptive: a step moves each weight it touches by about lr, whatever the
# gradient's scale (Adagrad's first step by exactly lr * g / sqrt(g^2 + eps)). Weights start within +-1
# and the reference's best learning rates are 0.05-0.1: above this, a few steps overwrite what was learnt.
LARGE_LR = 10.0

__all__ = ["AdagradMomentum", "RowSparseAdam", "build_optimizer", "coalesced_rows", "lr_scale_groups",
           "sparse_rows_grad"]


def sparse_rows_grad(grad: Tensor, rows: Tensor) -> Tensor:
    """A coalesced sparse COO copy of ``grad`` (N, ...) restricted to ``rows`` (K,), duplicates allowed.

    For a weight whose dense gradient is known to be zero outside ``rows`` (e.g. output rows gathered with
    ``index_select``): ``p.grad = sparse_rows_grad(p.grad, ids)`` before ``step`` makes the optimiser use
    the row-sparse update. Gradient in rows not listed is dropped, so list every row that was used.
    """
    if grad.is_sparse:
        return grad.coalesce()
    uniq = torch.unique(rows)  # (U,) sorted, so the result is coalesced
    values = grad.index_select(0, uniq)  # (U, ...)
    return torch.sparse_coo_tensor(uniq.unsqueeze(0), values, grad.shape, is_coalesced=True, check_invariants=False)


def coalesced_rows(grad: Tensor) -> Tensor:
    """`grad.coalesce()`, skipping the sort when the row indices are already strictly increasing.

    `sessrec.models.rows.gather_rows` produces such gradients, but autograd's accumulation drops the
    coalesced flag. The check is one cheap pass on CPU; on accelerators it would force a host sync, so
    there the regular coalesce runs.
    """
    if grad.is_coalesced() or grad.device.type != "cpu":
        return grad.coalesce()
    rows = grad._indices()[0].numpy()  # (K,) a view; numpy's check costs a third of torch's small ops
    if rows.size < 2 or bool((rows[1:] > rows[:-1]).all()):
        return torch.sparse_coo_tensor(
            grad._indices(), grad._values(), grad.shape, is_coalesced=True, check_invariants=False
        )
    return grad.coalesce()


class _Optimizer(Optimizer):
    """The base of this module's optimisers."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As `torch.optim.Optimizer.zero_grad`, without its per-call profiler record (~60 us a step)."""
        if not set_to_none:
            super().zero_grad(set_to_none=False)
            return
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None


def _check_positive(**values: float) -> None:
    """ValueError `<name> must be a finite number > 0` (NaN fails every comparison)."""
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}")


class AdagradMomentum(_Optimizer):
    """Adagrad with (heavy-ball) momentum and row-sparse updates, as in the GRU4Rec reference.

    No weight decay (the reference has none): `SessionRecModule` refuses weight_decay != 0 with it.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (> 0).
        momentum: momentum coefficient in [0, 1); 0 keeps no velocity state.
        eps: added to the accumulator inside the square root (> 0).
    """

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 0.05, momentum: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        _check_positive(lr=lr, eps=eps)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    def state_for(self, p: Tensor, momentum: float) -> dict[str, Tensor]:
        """The state of parameter p, its accumulator "acc" (and velocity "mom" when momentum > 0) made
        (zeros) on first use."""
        state = self.state[p]
        if "acc" not in state:
            state["acc"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if momentum > 0 and "mom" not in state:
            state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            dense: list[tuple[Tensor, Tensor, Tensor, Tensor | None]] = []  # (p, grad, acc, mom)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state_for(p, momentum)
                mom = state.get("mom") if momentum > 0 else None
                if p.grad.is_sparse:
                    _sparse_update(p, p.grad, state["acc"], mom, lr, momentum, eps)
                else:
                    dense.append((p, p.grad, state["acc"], mom))
            if dense and not kernels.dense_adagrad_momentum_(dense, lr, momentum, eps):  # one call on CPU
                for p, grad, acc, mom in dense:
                    _dense_update(p, grad, acc, mom, lr, momentum, eps)
        return loss



def _dense_update(
    p: Tensor, grad: Tensor, acc: Tensor, mom: Tensor | None, lr: float, momentum: float, eps: float
) -> None:
    acc.addcmul_(grad, grad)  # acc += g^2
    denom = (acc + eps).sqrt_()  # sqrt(acc + eps)
    if mom is None:
        p.addcdiv_(grad, denom, value=-lr)
    else:
        mom.mul_(momentum).addcdiv_(grad, denom, value=-lr)  # v = mu v - lr g / sqrt(acc + eps)
        p.add_(mom)


def _sparse_update(
    p: Tensor, grad: Tensor, acc: Tensor, mom: Tensor | None, lr: float, momentum: float, eps: float
) -> None:
    if grad.sparse_dim() != 1:
        raise ValueError(f"sparse gradients must be row-sparse (sparse_dim 1), got {grad.sparse_dim()}")
    grad = coalesced_rows(grad)  # repeated rows summed; the update is non-linear in g
    rows = grad.indices()[0]  # (K,) unique
    values = grad.values()  # (K, D)
    if kernels.sparse_adagrad_momentum_(p, acc, mom, rows, values, lr, momentum, eps):  # one pass per row
        return
    acc.index_add_(0, rows, values * values)  # acc[rows] += g^2
    denom = acc.index_select(0, rows).add_(eps).sqrt_()  # (K, D) sqrt(acc + eps)
    if mom is None:
        p.index_add_(0, rows, values.div(denom).mul_(-lr))  # (index_add_'s alpha= is much slower on CPU)
        return
    mom_rows = mom.index_select(0, rows).mul_(momentum).addcdiv_(values, denom, value=-lr)  # (K, D)
    mom.index_copy_(0, rows, mom_rows)
    p.index_add_(0, rows, mom_rows)


class RowSparseAdam(_Optimizer):
    """Adam, or AdamW with `decoupled_weight_decay`, with lazy row-wise updates for row-sparse gradients.

    Dense gradients get torch.optim.Adam's update (AdamW's with `decoupled_weight_decay`; no amsgrad)::

        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)

    Row-sparse gradients (coalesced first, as in `AdagradMomentum`) get the same formulas on the touched
    rows only, as torch.optim.SparseAdam and TensorFlow's LazyAdam: untouched rows keep their moments
    frozen (not decayed) and their values unchanged, so a step costs O(rows touched), not a pass over a
    1M-row table (dense Adam would decay every row's moments and move every row each step). `t` counts
    the parameter's steps (one per step with a gradient), shared by all its rows (as SparseAdam); eps is
    placed as in Adam (SparseAdam adds it before the bias correction: the two differ by
    ~eps / sqrt(1 - b2^t)). A table every row of which is touched each step moves exactly as with Adam.

    Weight decay on row-sparse tables applies to the touched rows only (lazy, like the rest): AdamW
    multiplies them by (1 - lr * weight_decay) before the update, Adam adds weight_decay * p to their
    gradient. Frequent items are thus decayed more often than rare ones (per occurrence, not per step).

    Args:
        params: parameters or parameter groups.
        lr: learning rate (> 0).
        betas: the moments' decay rates, each in [0, 1).
        eps: added to the denominator (> 0).
        weight_decay: >= 0; L2 (Adam) or decoupled (AdamW).
        decoupled_weight_decay: AdamW's decoupled decay instead of Adam's L2 term.
    """

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
    ) -> None:
        _check_positive(lr=lr, eps=eps)
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0.0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                if p.grad.is_sparse:
                    _sparse_adam(p, p.grad, state, group)
                else:
                    _adam_(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group)
        return loss


def _adam_(p: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, group: dict[str, Any]) -> None:
    """One Adam / AdamW step in place on p, m, v (whole tensors or gathered rows, (K, D))."""
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    if wd and group["decoupled_weight_decay"]:
        p.mul_(1 - lr * wd)
    elif wd:
        grad = grad.add(p, alpha=wd)
    m.lerp_(grad, 1 - beta1)  # m = b1 m + (1 - b1) g
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v = b2 v + (1 - b2) g^2
    denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(eps)  # (torch's arithmetic, to the bit)
    p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


def _sparse_adam(p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """The lazy step: gather the touched rows of p, m and v (K, D), update them, write them back."""
    if grad.sparse_dim() != 1:
        raise ValueError(f"sparse gradients must be row-sparse (sparse_dim 1), got {grad.sparse_dim()}")
    grad = coalesced_rows(grad)  # repeated rows summed
    rows = grad.indices()[0]  # (K,) unique
    p_rows = p.index_select(0, rows)  # (K, D)
    m_rows = state["exp_avg"].index_select(0, rows)  # (K, D)
    v_rows = state["exp_avg_sq"].index_select(0, rows)  # (K, D)
    _adam_(p_rows, grad.values(), m_rows, v_rows, state["step"], group)
    state["exp_avg"].index_copy_(0, rows, m_rows)
    state["exp_avg_sq"].index_copy_(0, rows, v_rows)
    p.index_copy_(0, rows, p_rows)


def build_optimizer(
    name: str, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float, momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> Optimizer:
    """`SessionRecModule`'s `optimizer` option: "adagrad_momentum" (the reference's), "adam" or "adamw"
    (`RowSparseAdam`: lazy on row-sparse tables, torch's Adam / AdamW on the rest). `params` may be
    parameter groups (`lr_scale_groups`): a group's own "lr" replaces `lr` for its parameters."""
    if name == "adagrad_momentum":
        optimizer = AdagradMomentum(params, lr=lr, momentum=momentum)
    elif name in ("adam", "adamw"):
        optimizer = RowSparseAdam(params, lr=lr, weight_decay=weight_decay,
                                  decoupled_weight_decay=name == "adamw")
    else:
        raise ValueError(f"optimizer must be one of adagrad_momentum, adam, adamw, got {name!r}")
    _warn_large_lr(optimizer)
    return optimizer


def _warn_large_lr(optimizer: Optimizer) -> None:
    """A warning (rank 0) when a parameter group's learning rate exceeds `LARGE_LR`."""
    lr = max(group["lr"] for group in optimizer.param_groups)
    if lr > LARGE_LR and not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
        log.warning("learning rate %g (model.lr, times lr_scale) is above %g: these optimisers move every "
                    "weight by about lr a step, so training is likely to wreck the model (the reference's "
                    "best: 0.05-0.1)", lr, LARGE_LR)


def lr_scale_groups(
    net: nn.Module, lr: float, lr_scale: Mapping[str, float] | None
) -> list[Tensor] | list[dict[str, Any]]:
    """The parameters of `net` for `build_optimizer`, with `SessionRecModule`'s `lr_scale` applied.

    No scales (None or empty): the plain parameter list (one group, as before). Otherwise one group per
    scaled subnet of `net.named_subnets()` (a `ParallelRNN`'s) holding everything that subnet owns (encoder, GRU
    and, with weighted fusion, its own item table) at lr * scale, and one group at lr for the rest:
    unscaled subnets and the shared parameters (concat fusion's item table, learned subnet scales).
    Groups are named ("name": the subnet, or "rest"); empty groups are left out. The names in
    `lr_scale` are checked by `sessrec.checks.check_lr_scale`.
    """
    if not lr_scale:
        return list(net.parameters())
    groups, scaled = [], set()
    for name, scale in lr_scale.items():
        params = list(net.named_subnets()[name].parameters())
        scaled.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": lr * float(scale), "name": name})
    rest = [p for p in net.parameters() if id(p) not in scaled]
    return groups + ([{"params": rest, "lr": lr, "name": "rest"}] if rest else [])


def _closure_loss(closure: Callable[[], float] | None) -> float | None:
    """torch's optimiser convention: re-evaluate the loss with gradients on when a closure is given."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
