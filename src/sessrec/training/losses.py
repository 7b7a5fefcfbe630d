"""Sampled ranking losses over a session-parallel score matrix, as in GRU4Rec.

Every loss takes ``scores`` of shape (B, B+S): column j < B is the target of row j (so the diagonal
holds each row's target score and the other rows' targets are in-batch negatives) and columns B.. are
S extra negatives shared by the whole batch. ``active`` (B,) bool marks real rows; inactive rows are
padding: they add no loss and their target COLUMNS are not negatives for any other row. The result is
the sum over active rows divided by max(n_active, 1); with every row active this is the reference's
normalisation by the batch size.

Facts taken from the reference implementations (hidasib/GRU4Rec_PyTorch_Official ``gru4rec_pytorch.py``
and the Theano hidasib/GRU4Rec ``gru4rec.py``, read for facts only):

- cross-entropy: softmax over the full row, ``-log(p_target + 1e-24)``. Computed here as
  ``-log(1e-24) - softplus(log p - log(1e-24))`` (the same value, finite as p -> 0), so the loss is capped
  at ``-log(1e-24) ~ 55.3`` and its gradient vanishes as p -> 0, exactly like the reference.
- logQ (cross-entropy only, training only): ``scores - logq * log(Q)`` where Q is the RAW training count
  of the item for the B in-batch target columns and the raw count raised to ``sample_alpha`` for the S
  extra samples (see `sessrec.training.sampler.log_q_columns`). Accidental hits are not masked.
- BPR-max: ELU(elu_param) on the scores first (linear if 0); the weights s are a softmax over the row
  with the target excluded; ``-log(sum_j s_j sigmoid(r_i - r_j) + 1e-24) + bpreg * sum_j s_j r_j^2``,
  with r the ELU-transformed scores everywhere.
- TOP1-max: ``sum_j s_j (sigmoid(r_j - r_i) + sigmoid(r_j^2))`` with the same target-excluded softmax.
- TOP1 (Theano reference): ``mean_j [sigmoid(r_j - r_i) + sigmoid(r_j^2)] - sigmoid(r_i^2) / n_cols``: the
  mean runs over ALL n_cols columns including the target (whose ranking term is the constant
  sigmoid(0) = 0.5), only the target's regulariser is removed.
- BPR (Theano reference): ``-mean_j log sigmoid(r_i - r_j)`` over ALL columns including the target
  (a constant log 2 with zero gradient). The ICLR 2016 paper and the older Theano code average over the
  columns (used here); the last Theano version sums over them instead, which is the same loss scaled
  by n_cols (Adagrad is nearly scale-invariant, so this matters little).
With masking, n_cols counts the valid columns (active targets + S samples).

Full softmax (``SessionRecModule(negatives="all")``): every loss also takes ``targets`` (B,), the column
of each row's target in scores (B, C) over a candidate set shared by all rows (all N items, C = N). The
formulas are the same with "the target" read at ``scores[i, targets[i]]`` instead of the diagonal; no
column is masked (a padding row's target is not a negative for anyone here: the columns are the
catalogue, not the rows' targets), ``active`` only drops rows. Nothing larger than (B, C) is built.

Deliberate differences: no ELU (final activation) for TOP1 / TOP1-max / BPR (the PyTorch reference only
offers cross-entropy and BPR-max; the Theano one had a separate ``final_act`` option). The reference
divides by the configured batch size even when the batch shrinks at the end of an epoch; here padding
rows are masked and the sum is divided by the number of active rows.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sessrec.checks import check_choice, check_number
from sessrec.errors import ConfigError

LossName = Literal["cross-entropy", "bpr-max", "top1", "top1-max", "bpr"]  # the built-in `Loss.name`s
Negatives = Literal["sampled", "all"]  # SessionRecModule's choice: sampled columns or the full softmax
LOSS_NAMES: tuple[str, ...] = get_args(LossName)
EPS = 1e-24  # inside the logs of cross-entropy and BPR-max (-log(p + EPS)), as in the reference
LOG_EPS = math.log(EPS)

__all__ = [
    "EPS",
    "LOG_EPS",
    "LOSS_NAMES",
    "LossName",
    "Negatives",
    "BPR",
    "BPRMax",
    "CrossEntropy",
    "LOSSES",
    "Loss",
    "TOP1",
    "TOP1Max",
    "loss_by_name",
    "make_loss",
    "bpr",
    "bpr_max",
    "cross_entropy",
    "elu",
    "negative_softmax",
    "top1",
    "top1_max",
]


def _check(scores: Tensor, active: Tensor | None, targets: Tensor | None = None) -> Tensor | None:
    """Validate the shapes; returns the active mask of the COLUMNS' rows (None with ``targets``: the
    columns are then a shared candidate set, none of them masked)."""
    if targets is None and (scores.dim() != 2 or scores.shape[1] < scores.shape[0]):
        raise ValueError(f"scores must be (B, B+S) with S >= 0, got {tuple(scores.shape)}")
    if targets is not None and (scores.dim() != 2 or targets.shape != scores.shape[:1]):
        got = tuple(targets.shape)
        raise ValueError(f"targets must be ({scores.shape[0]},) for scores (B, C), got {got}")
    if active is not None and active.shape != scores.shape[:1]:
        raise ValueError(f"active must be ({scores.shape[0]},), got {tuple(active.shape)}")
    return active if targets is None else None


def _target(x: Tensor, targets: Tensor | None) -> Tensor:
    """(B, C) -> (B,): each row's target entry, on the diagonal or at column ``targets[i]``."""
    return x.diagonal() if targets is None else x.gather(1, targets.unsqueeze(1)).squeeze(1)


