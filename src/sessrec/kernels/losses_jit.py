"""The sampled losses' gradients as numba kernels (wrapped, with the shapes and the checks, by
`sessrec.kernels.losses`; imported on first use by `sessrec.kernels.loader`).

* `gather_columns`: the scored items' rows of the output table with their logit offsets (prefetched
  ahead), the columns the fused GRU4Rec step multiplies with. Reference: `torch.index_select` of the
  table's rows and the logQ offsets of `sessrec.training.sampler.log_q_columns`.
* `cross_entropy_grad`: loss and d loss / d logits of the in-batch cross-entropy from its softmax, in
  place. Reference: `sessrec.training.losses.cross_entropy` (its autograd function `_CrossEntropy`).
* `bpr_max_grad`: loss and d loss / d scores of BPR-max from torch's ELU, softmax and sigmoid.
  Reference: `sessrec.training.losses.bpr_max`.
"""

from __future__ import annotations

import numpy as np

from sessrec.kernels.jit import AHEAD, jit, prefetch_row


@jit
def gather_columns(table, targets, samples, off_targets, off_samples, out):  # pragma: no cover - compiled
    # table (N, D); targets (B,), samples (S,) ids; off_* (N,) per-item column offsets; out (B+S, D+1):
    # out[k] = [table[id_k] | off(id_k)], off_targets for the first B columns, off_samples after
    b, n, d = targets.shape[0], targets.shape[0] + samples.shape[0], table.shape[1]
    for k in range(n):
        if k + AHEAD < n:
            prefetch_row(table, targets[k + AHEAD] if k + AHEAD < b else samples[k + AHEAD - b])
        if k < b:
            r = targets[k]
            out[k, d] = off_targets[r]
        else:
            r = samples[k - b]
            out[k, d] = off_samples[r]
        for j in range(d):
            out[k, j] = table[r, j]


@jit
def cross_entropy_grad(p, log_eps):  # pragma: no cover - compiled
    # p (B, C) softmax probabilities, row i's target in column i -> in place d loss / d logits, where
    # loss = mean_i -log(p_ii + eps) written as -log eps - softplus(log p_ii - log eps)
    # (sessrec.training.losses.cross_entropy);
    # returns the loss. d / d z_ij = w_i (p_ij - [i == j]), w_i = sigmoid(log p_ii - log eps) / B.
    batch = p.shape[0]
    total = 0.0
    for i in range(batch):
        x = np.log(p[i, i]) - log_eps
        softplus = x if x > 20.0 else np.log1p(np.exp(x))  # torch's softplus (threshold 20)
        total += -log_eps - softplus
        w = np.float32(1.0 / (1.0 + np.exp(-x)) / batch)
        for j in range(p.shape[1]):
            p[i, j] *= w
        p[i, i] -= w
    return total / batch


@jit
def bpr_max_grad(x, r, s, sig, elu_param, bpreg, eps, grad):  # pragma: no cover - compiled
    # BPR-max over (B, C) with row i's target in column i (sessrec.training.losses.bpr_max), every row active:
    # x the scores, r = ELU(x) (x itself when elu_param == 0), s the softmax of r over each row with the
    # target excluded (s_ii = 0), sig = sigmoid(r_ii - r). Per row, A = sum_j s_j sig_j,
    # R = sum_j s_j r_j^2, loss_i = -log(A + eps) + bpreg R. Writes d mean_i loss_i / d x into grad and
    # returns the mean loss. d loss_i / d r_j = -(s_j (sig_j - A) - s_j sig_j (1 - sig_j)) / (A + eps)
    # + bpreg (s_j (r_j^2 - R) + 2 s_j r_j) for j != i, and -sum_j s_j sig_j (1 - sig_j) / (A + eps) for
    # the target; d r / d x = 1 where x > 0, r + elu_param elsewhere (the ELU's derivative).
    batch, n = x.shape
    total = 0.0
    for i in range(batch):
        a = 0.0
        reg = 0.0
        dt = 0.0
        for j in range(n):
            sj, gj, rj = s[i, j], sig[i, j], r[i, j]
            a += sj * gj
            reg += sj * rj * rj
            dt += sj * gj * (1.0 - gj)
        total += -np.log(a + eps) + bpreg * reg
        inv = 1.0 / (a + eps)
        for j in range(n):
            sj, gj, rj = s[i, j], sig[i, j], r[i, j]
            g = -inv * (sj * (gj - a) - sj * gj * (1.0 - gj)) + bpreg * (sj * (rj * rj - reg) + 2.0 * sj * rj)
            if j == i:
                g -= inv * dt
            if elu_param > 0.0 and x[i, j] <= 0.0:
                g *= rj + elu_param
            grad[i, j] = g / batch
    return total / batch
