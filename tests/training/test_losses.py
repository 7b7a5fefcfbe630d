"""Sampled losses against hand-computed values, per-row reference loops, masking and option checks."""

from __future__ import annotations

import math

import pytest
import torch

from sessrec.training.losses import LOSS_NAMES, bpr_max, cross_entropy, loss_by_name
from sessrec.training.sampler import log_q_columns

E = math.e


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# B=2, S=2. Row 0's target is column 0 (score 1), row 1's target is column 1 (score 2).
SCORES = [[1.0, 0.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.0]]


def scores_2x4() -> torch.Tensor:
    return torch.tensor(SCORES, dtype=torch.float64)


def test_cross_entropy_by_hand() -> None:
    # row 0: -log(e^1 / (e^1 + e^0 + e^0 + e^-1)) = log(2.71828 + 2 + 0.36788) - 1 = 1.62652 - 1 = 0.62652
    # row 1: -log(e^2 / (e^0 + e^2 + e^1 + e^0)) = log(2 + 7.38906 + 2.71828) - 2 = 2.49382 - 2 = 0.49382
    row0 = math.log(E + 2 + 1 / E) - 1
    row1 = math.log(2 + E**2 + E) - 2
    got = loss_by_name("cross-entropy")(scores_2x4())
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)  # 0.56017


