"""The parts of a training step written out by hand, shared by the fused GRU4Rec step
(`sessrec.training.fused`) and the hand-written p-RNN step (`sessrec.training.fused_prnn`):

- `gru_forward` / `gru_backward`: a `GRUStack`'s cells (torch's gate order r, z, n; dropout after each
  layer with the masks `sessrec.models.gru.dropout` draws: same generator, same order) forward with the
  activations saved, and backward from the last output's gradient: the gates' gradients in one pass per
  layer (`kernels.gru_backward`), then three matmuls per layer;
- `LossGrad`: the loss of the sampled scores and d loss / d scores in one pass (cross-entropy with the
  formula of `sessrec.training.losses.cross_entropy`; BPR-max with torch's ELU, target-excluded softmax
  and sigmoid, then `kernels.bpr_max_grad`), every row active.

Reference: autograd through `sessrec.models.gru` and `sessrec.training.losses`, which
tests/training/test_fused.py and tests/training/test_fused_prnn.py train against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sessrec import kernels
from sessrec.models.gru import dropout_mask
from sessrec.training.losses import EPS, LOG_EPS, elu, negative_softmax

FUSED_LOSSES = ("cross-entropy", "bpr-max")

Saved = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor]  # x, h, n, rz, gh, mask, out


def gru_forward(
    cells: Sequence[nn.GRUCell], dropout_hidden: float, x: Tensor, hidden: Sequence[Tensor]
) -> tuple[Tensor, list[Saved]]:
    """x (B, I), hidden [(B, H_l)] -> the last output (B, H_L) after dropout, and per layer the saved
    (x, h, n, rz, gh, mask, out) (`out`: the new carried state)."""
    saved = []
    for cell, h in zip(cells, hidden):
        size = cell.hidden_size
        gi = torch.addmm(cell.bias_ih.detach(), x, cell.weight_ih.detach().t())  # (B, 3H) [r | z | n]
        gh = torch.addmm(cell.bias_hh.detach(), h, cell.weight_hh.detach().t())  # (B, 3H)
        rz = torch.sigmoid(gi[:, : 2 * size] + gh[:, : 2 * size])  # (B, 2H) [r | z]
        n = torch.tanh(torch.addcmul(gi[:, 2 * size :], rz[:, :size], gh[:, 2 * size :]))  # (B, H)
        new = torch.addcmul(n, rz[:, size:], h - n)  # (B, H) (1 - z) n + z h
        mask = dropout_mask(new, dropout_hidden)  # (B, H) or None
        out = new if mask is None else new * mask  # (B, H) the carried state and the next input
        saved.append((x, h, n, rz, gh, mask, out))
        x = out
    return x, saved


def gru_backward(
    cells: Sequence[nn.GRUCell], grad: Tensor, saved: Sequence[Saved], need_input_grad: bool = True
) -> tuple[list[tuple[Tensor, Tensor, Tensor, Tensor]], Tensor | None]:
    """grad (B, >=H_L) of the last output -> [(dW_ih, dW_hh, db_ih, db_hh)] per cell (first layer first)
    and d x (B, I) of the first layer's input (None when not `need_input_grad`)."""
    grads = []
    last = len(cells) - 1
    for layer, cell, (x, h, n, rz, gh, mask, _) in zip(range(last, -1, -1), reversed(cells), reversed(saved)):
        size = 3 * cell.hidden_size
        grad_i, grad_h = torch.empty(x.shape[0], size), torch.empty(x.shape[0], size)  # (B, 3H)
        bias_i, bias_h = torch.empty(size), torch.empty(size)  # (3H,)
        if not kernels.gru_backward(grad, mask, h, n, rz, gh, grad_i, grad_h, bias_i, bias_h):
            raise RuntimeError("hand-written step: the GRU backward kernel refused its tensors")
        weight_i = torch.mm(grad_i.t(), x)  # (3H, I)
        weight_h = torch.mm(grad_h.t(), h)  # (3H, H)
        grads.append((weight_i, weight_h, bias_i, bias_h))
        if layer > 0 or need_input_grad:
            grad = torch.mm(grad_i, cell.weight_ih.detach())  # (B, I): the previous layer's output grad
    return grads[::-1], (grad if need_input_grad else None)


class LossGrad:
    """loss(scores) and d loss / d scores for sampled scores (B, C), row i's target in column i.

    Args:
        loss: "cross-entropy" or "bpr-max".
        bpreg, elu_param: BPR-max's options (see `sessrec.training.losses.bpr_max`).
    """

    def __init__(self, loss: str, bpreg: float = 1.0, elu_param: float = 0.5) -> None:
        if loss not in FUSED_LOSSES:
            raise ValueError(f"the hand-written step supports the losses {FUSED_LOSSES}, not {loss!r}")
        self.loss, self.bpreg, self.elu_param = loss, bpreg, elu_param

    def __call__(self, scores: Tensor, grad: Tensor) -> float:
        """scores (B, C) logits (offsets included) -> the mean loss; d loss / d scores written to `grad`."""
        if self.loss == "cross-entropy":
            probs = torch.ops.aten._softmax.out(scores, 1, False, out=grad)  # (B, C)
            loss = kernels.cross_entropy_grad(probs, LOG_EPS)  # probs now holds the gradient
            if loss is None:
                raise RuntimeError("hand-written step: the cross-entropy kernel refused its tensors")
            return loss
        alpha = self.elu_param  # BPR-max: the transcendental parts by torch, the gradient in one kernel
        r = elu(scores, alpha) if alpha > 0 else scores  # (B, C) (vectorised on CPU: sessrec.training.losses)
        s = negative_softmax(r, None)  # (B, C) the target excluded
        sig = torch.sigmoid(r.diagonal().unsqueeze(1) - r)  # (B, C) sigmoid(r_target - r_j)
        loss = kernels.bpr_max_grad(scores, r, s, sig, float(alpha), float(self.bpreg), EPS, grad)
        if loss is None:
            raise RuntimeError("hand-written step: the BPR-max kernel refused its tensors")
        return loss