def _column_valid(active: Tensor, n_cols: int) -> Tensor:
    """(B+S,) bool: active target columns and every sample column."""
    samples = active.new_ones(n_cols - active.shape[0])  # (S,)
    return torch.cat([active, samples])  # (B+S,)


def _column_offset(active: Tensor | None, n_cols: int, log_q: Tensor | None, logq: float) -> Tensor | None:
    """(B+S,) additive column offset: -logq * log_q, and -inf on the columns of inactive rows."""
    offset = None
    if log_q is not None and logq != 0.0:
        offset = log_q * (-logq)  # (B+S,)
    if active is not None:
        mask = torch.zeros(n_cols, dtype=torch.float32, device=active.device)  # (B+S,)
        mask = mask.masked_fill(~_column_valid(active, n_cols), float("-inf"))  # (B+S,)
        offset = mask if offset is None else offset + mask
    return offset


def _reduce(per_row: Tensor, active: Tensor | None) -> Tensor:
    """Sum over active rows / max(n_active, 1); (B,) -> ()."""
    if active is None:
        return per_row.sum() / per_row.shape[0]
    kept = torch.where(active, per_row, per_row.new_zeros(()))  # (B,)
    return kept.sum() / active.sum().clamp_min(1)


class _CrossEntropy(torch.autograd.Function):
    """The reduced cross-entropy of :func:`cross_entropy` with a hand-written backward.

    Forward: z = scores + offset, p = softmax(z), per row -log(p_target + 1e-24), reduced as
    :func:`_reduce`. Backward: d loss / d z_ij = w_i * (p_ij - [i == j]) with
    w_i = p_ii / (p_ii + 1e-24) / n_active (0 on inactive rows): one pass over the saved (B, B+S)
    probabilities instead of autograd's dozen nodes (one-hot, log_softmax backward, ...).
    """

    @staticmethod
    def forward(
        ctx, scores: Tensor, offset: Tensor | None, active: Tensor | None, targets: Tensor | None = None
    ) -> Tensor:
        z = scores if offset is None else scores + offset  # (B, B+S)
        p = torch.softmax(z, dim=1)  # (B, B+S)
        x = _target(p, targets).log() - LOG_EPS  # (B,) log p_target - log eps (-inf when p underflows)
        # -log(p + eps) = -log(eps) - softplus(log p - log eps), exact and finite for p -> 0.
        per_row = -LOG_EPS - F.softplus(x)  # (B,)
        weight = torch.sigmoid(x)  # (B,) p / (p + eps) = -d per_row / d log p_target
        if active is None:
            n = per_row.shape[0]
        else:
            n = active.sum().clamp_min(1)
            per_row = torch.where(active, per_row, per_row.new_zeros(()))  # (B,)
            weight = torch.where(active, weight, weight.new_zeros(()))  # (B,)
        ctx.save_for_backward(p, weight / n, targets)
        ctx.has_active = active is not None
        return per_row.sum() / n

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        p, weight, targets = ctx.saved_tensors
        weight = weight * grad  # (B,)
        grad_z = p * weight.unsqueeze(1)  # (B, B+S) w_i p_ij
        if ctx.has_active:  # an inactive row may be all -inf (NaN probabilities): its gradient is 0
            grad_z.masked_fill_(weight.unsqueeze(1) == 0, 0.0)
        if targets is None:
            grad_z.diagonal().sub_(weight)
        else:
            grad_z.scatter_add_(1, targets.unsqueeze(1), -weight.unsqueeze(1))  # (B, C) -w_i at the target
        grad_offset = grad_z.sum(0) if ctx.needs_input_grad[1] else None  # (B+S,)
        return grad_z, grad_offset, None, None


