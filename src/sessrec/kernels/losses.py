"""The sampled losses' gradients in one pass over the (B, C) logits (numba, `sessrec.kernels.losses_jit`).

The fused GRU4Rec step (`sessrec.training.fused`) scores B targets against C = B + S columns, row i's
target in column i, and needs loss and d loss / d logits without autograd:

* `gather_columns`: the scored items' rows [W | b] of the output table with each column's logit offset
  appended ((C, D+1): one matmul then adds bias and offset), prefetching the scattered rows. Reference:
  `torch.index_select` of the rows and the logQ offsets of `sessrec.training.sampler.log_q_columns`.
* `cross_entropy_grad`: from torch's softmax, the loss -log(p_ii + EPS) and its gradient, in place.
  Reference: `sessrec.training.losses.cross_entropy` (its autograd function `_CrossEntropy`).
* `bpr_max_grad`: from torch's ELU, target-excluded softmax and sigmoid, BPR-max's loss and gradient.
  Reference: `sessrec.training.losses.bpr_max` under autograd.

tests/kernels/test_kernels.py and tests/training/test_fused.py compare them with the references. Each
returns its "does not apply" value (None, False) when numba is off or the tensors are not contiguous
float32 CPU tensors. Ids and shapes are the caller's to guarantee (the kernels do not check bounds).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sessrec.kernels.loader import as_numpy, fits, load

__all__ = ["bpr_max_grad", "cross_entropy_grad", "gather_columns"]


def gather_columns(
    table: Tensor, targets: Tensor, samples: Tensor, off_targets: Tensor, off_samples: Tensor, out: Tensor
) -> bool:
    """out[k] = [table[id_k] | offset(id_k)] for the ids (targets, then samples), in place.

    table (N, D) float32; targets (B,), samples (S,) int64 ids in [0, N) (not checked); off_targets,
    off_samples (N,) float32 per-item offsets, the first for the targets' columns, the second for the
    samples'; out (B+S, D+1) float32. False (nothing done) when the kernel does not apply.
    """
    jit = load("losses_jit")
    if jit is None or not fits(table, off_targets, off_samples, out):
        return False
    if targets.dtype != torch.int64 or samples.dtype != torch.int64:
        return False
    jit.gather_columns(as_numpy(table), targets.numpy(), samples.numpy(), as_numpy(off_targets),
                       as_numpy(off_samples), as_numpy(out))
    return True


def cross_entropy_grad(probs: Tensor, log_eps: float) -> float | None:
    """The mean cross-entropy of softmax probabilities probs (B, C >= B), row i's target in column i;
    probs is overwritten with d loss / d logits. None (probs untouched) when the kernel does not apply.

    loss = mean_i -log(p_ii + eps), computed as -log eps - softplus(log p_ii - log eps) (log_eps = log eps,
    `sessrec.training.losses.LOG_EPS`); d loss / d z_ij = w_i (p_ij - [i == j]) with
    w_i = sigmoid(log p_ii - log eps) / B.
    """
    jit = load("losses_jit")
    if jit is None or not fits(probs):
        return None
    return jit.cross_entropy_grad(as_numpy(probs), log_eps)


def bpr_max_grad(
    scores: Tensor, r: Tensor, s: Tensor, sig: Tensor, elu_param: float, bpreg: float, eps: float,
    grad: Tensor,
) -> float | None:
    """The mean BPR-max loss over scores (B, C), row i's target in column i, every row active; its
    gradient d loss / d scores is written into grad (B, C). None when the kernel does not apply.

    r (B, C) = ELU(scores) (scores itself when elu_param == 0); s (B, C) the softmax of r over each row
    with the target excluded (s_ii = 0); sig (B, C) = sigmoid(r_ii - r_ij). Per row
    loss_i = -log(sum_j s_j sig_j + eps) + bpreg sum_j s_j r_j^2 (`sessrec.training.losses.bpr_max`).
    """
    jit = load("losses_jit")
    if jit is None or not fits(scores, r, s, sig, grad):
        return None
    return jit.bpr_max_grad(as_numpy(scores), as_numpy(r), as_numpy(s), as_numpy(sig), float(elu_param),
                            float(bpreg), eps, as_numpy(grad))
