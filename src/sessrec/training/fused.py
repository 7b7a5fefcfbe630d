"""GRU4Rec's training step written out by hand: forward, cross-entropy gradients, AdagradMomentum update.

The autograd step (`sessrec.training.steps.Substep`, `loss.backward()`, `optimizer.step()`) spends a third
of its time outside the matrix products: autograd's graph, the dozens of small ops of the GRU cell's
backward and of the loss, temporaries for every intermediate. For the configuration the published
GRU4Rec configs use (the shared embedding, the cross-entropy loss with or without logQ, the reference's
optimiser) on CPU, `FusedGRU4RecStep` computes the same step directly (BPR-max likewise: torch's ELU,
target-excluded softmax and sigmoid, then loss and gradient in one pass, `kernels.bpr_max_grad`):

- forward: the unique rows of (inputs, targets, samples) (`kernels.unique_inverse`, for the update);
  the scored rows gathered once into [Wy | By | -logq log Q] (C, H+2) (`kernels.gather_columns`,
  prefetching), so ONE matmul with [out | 1 | 1] gives the logits with the bias and the logQ offset of
  `sessrec.training.losses` already added; the GRU cells' gates from two matmuls each; dropout masks drawn as
  `sessrec.models.gru.dropout` draws them (same generator, same order: the same masks);
- the loss: torch's softmax, then loss and d loss / d logits in one pass over the (B, C) probabilities
  (`kernels.cross_entropy_grad`: the formula of `sessrec.training.losses.cross_entropy`);
- backward: two matmuls for the logits, the gates' gradients in one pass per layer
  (`kernels.gru_backward`: products of saved activations only), three small matmuls per layer;
- the update: the table's gradient summed into its unique rows in autograd's order and applied with the
  optimiser's row-wise rule in one kernel (`kernels.row_update_`), the dense tensors by the optimiser's
  dense kernel (`kernels.dense_adagrad_momentum_`), on the optimiser's own state
  (`AdagradMomentum.state_for`: `state["acc"]`, `state["mom"]`): checkpoints, resume and the autograd
  step (taken for a padded step at the end of an epoch) see one optimiser.
  Work tensors of fixed shape are allocated once.

The parameters after a step equal the autograd step's up to float rounding (sums run in another order);
tests/training/test_fused.py trains both ways and compares. `.grad` is left unset. `unsupported(module)` says why
the step does not apply (the module then uses autograd): other networks, losses, input modes,
optimisers, devices or dtypes, frozen parameters, a module under DDP or with step hooks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sessrec import kernels
from sessrec.models.gru import dropout_mask
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.handwritten import FUSED_LOSSES, LossGrad, gru_backward, gru_forward
from sessrec.training.optim import AdagradMomentum
from sessrec.training.steps import plain_steps_suffice


class FusedGRU4RecStep:
    """One session-parallel training step of a GRU4Rec (shared embedding), cross-entropy or BPR-max, in place.

    Args:
        net: the GRU4Rec (input_mode "shared", sparse_grad True, float32 on CPU).
        optimizer: its AdagradMomentum (one parameter group holding every parameter of `net`).
        logq: the loss's logQ strength (0: none; cross-entropy only).
        loss: "cross-entropy" or "bpr-max".
        bpreg, elu_param: BPR-max's regulariser weight and ELU alpha (see `sessrec.training.losses.bpr_max`).
        log_pop: (N,) log of the raw training counts (`SessionRecModule.log_pop`); needed when logq > 0.
        sample_alpha: the sampler's exponent (the extra samples' logQ is alpha * log_pop).
    """

    def __init__(
        self, net: GRU4Rec, optimizer: AdagradMomentum, logq: float = 0.0, log_pop: Tensor | None = None,
        sample_alpha: float = 0.0, loss: str = "cross-entropy", bpreg: float = 1.0, elu_param: float = 0.5,
    ) -> None:
        reason = _unsupported_net(net) or _unsupported_optimizer(net, optimizer) or _unsupported_loss(loss)
        if reason:
            raise ValueError(f"FusedGRU4RecStep does not apply: {reason}")
        if logq and loss != "cross-entropy":
            raise ValueError(f"logq={logq} is only used with the cross-entropy loss, not {loss!r}")
        if logq and (log_pop is None or log_pop.shape != (net.n_items,)):
            raise ValueError(f"logq={logq} needs log_pop of shape ({net.n_items},)")
        self.net, self.optimizer = net, optimizer
        self.loss_grad = LossGrad(loss, bpreg, elu_param)
        self.group = optimizer.param_groups[0]
        self.cells = list(net.gru.cells)
        # the columns' logit offsets -logq * log Q: log count for the in-batch targets, alpha * log count
        # for the samples (the arithmetic of log_q_columns and _column_offset, element by element)
        zeros = torch.zeros(net.n_items)
        self.offsets = (zeros, zeros) if not logq else (
            (log_pop.float() * (-logq)).contiguous(),
            ((log_pop.float() * sample_alpha) * (-logq)).contiguous(),
        )
        self._buffers: dict[str, Tensor] = {}
        self._shape: tuple[int, int] | None = None

    def _buffers_for(self, batch: int, n_cols: int) -> dict[str, Tensor]:
        """Work tensors reused by every step of the same (B, C): no allocation, no page faults."""
        if self._shape != (batch, n_cols):
            width = self.net.item_table.shape[1]  # H+1
            b = dict(
                x=torch.empty(batch, width), cols=torch.empty(n_cols, width + 1),
                out=torch.ones(batch, width + 1),
                scores=torch.empty(batch, n_cols), probs=torch.empty(batch, n_cols),
                grad_out=torch.empty(batch, width + 1), grad_cols=torch.empty(n_cols, width),
                values=torch.empty(batch + n_cols, width),
            )
            self._buffers, self._shape = b, (batch, n_cols)
        return self._buffers

    @torch.no_grad()
    def __call__(
        self, inputs: Tensor, targets: Tensor, samples: Tensor, hidden: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        """inputs, targets (B,), samples (S,), hidden [(B, H_l)] -> (loss, new hidden).

        Every row is active (padded steps take the autograd path). The loss is detached.
        """
        net = self.net
        table = net.item_table.detach()  # (N, H+1) [Wy | By]
        batch, size = inputs.shape[0], table.shape[1] - 1  # B, H
        buf = self._buffers_for(batch, batch + samples.shape[0])
        ids = torch.cat([inputs, targets, samples])  # (B+C,)
        unique = kernels.unique_inverse(ids, table.shape[0])
        if unique is None:
            raise RuntimeError("FusedGRU4RecStep: the numba kernels were switched off (SESSREC_NUMBA=0)")
        rows, inverse = unique  # (U,) sorted, (B+C,)
        x = torch.index_select(table, 0, inputs, out=buf["x"])[:, :size]  # (B, H) the inputs' rows of Wy
        cols = buf["cols"]  # (C, H+2) [Wy | By | -logq log Q] of the scored items
        if not kernels.gather_columns(table, targets, samples, self.offsets[0], self.offsets[1], cols):
            raise RuntimeError("FusedGRU4RecStep: the column gather kernel refused its tensors")
        mask_e = dropout_mask(x, net.dropout_embed)  # (B, H) or None: the masks autograd's step draws
        if mask_e is not None:
            x = x * mask_e
        out, saved = gru_forward(self.cells, net.gru.dropout_hidden, x, hidden)  # (B, H)
        out_aug = buf["out"]  # (B, H+2) [out | 1 | 1]: the ones multiply By and the offset
        out_aug[:, :size] = out
        scores = torch.mm(out_aug, cols.t(), out=buf["scores"])  # (B, C) logits, logQ included
        grad = buf["probs"]
        loss = self.loss_grad(scores, grad)  # (B, C) d loss / d logits into grad
        grad_out = torch.mm(grad, cols, out=buf["grad_out"])  # (B, H+2); only :H is used
        grad_cols = torch.mm(grad.t(), out_aug[:, : size + 1], out=buf["grad_cols"])  # (C, H+1)
        grads, grad_x = gru_backward(self.cells, grad_out, saved)  # dense grads per cell, (B, H)
        if mask_e is not None:
            grad_x = grad_x * mask_e
        self._update(rows, inverse, grad_x, grad_cols, grads)
        return torch.tensor(loss, dtype=torch.float32), [state[-1] for state in saved]

    def _update(
        self, rows: Tensor, inverse: Tensor, grad_x: Tensor, grad_cols: Tensor,
        grads: list[tuple[Tensor, ...]],
    ) -> None:
        group, opt = self.group, self.optimizer
        lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
        table = self.net.item_table
        state = opt.state_for(table, momentum)
        mom = state["mom"] if momentum > 0 else None
        if not kernels.row_update_(table, state["acc"], mom, rows, inverse, grad_x, grad_cols,
                                   self._buffers["values"], lr, momentum, eps):
            raise RuntimeError("FusedGRU4RecStep: the optimiser kernels refused the update")
        dense = []
        for cell, cell_grads in zip(self.cells, grads):
            params = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
            for p, g in zip(params, cell_grads):
                st = opt.state_for(p, momentum)
                dense.append((p.detach(), g, st["acc"], st.get("mom")))
        if not kernels.dense_adagrad_momentum_(dense, lr, momentum, eps):
            raise RuntimeError("FusedGRU4RecStep: the optimiser kernels refused the update")


def _unsupported_loss(loss: str) -> str | None:
    if loss not in FUSED_LOSSES:
        return f"the loss is {loss!r} (only cross-entropy and bpr-max)"
    return None


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


def fused_step_for(module: object) -> tuple[FusedGRU4RecStep | None, str]:
    """The fused step for a `SessionRecModule` about to train (None when it does not apply) and a line
    saying which step trains and why."""
    reason = unsupported(module)
    if reason is not None:
        return None, f"sessrec: training through autograd ({reason})"
    hp, loss = module.hparams, module.loss_fn
    step = FusedGRU4RecStep(module.net, module.optimizers().optimizer, loss.logq, module.log_pop, hp.sample_alpha,
                            loss.name, getattr(loss, "bpreg", 1.0), getattr(loss, "elu_param", 0.5))
    return step, "sessrec: training with the fused step (sessrec.training.fused)"


def unsupported(module: object) -> str | None:
    """Why `FusedGRU4RecStep` does not apply to a `SessionRecModule` about to train (None: it applies).

    Needs what `plain_steps_suffice` needs (one device, 32-bit, no backward or optimiser-step hook)
    plus: one-step BPTT (`bptt` 1), the cross-entropy or BPR-max loss, sampled negatives, no per-sub-step
    callback hook, and `_unsupported_net` / `_unsupported_optimizer`.
    """
    if not plain_steps_suffice(module):
        return "the step runs through Lightning's strategy or precision plugin, or a step hook is set"
    bptt = getattr(module, "hparams", {}).get("bptt", 1)
    if bptt != 1:
        return f"bptt is {bptt} (the fused step back-propagates through one sub-step only)"
    reason = _unsupported_loss(module.loss_fn.name or type(module.loss_fn).__name__)
    if reason:
        return reason
    if getattr(module, "hparams", {}).get("negatives", "sampled") != "sampled":
        return "negatives is 'all' (the full softmax: only sampled columns are fused)"
    if any(hasattr(cb, "on_before_substep_step") for cb in module.trainer.callbacks):
        return "a callback hooks every sub-step (on_before_substep_step)"
    opt = module.optimizers()
    return _unsupported_net(module.net) or _unsupported_optimizer(module.net, getattr(opt, "optimizer", opt))