def cross_entropy(
    scores: Tensor, active: Tensor | None = None, log_q: Tensor | None = None, logq: float = 0.0,
    targets: Tensor | None = None,
) -> Tensor:
    """Softmax cross-entropy, the target on the diagonal (or at ``targets``): mean -log(p_target + 1e-24).

    ``log_q`` (B+S,) from `sessrec.training.sampler.log_q_columns` is applied as ``scores - logq * log_q`` (pass it in
    training only).
    """
    columns = _check(scores, active, targets)
    offset = _column_offset(columns, scores.shape[1], log_q, logq)
    return _CrossEntropy.apply(scores, offset, active, targets)


def negative_softmax(r: Tensor, active: Tensor | None, targets: Tensor | None = None) -> Tensor:
    """Softmax over each row with the target (diagonal, or ``targets``) and inactive columns excluded
    (``active`` masks columns here: pass None for a shared candidate set); (B, B+S). A row left without
    any negative (one active row and no extra samples) gets weights 0, not NaN."""
    offset = _column_offset(active, r.shape[1], None, 0.0)
    logits = r.clone() if offset is None else r + offset  # (B, B+S)
    if targets is None:
        logits.diagonal().fill_(float("-inf"))
    else:
        logits.scatter_(1, targets.unsqueeze(1), float("-inf"))
    if offset is None and logits.shape[1] > 1:  # every row has a negative: the plain softmax
        return torch.softmax(logits, dim=1)  # (B, B+S)
    empty = torch.isneginf(logits).all(dim=1, keepdim=True)  # (B, 1) rows without a negative
    return torch.softmax(logits.masked_fill(empty, 0.0), dim=1).masked_fill(empty, 0.0)  # (B, B+S)


