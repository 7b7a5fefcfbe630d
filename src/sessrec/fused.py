"""GRU4Rec's training step written out by hand: forward, cross-entropy gradients, AdagradMomentum update.

The autograd step (`SessionRecModule._train_step`, `loss.backward()`, `optimizer.step()`) spends about a
fifth of its time on autograd's graph and on the dozens of small ops of the GRU cell's backward. For the
configuration most runs use (GRU4Rec with the shared embedding, the cross-entropy loss with or without
logQ, the reference's optimiser, on CPU) `FusedGRU4RecStep` computes the same step directly:

- forward: one lookup of the input and scored rows (`kernels.unique_inverse` over both sets), the GRU
  cells' gates from two matmuls each, dropout masks drawn as `sessrec.models.gru.dropout` draws them
  (same generator, same order, so the same masks), scores (B, C) = [out | 1] @ [Wy | By][cols].T;
- the loss and d loss / d scores as `sessrec.losses._CrossEntropy` (same offsets, same reduction);
- backward: two matmuls for the scores, the gates' gradients in one numba pass per layer
  (`numba_kernels.gru_backward`: products of saved activations only), three small matmuls per layer;
  the table rows' gradients summed into the unique rows in the order autograd sums them;
- the update: the optimiser's own kernels and state (`state["acc"]`, `state["mom"]`), so checkpoints,
  resume and a switch to the autograd step (a padded step at the end of an epoch) see one optimiser.

The parameters after a step equal the autograd step's up to float rounding (the sums run in another
order); tests/test_fused.py trains both ways and compares. `.grad` is left unset. `unsupported(module)`
says why the step does not apply (the module then uses autograd): other networks, losses, input modes,
optimisers, devices or dtypes, frozen parameters, a module under DDP or with step hooks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from sessrec import kernels
from sessrec.models.gru4rec import GRU4Rec
from sessrec.optim import AdagradMomentum

_LOG_EPS = math.log(1e-24)  # as sessrec.losses


class FusedGRU4RecStep:
    """One session-parallel training step of a GRU4Rec (shared embedding) with cross-entropy, in place.

    Args:
        net: the GRU4Rec (input_mode "shared", sparse_grad True, float32 on CPU).
        optimizer: its AdagradMomentum (one parameter group holding every parameter of `net`).
        logq: the loss's logQ strength (0: none).
    """

    def __init__(self, net: GRU4Rec, optimizer: AdagradMomentum, logq: float = 0.0) -> None:
        reason = _unsupported_net(net) or _unsupported_optimizer(net, optimizer)
        if reason:
            raise ValueError(f"FusedGRU4RecStep does not apply: {reason}")
        self.net, self.optimizer, self.logq = net, optimizer, logq
        self.group = optimizer.param_groups[0]
        self.cells = list(net.gru.cells)
        self._kernel = kernels._kernels()["gru_backward"]

    @torch.no_grad()
    def __call__(
        self, inputs: Tensor, targets: Tensor, samples: Tensor, hidden: list[Tensor], log_q: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """inputs, targets (B,), samples (S,), hidden [(B, H_l)], log_q (B+S,) or None -> (loss, hidden).

        Every row is active (padded steps take the autograd path). The loss is detached.
        """
        net = self.net
        table = net.item_table.detach()  # (N, H+1) [Wy | By]
        batch, width = inputs.shape[0], table.shape[1]
        cols = torch.cat([targets, samples])  # (C,) C = B+S
        rows, inverse = kernels.unique_inverse(torch.cat([inputs, cols]), table.shape[0])  # (U,), (B+C,)
        x = table.index_select(0, inputs)[:, :-1]  # (B, H) the inputs' rows of Wy
        out_rows = table.index_select(0, cols)  # (C, H+1)
        mask_e = _mask(x, net.dropout_embed)  # (B, H) or None
        if mask_e is not None:
            x = x * mask_e
        out, saved = self._forward(x, hidden)  # (B, H_L)
        out_pad = F.pad(out, (0, 1), value=1.0)  # (B, H+1): the last column multiplies By
        scores = torch.mm(out_pad, out_rows.t())  # (B, C)
        loss, grad_scores = _cross_entropy_grad(scores, log_q, self.logq)  # (), (B, C)
        grad_out = torch.mm(grad_scores, out_rows)  # (B, H+1); column H is By's, unused
        grad_rows = torch.mm(grad_scores.t(), out_pad)  # (C, H+1)
        grads, grad_x = self._backward(grad_out, saved)  # dense grads per cell, (B, H)
        if mask_e is not None:
            grad_x = grad_x * mask_e
        values = torch.zeros(rows.numel(), width)  # (U, H+1) the table's gradient on its unique rows
        kernels.index_add_rows_(values, inverse[:batch], F.pad(grad_x, (0, 1)))  # autograd's order:
        kernels.index_add_rows_(values, inverse[batch:], grad_rows)  # the inputs' rows, then the scored
        self._update(rows, values, grads)
        return loss, [state[-1] for state in saved]

    def _forward(self, x: Tensor, hidden: list[Tensor]) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
        """Through the GRU cells; saves per layer (x, h, n, rz, gh, mask, out)."""
        saved = []
        p = self.net.gru.dropout_hidden
        for cell, h in zip(self.cells, hidden):
            size = cell.hidden_size
            gi = torch.addmm(cell.bias_ih.detach(), x, cell.weight_ih.detach().t())  # (B, 3H) [r | z | n]
            gh = torch.addmm(cell.bias_hh.detach(), h, cell.weight_hh.detach().t())  # (B, 3H)
            rz = torch.sigmoid(gi[:, : 2 * size] + gh[:, : 2 * size])  # (B, 2H) [r | z]
            n = torch.tanh(torch.addcmul(gi[:, 2 * size :], rz[:, :size], gh[:, 2 * size :]))  # (B, H)
            new = torch.addcmul(n, rz[:, size:], h - n)  # (B, H) (1 - z) n + z h
            mask = _mask(new, p)  # (B, H) or None
            out = new if mask is None else new * mask  # (B, H) the carried state and the next input
            saved.append((x, h, n, rz, gh, mask, out))
            x = out
        return x, saved

    def _backward(
        self, grad: Tensor, saved: list[tuple[Tensor, ...]]
    ) -> tuple[list[tuple[Tensor, ...]], Tensor]:
        """grad (B, >=H_L) of the last output -> [(dW_ih, dW_hh, db_ih, db_hh)] per cell, d x (B, I)."""
        grads = []
        for cell, (x, h, n, rz, gh, mask, _) in zip(reversed(self.cells), reversed(saved)):
            size = 3 * cell.hidden_size
            grad_i, grad_h = torch.empty(x.shape[0], size), torch.empty(x.shape[0], size)  # (B, 3H)
            bias_i, bias_h = torch.zeros(size), torch.zeros(size)  # (3H,)
            has_mask = mask is not None
            self._kernel(_np(grad), _np(mask if has_mask else n), has_mask, _np(h), _np(n), _np(rz), _np(gh),
                         _np(grad_i), _np(grad_h), _np(bias_i), _np(bias_h))
            weight_i = torch.mm(grad_i.t(), x)  # (3H, I)
            weight_h = torch.mm(grad_h.t(), h)  # (3H, H)
            grad = torch.mm(grad_i, cell.weight_ih.detach())  # (B, I): the previous layer's output grad
            grads.append((weight_i, weight_h, bias_i, bias_h))
        return grads[::-1], grad

    def _update(self, rows: Tensor, values: Tensor, grads: list[tuple[Tensor, ...]]) -> None:
        group, opt = self.group, self.optimizer
        lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
        table = self.net.item_table
        state = opt._state_for(table, momentum)
        done = kernels.sparse_adagrad_momentum_(table.detach(), state["acc"], state.get("mom"), rows, values,
                                                lr, momentum, eps)
        dense = []
        for cell, cell_grads in zip(self.cells, grads):
            params = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
            for p, g in zip(params, cell_grads):
                st = opt._state_for(p, momentum)
                dense.append((p.detach(), g, st["acc"], st.get("mom")))
        done = kernels.dense_adagrad_momentum_(dense, lr, momentum, eps) and done
        if not done:  # the tensors were checked by unsupported(): only a broken invariant gets here
            raise RuntimeError("FusedGRU4RecStep: the optimiser kernels refused the update")


def _np(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


def _mask(x: Tensor, p: float) -> Tensor | None:
    """The dropout mask `sessrec.models.gru.dropout` draws for x (same generator calls), None if p = 0."""
    if p == 0.0:
        return None
    return torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # (B, H) 0 or 1 / (1 - p)


def _cross_entropy_grad(scores: Tensor, log_q: Tensor | None, logq: float) -> tuple[Tensor, Tensor]:
    """scores (B, C), target of row i in column i -> (loss, d loss / d scores (B, C)), as _CrossEntropy.

    Overwrites `scores`.
    """
    if log_q is not None and logq != 0.0:
        scores.add_(log_q * (-logq))  # (B, C) z = scores - logq log Q
    p = torch.softmax(scores, dim=1)  # (B, C)
    x = p.diagonal().log() - _LOG_EPS  # (B,) log p_target - log eps
    batch = scores.shape[0]
    loss = (-_LOG_EPS - F.softplus(x)).sum() / batch  # mean of -log(p_target + eps)
    weight = torch.sigmoid(x).div_(batch)  # (B,) p / (p + eps) / B
    grad = p.mul_(weight.unsqueeze(1))  # (B, C) w_i p_ij
    grad.diagonal().sub_(weight)
    return loss, grad


def _unsupported_net(net: object) -> str | None:
    if type(net) is not GRU4Rec:
        return f"the net is a {type(net).__name__}, not a GRU4Rec"
    if net.input_mode != "shared":
        return f"input_mode is {net.input_mode!r} (only 'shared')"
    if not net.sparse:
        return "sparse_grad is off"
    params = list(net.parameters())
    if any(not p.requires_grad for p in params):
        return "some parameters are frozen"
    if any(p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous() for p in params):
        return "parameters are not contiguous float32 on the CPU"
    if not kernels.enabled():
        return "numba is off"
    return None


def _unsupported_optimizer(net: GRU4Rec, optimizer: object) -> str | None:
    if type(optimizer) is not AdagradMomentum:
        return f"the optimiser is {type(optimizer).__name__}, not AdagradMomentum"
    groups = optimizer.param_groups
    if len(groups) != 1 or {id(p) for p in groups[0]["params"]} != {id(p) for p in net.parameters()}:
        return "the optimiser does not hold exactly the net's parameters in one group"
    return None


def unsupported(module: object) -> str | None:
    """Why `FusedGRU4RecStep` does not apply to a `SessionRecModule` about to train (None: it applies).

    Needs what `SessionRecModule._direct` needs (one device, 32-bit, no backward or optimiser-step hook)
    plus: the cross-entropy loss, no per-sub-step callback hook, and `_unsupported_net` /
    `_unsupported_optimizer`.
    """
    if not getattr(module, "_direct", False):
        return "the step runs through Lightning's strategy or precision plugin, or a step hook is set"
    if module.loss_fn.name != "cross-entropy":
        return f"the loss is {module.loss_fn.name!r} (only cross-entropy)"
    if any(hasattr(cb, "on_before_substep_step") for cb in module.trainer.callbacks):
        return "a callback hooks every sub-step (on_before_substep_step)"
    opt = module.optimizers()
    return _unsupported_net(module.net) or _unsupported_optimizer(module.net, getattr(opt, "optimizer", opt))