def test_cross_entropy_logq_by_hand() -> None:
    log_q = torch.tensor([0.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    # z = scores - 1.0 * log_q: row 0 = [1, -1, 0, -3], row 1 = [0, 1, 1, -2]
    # row 0: log(e + e^-1 + 1 + e^-3) - 1 = log(4.13595) - 1 = 0.41972
    # row 1: log(1 + e + e + e^-2) - 1 = log(6.57190) - 1 = 0.88280
    row0 = math.log(E + 1 / E + 1 + E**-3) - 1
    row1 = math.log(1 + 2 * E + E**-2) - 1
    got = loss_by_name("cross-entropy", logq=1.0)(scores_2x4(), log_q=log_q)
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)  # 0.65126
    # without log_q (evaluation) the correction is off
    assert loss_by_name("cross-entropy", logq=1.0)(scores_2x4()).item() == pytest.approx(0.5601675420543, rel=1e-9)


def test_cross_entropy_epsilon_caps_the_loss() -> None:
    # p_target underflows: -log(0 + 1e-24) = 55.26, exactly like the reference
    scores = torch.tensor([[-200.0, 0.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss = cross_entropy(scores)
    # row 0: -log(e^-200 / (e^-200 + 1) + 1e-24) ~ -log(1e-24); row 1: -log(0.5)
    assert loss.item() == pytest.approx((-math.log(math.exp(-200) + 1e-24) + math.log(2)) / 2, rel=1e-12)
    loss.backward()
    assert abs(scores.grad[0, 0].item()) < 1e-60  # gradient vanishes like the reference's


def test_bpr_max_by_hand() -> None:
    # elu_param=0 (linear), bpreg=1. Row 0: target 1, negatives [0, 0, -1];
    # s = [1, 1, e^-1] / (2 + e^-1) = [0.42232, 0.42232, 0.15536]
    # sum s_j sigmoid(1 - r_j) = 2 * 0.42232 * 0.73106 + 0.15536 * 0.88080 = 0.75432 -> -log = 0.28193
    # reg = 0.15536 * (-1)^2 = 0.15536; row 0 = 0.43729
    z0 = 2 + 1 / E
    row0 = -math.log((2 * sig(1) + sig(2) / E) / z0 + 1e-24) + (1 / E) / z0
    # Row 1: target 2, negatives [0, 1, 0]; s = [1, e, 1] / (2 + e) = [0.21194, 0.57612, 0.21194]
    # sum s_j sigmoid(2 - r_j) = 2 * 0.21194 * 0.88080 + 0.57612 * 0.73106 = 0.79453 -> -log = 0.22999
    # reg = 0.57612 * 1^2; row 1 = 0.80612
    z1 = 2 + E
    row1 = -math.log((2 * sig(2) + E * sig(1)) / z1 + 1e-24) + E / z1
    got = loss_by_name("bpr-max", bpreg=1.0, elu_param=0.0)(scores_2x4())
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)  # 0.62171


def test_bpr_max_elu_by_hand() -> None:
    # ELU(0.5) changes only the -1: 0.5 * (e^-1 - 1) = -0.31606; bpreg = 2
    m = 0.5 * (1 / E - 1)
    z0 = 2 + math.exp(m)
    row0 = -math.log((2 * sig(1) + math.exp(m) * sig(1 - m)) / z0 + 1e-24) + 2 * math.exp(m) * m * m / z0
    z1 = 2 + E
    row1 = -math.log((2 * sig(2) + E * sig(1)) / z1 + 1e-24) + 2 * E / z1
    got = loss_by_name("bpr-max", bpreg=2.0, elu_param=0.5)(scores_2x4())
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_top1_by_hand() -> None:
    # Row 0 (target 1), per column sigmoid(r_j - 1) + sigmoid(r_j^2):
    #   [0.5 + 0.73106, 0.26894 + 0.5, 0.26894 + 0.5, 0.11920 + 0.73106] sums to 3.61920;
    #   minus the target's sigmoid(1^2) = 0.73106 -> 2.88814; / 4 columns = 0.72204
    row0 = (0.5 + sig(1) + 2 * (sig(-1) + 0.5) + sig(-2) + sig(1) - sig(1)) / 4
    # Row 1 (target 2): [0.11920 + 0.5, 0.5 + 0.98201, 0.26894 + 0.73106, 0.11920 + 0.5] = 3.72042;
    #   minus sigmoid(4) = 0.98201 -> 2.73841; / 4 = 0.68460
    row1 = (2 * (sig(-2) + 0.5) + 0.5 + sig(4) + sig(-1) + sig(1) - sig(4)) / 4
    assert loss_by_name("top1")(scores_2x4()).item() == pytest.approx((row0 + row1) / 2, rel=1e-12)  # 0.70332


def test_top1_max_by_hand() -> None:
    # Row 0: s = [_, 0.42232, 0.42232, 0.15536]; terms [_, 0.76894, 0.76894, 0.85026] -> 0.78158
    row0 = (2 * (sig(-1) + 0.5) + (sig(-2) + sig(1)) / E) / (2 + 1 / E)
    # Row 1: s = [0.21194, _, 0.57612, 0.21194]; terms [0.61920, _, 1.0, 0.61920] -> 0.83859
    row1 = (2 * (sig(-2) + 0.5) + E * (sig(-1) + sig(1))) / (2 + E)
    assert loss_by_name("top1-max")(scores_2x4()).item() == pytest.approx((row0 + row1) / 2, rel=1e-12)  # 0.81008


def test_bpr_by_hand() -> None:
    # Row 0: -log sigmoid(1 - r_j) = [log 2, 0.31326, 0.31326, 0.12693] -> mean over 4 columns 0.36165
    row0 = (math.log(2) - 2 * math.log(sig(1)) - math.log(sig(2))) / 4
    # Row 1: -log sigmoid(2 - r_j) = [0.12693, log 2, 0.31326, 0.12693] -> 0.31507
    row1 = (math.log(2) - 2 * math.log(sig(2)) - math.log(sig(1))) / 4
    assert loss_by_name("bpr")(scores_2x4()).item() == pytest.approx((row0 + row1) / 2, rel=1e-12)  # 0.33836


# ---------------------------------------------------------------- per-row reference loops


def _row_reference(name: str, r: list[float], i: int, bpreg: float, elu: float, lq: list[float]) -> float:
    """One row's loss written as plainly as possible from the formulas (target index i)."""
    if name == "cross-entropy":
        z = [x - q for x, q in zip(r, lq)]
        return -math.log(math.exp(z[i]) / sum(math.exp(x) for x in z) + 1e-24)
    if name == "bpr-max" and elu > 0:
        r = [x if x >= 0 else elu * (math.exp(x) - 1) for x in r]
    neg = [j for j in range(len(r)) if j != i]
    weights = {j: math.exp(r[j]) / sum(math.exp(r[k]) for k in neg) for j in neg}
    if name == "bpr-max":
        ranked = sum(weights[j] * sig(r[i] - r[j]) for j in neg)
        return -math.log(ranked + 1e-24) + bpreg * sum(weights[j] * r[j] ** 2 for j in neg)
    if name == "top1-max":
        return sum(weights[j] * (sig(r[j] - r[i]) + sig(r[j] ** 2)) for j in neg)
    if name == "top1":
        total = sum(sig(r[j] - r[i]) + sig(r[j] ** 2) for j in range(len(r)))
        return (total - sig(r[i] ** 2)) / len(r)
    return -sum(math.log(sig(r[i] - r[j])) for j in range(len(r))) / len(r)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_matches_per_row_reference(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 12, generator=g, dtype=torch.float64) * 2  # B=5, S=7
    log_q = torch.rand(12, generator=g, dtype=torch.float64) * 3 if name == "cross-entropy" else None
    logq = 0.7 if name == "cross-entropy" else 0.0
    loss = loss_by_name(name, bpreg=1.3, elu_param=0.5, logq=logq)
    lq = [logq * x for x in log_q.tolist()] if log_q is not None else [0.0] * 12
    rows = [_row_reference(name, scores[i].tolist(), i, 1.3, 0.5, lq) for i in range(5)]
    assert loss(scores, log_q=log_q).item() == pytest.approx(sum(rows) / 5, rel=1e-10)


# ---------------------------------------------------------------- masking and gradients


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_inactive_row_equals_removed_row_and_column(name: str) -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 5, generator=g, dtype=torch.float64)  # B=3, S=2
    scores[1, :] = 1e3  # garbage in the padding row must not leak
    scores[:, 1] = torch.tensor([7.0, 1e3, -3.0], dtype=torch.float64)  # and its column is not a negative
    log_q = torch.rand(5, generator=g, dtype=torch.float64)
    logq = 1.0 if name == "cross-entropy" else 0.0
    lq = log_q if logq else None
    loss = loss_by_name(name, logq=logq)
    active = torch.tensor([True, False, True])
    keep = torch.tensor([0, 2, 3, 4])
    reduced = scores[[0, 2]][:, keep]  # (2, 4)
    expected = loss(reduced, log_q=None if lq is None else lq[keep])
    assert loss(scores, active, lq).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_finite_and_zero_on_padding(name: str) -> None:
    g = torch.Generator().manual_seed(2)
    scores = (torch.randn(4, 9, generator=g) * 5).requires_grad_(True)
    active = torch.tensor([True, True, False, True])
    log_q = torch.rand(9, generator=g) if name == "cross-entropy" else None
    loss_by_name(name, logq=1.0 if log_q is not None else 0.0)(scores, active, log_q).backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[2] == 0).all() and (scores.grad[:, 2] == 0).all()


def _cross_entropy_autograd(scores: torch.Tensor, active: torch.Tensor | None, log_q: torch.Tensor | None,
                            logq: float) -> torch.Tensor:
    """The cross-entropy written with plain differentiable ops (the reference for the hand-written backward)."""
    offset = -logq * log_q if log_q is not None else torch.zeros(scores.shape[1], dtype=scores.dtype)
    if active is not None:
        valid = torch.cat([active, torch.ones(scores.shape[1] - scores.shape[0], dtype=torch.bool)])
        offset = offset.masked_fill(~valid, float("-inf"))
    logp = torch.log_softmax(scores + offset, dim=1).diagonal()  # (B,)
    per_row = -torch.log(logp.exp() + 1e-24)  # (B,)
    if active is None:
        return per_row.mean()
    return torch.where(active, per_row, 0.0).sum() / active.sum().clamp_min(1)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cross_entropy_gradient_equals_autograd_reference(masked: bool, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(4)
    scores = (torch.randn(6, 15, generator=g, dtype=torch.float64) * 3).to(dtype)
    scores[2, 2] = -60.0  # a target with p ~ 1e-27: the 1e-24 floor shapes its gradient
    log_q = torch.rand(15, generator=g, dtype=torch.float64).to(dtype)
    active = torch.tensor([True, True, True, False, True, False]) if masked else None
    got_scores = scores.clone().requires_grad_(True)
    ref_scores = scores.clone().requires_grad_(True)
    got = cross_entropy(got_scores, active, log_q, logq=0.8)
    ref = _cross_entropy_autograd(ref_scores, active, log_q, logq=0.8)
    (got * 1.7).backward()
    (ref * 1.7).backward()
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert got.item() == pytest.approx(ref.item(), rel=tol)
    assert torch.allclose(got_scores.grad, ref_scores.grad, rtol=tol, atol=tol * 1e-3)
    if masked:
        assert (got_scores.grad[[3, 5]] == 0).all() and (got_scores.grad[:, [3, 5]] == 0).all()


def test_all_inactive_gives_zero() -> None:
    scores = torch.randn(2, 4, requires_grad=True)
    out = loss_by_name()(scores, torch.tensor([False, False]))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(scores.grad).all()


def test_float32_matches_float64() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(8, 40, generator=g, dtype=torch.float64) * 3
    for name in LOSS_NAMES:
        loss = loss_by_name(name)
        assert loss(scores.float()).item() == pytest.approx(loss(scores).item(), rel=1e-5)


def test_bpr_max_functional_defaults() -> None:
    scores = scores_2x4()
    assert bpr_max(scores).item() == pytest.approx(loss_by_name("bpr-max")(scores).item(), rel=1e-15)


# ---------------------------------------------------------------- logQ columns and options


def test_log_q_columns() -> None:
    counts = torch.tensor([1.0, 10.0, 100.0, 4.0])
    log_pop = counts.log()
    out = log_q_columns(log_pop, torch.tensor([1, 1, 2]), torch.tensor([3, 0]), alpha=0.5)
    # targets: log 10, log 10, log 100; samples: log(4^0.5) = log 2, log(1^0.5) = 0
    expected = torch.tensor([math.log(10), math.log(10), math.log(100), math.log(2), 0.0])
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("name", ["bpr-max", "top1", "top1-max", "bpr"])
def test_logq_rejected_for_pairwise_losses(name: str) -> None:
    with pytest.raises(ValueError, match="logq"):
        loss_by_name(name, logq=1.0)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"name": "softmax"}, "loss name"),
        ({"logq": -1.0}, "logq"),
        ({"name": "bpr-max", "bpreg": -0.1}, "bpreg"),
        ({"name": "bpr-max", "elu_param": -1.0}, "elu_param"),
    ],
)
def test_invalid_options(kwargs: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        loss_by_name(**kwargs)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="scores"):
        loss_by_name()(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="active"):
        loss_by_name()(torch.zeros(2, 4), torch.ones(3, dtype=torch.bool))