class _CpuElu(torch.autograd.Function):
    """ELU as ``exp(min(x, 0)) - 1`` (times alpha) plus ``max(x, 0)``: torch's CPU `F.elu` evaluates expm1
    element by element (measured 1.5 ms for a (64, 2112) matrix on 1 thread of the AMD VM, against
    0.14 ms here); the values agree to ~3e-8 (exp - 1 loses relative precision only where |x| is tiny,
    where the value itself is tiny). Backward: 1 where x > 0, ELU(x) + alpha elsewhere (as F.elu's)."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        r = x.clamp(max=0).exp_().sub_(1).mul_(alpha).add_(x.clamp(min=0))  # (B, C)
        ctx.save_for_backward(x, r)
        ctx.alpha = alpha
        return r

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x, r = ctx.saved_tensors
        slope = (r + ctx.alpha).masked_fill_(x > 0, 1.0)  # (B, C) d ELU / d x
        return grad * slope, None


def elu(x: Tensor, alpha: float) -> Tensor:
    """`F.elu(x, alpha)`; on CPU through a vectorised exp instead of expm1 (see `_CpuElu`)."""
    return _CpuElu.apply(x, alpha) if x.device.type == "cpu" else F.elu(x, alpha=alpha)


def bpr_max(
    scores: Tensor, active: Tensor | None = None, bpreg: float = 1.0, elu_param: float = 0.5,
    targets: Tensor | None = None,
) -> Tensor:
    """BPR-max (CIKM 2018): -log sum_j s_j sigmoid(r_i - r_j) + bpreg * sum_j s_j r_j^2."""
    columns = _check(scores, active, targets)
    r = elu(scores, elu_param) if elu_param > 0 else scores  # (B, B+S)
    s = negative_softmax(r, columns, targets)  # (B, B+S)
    target = _target(r, targets).unsqueeze(1)  # (B, 1)
    ranked = (torch.sigmoid(target - r) * s).sum(dim=1)  # (B,)
    reg = (r.square() * s).sum(dim=1)  # (B,)
    per_row = -torch.log(ranked + EPS) + bpreg * reg  # (B,)
    if columns is not None or s.shape[1] == 1:  # a row without negatives has nothing to rank against
        per_row = torch.where(s.sum(dim=1) > 0, per_row, per_row.new_zeros(()))
    return _reduce(per_row, active)


def top1_max(scores: Tensor, active: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
    """TOP1-max (CIKM 2018): sum_j s_j (sigmoid(r_j - r_i) + sigmoid(r_j^2)), s excluding the target."""
    columns = _check(scores, active, targets)
    s = negative_softmax(scores, columns, targets)  # (B, B+S)
    target = _target(scores, targets).unsqueeze(1)  # (B, 1)
    terms = torch.sigmoid(scores - target) + torch.sigmoid(scores.square())  # (B, B+S)
    return _reduce((terms * s).sum(dim=1), active)


def _column_mean(terms: Tensor, active: Tensor | None) -> tuple[Tensor, Tensor | float]:
    """Row sums of ``terms`` over valid columns and the number of valid columns."""
    if active is None:
        return terms.sum(dim=1), float(terms.shape[1])  # (B,)
    weight = _column_valid(active, terms.shape[1]).to(terms.dtype)  # (B+S,)
    return terms @ weight, weight.sum()  # (B,), ()


def top1(scores: Tensor, active: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
    """TOP1 (ICLR 2016): mean_j [sigmoid(r_j - r_i) + sigmoid(r_j^2)] without the target's regulariser."""
    columns = _check(scores, active, targets)
    target = _target(scores, targets).unsqueeze(1)  # (B, 1)
    terms = torch.sigmoid(scores - target) + torch.sigmoid(scores.square())  # (B, B+S)
    total, n_cols = _column_mean(terms, columns)  # (B,)
    per_row = (total - torch.sigmoid(target.squeeze(1).square())) / n_cols  # (B,)
    return _reduce(per_row, active)


def bpr(scores: Tensor, active: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
    """BPR (ICLR 2016): -mean_j log sigmoid(r_i - r_j), the mean over all valid columns."""
    columns = _check(scores, active, targets)
    target = _target(scores, targets).unsqueeze(1)  # (B, 1)
    terms = F.logsigmoid(target - scores)  # (B, B+S)
    total, n_cols = _column_mean(terms, columns)  # (B,)
    return _reduce(-total / n_cols, active)


class Loss(nn.Module):
    """Base of the sampled losses: `forward(scores, active=None, log_q=None, targets=None)` -> () (the
    shapes in the module docstring). `name` is the loss's short name (`SessionRecModule(loss="...")`);
    defining a subclass registers it, so a new loss is one class, named in a config by its short name or
    as `loss: {class_path: my_module.MyLoss, init_args: {...}}`. `logq` is the logQ strength the module
    applies (0 for every loss but cross-entropy)."""

    name: ClassVar[str] = ""
    logq: float = 0.0

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in LOSSES and LOSSES[cls.name] is not cls:
                raise ValueError(f"loss name {cls.name!r} is defined twice ({LOSSES[cls.name].__qualname__})")
            LOSSES[cls.name] = cls

    def forward(self, scores: Tensor, active: Tensor | None = None, log_q: Tensor | None = None,
                targets: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_") and k != "training")


LOSSES: dict[str, type[Loss]] = {}


class CrossEntropy(Loss):
    """Softmax cross-entropy (`cross_entropy`). logq: strength of the logQ correction, applied when
    `forward` receives `log_q` (training, see `sessrec.training.sampler.log_q_columns`)."""

    name = "cross-entropy"

    def __init__(self, logq: float = 0.0) -> None:
        super().__init__()
        check_number("logq", logq, low=0)
        self.logq = logq

    def forward(self, scores, active=None, log_q=None, targets=None):
        return cross_entropy(scores, active, log_q, self.logq, targets)


class BPRMax(Loss):
    """BPR-max (`bpr_max`). bpreg: weight of the score regulariser; elu_param: alpha of the ELU applied to
    the scores first (0: linear)."""

    name = "bpr-max"

    def __init__(self, bpreg: float = 1.0, elu_param: float = 0.5) -> None:
        super().__init__()
        check_number("bpreg", bpreg, low=0)
        check_number("elu_param", elu_param, low=0)
        self.bpreg, self.elu_param = bpreg, elu_param

    def forward(self, scores, active=None, log_q=None, targets=None):
        return bpr_max(scores, active, self.bpreg, self.elu_param, targets)


class TOP1Max(Loss):
    """TOP1-max (`top1_max`)."""

    name = "top1-max"

    def forward(self, scores, active=None, log_q=None, targets=None):
        return top1_max(scores, active, targets)


class TOP1(Loss):
    """TOP1 (`top1`)."""

    name = "top1"

    def forward(self, scores, active=None, log_q=None, targets=None):
        return top1(scores, active, targets)


class BPR(Loss):
    """BPR (`bpr`)."""

    name = "bpr"

    def forward(self, scores, active=None, log_q=None, targets=None):
        return bpr(scores, active, targets)


def make_loss(loss: str | Loss, bpreg: float = 1.0, elu_param: float = 0.5, logq: float = 0.0) -> Loss:
    """`SessionRecModule`'s loss: `loss` itself when it is a `Loss` (then the flat options must keep their
    defaults: ConfigError), else `loss_by_name(loss, bpreg, elu_param, logq)`."""
    if not isinstance(loss, Loss):
        check_choice("loss", loss, tuple(LOSSES))
        return loss_by_name(loss, bpreg, elu_param, logq)
    if (bpreg, elu_param, logq) != (1.0, 0.5, 0.0):
        raise ConfigError(f"loss is a {type(loss).__name__} object: set bpreg / elu_param / logq in its init_args, "
                          "not on the model")
    return loss


def loss_by_name(name: str = "cross-entropy", bpreg: float = 1.0, elu_param: float = 0.5, logq: float = 0.0) -> Loss:
    """The loss called `name` (a registered `Loss.name`) with the flat options `SessionRecModule` takes:
    bpreg and elu_param go to "bpr-max", logq to "cross-entropy" (non-zero elsewhere: ConfigError)."""
    check_choice("loss name", name, tuple(LOSSES))
    for option, value in (("logq", logq), ("bpreg", bpreg), ("elu_param", elu_param)):
        check_number(option, value, low=0)
    if logq and name != "cross-entropy":
        raise ConfigError(f"logq={logq} is only supported with the 'cross-entropy' loss, not {name!r}")
    if name == "cross-entropy":
        return CrossEntropy(logq)
    if name == "bpr-max":
        return BPRMax(bpreg, elu_param)
    return LOSSES[name]()