def test_cpu_elu_equals_f_elu_in_value_and_gradient() -> None:
    from sessrec.training.losses import elu

    torch.manual_seed(0)  # fixed inputs: the tolerance is for these values
    x = torch.cat([torch.randn(500) * 3, torch.tensor([0.0, -0.0, 1e-30, -1e-30, -1e-6, 50.0, -50.0])])
    for alpha in (0.5, 1.0, 2.0):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        fast, ref = elu(a, alpha), torch.nn.functional.elu(b, alpha=alpha)
        assert torch.allclose(fast, ref, rtol=1e-6, atol=1e-7)
        weights = torch.randn_like(x)
        (fast * weights).sum().backward()
        (ref * weights).sum().backward()
        assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=5e-7)  # the slope is ELU(x) + alpha: rounding x alpha


@pytest.mark.parametrize("name", ["bpr-max", "top1-max", "cross-entropy", "top1", "bpr"])
def test_one_active_row_without_extra_samples_is_finite(name) -> None:
    """The end of an epoch: one active session and n_sample 0 leave that row without a negative."""
    scores = torch.tensor([[1.0, 0.3], [0.2, 0.5]], requires_grad=True)  # (B, B+S) with S = 0
    active = torch.tensor([True, False])
    loss = loss_by_name(name)(scores, active)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()
    if name in ("bpr-max", "top1-max"):  # the row has nothing to rank against: no loss, no gradient
        assert loss.item() == 0.0 and not scores.grad.any()
    one = torch.tensor([[0.7]], requires_grad=True)  # batch of one, no samples
    loss_by_name(name)(one).backward()
    assert torch.isfinite(one.grad).all()
