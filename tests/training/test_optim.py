"""AdagradMomentum: hand-computed steps, sparse vs dense paths, untouched rows, duplicates, state_dict."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sessrec.training.optim import AdagradMomentum, RowSparseAdam, sparse_rows_grad


def test_two_steps_by_hand() -> None:
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = AdagradMomentum([p], lr=0.1, momentum=0.5, eps=1e-6)
    g = torch.tensor([3.0, 4.0], dtype=torch.float64)
    # step 1: acc = [9, 16]; step = [3 / sqrt(9 + 1e-6), 4 / sqrt(16 + 1e-6)] ~ [0.99999994, 0.99999997]
    #         v = 0.5 * 0 - 0.1 * step ~ [-0.099999994, -0.099999997]; p ~ [0.900000006, -2.099999997]
    v1 = [-0.1 * 3 / math.sqrt(9 + 1e-6), -0.1 * 4 / math.sqrt(16 + 1e-6)]
    p.grad = g.clone()
    opt.step()
    assert p.tolist() == pytest.approx([1.0 + v1[0], -2.0 + v1[1]], rel=1e-14)
    # step 2: acc = [18, 32]; step = [3 / sqrt(18 + 1e-6), 4 / sqrt(32 + 1e-6)] ~ [0.70710676, 0.70710677]
    #         v = 0.5 * v1 - 0.1 * step ~ [-0.12071068, -0.12071068]; p ~ [0.77928933, -2.22071068]
    v2 = [0.5 * v1[0] - 0.1 * 3 / math.sqrt(18 + 1e-6), 0.5 * v1[1] - 0.1 * 4 / math.sqrt(32 + 1e-6)]
    p.grad = g.clone()
    opt.step()
    assert p.tolist() == pytest.approx([1.0 + v1[0] + v2[0], -2.0 + v1[1] + v2[1]], rel=1e-14)
    assert opt.state[p]["acc"].tolist() == [18.0, 32.0]
    assert opt.state[p]["mom"].tolist() == pytest.approx(v2, rel=1e-14)


def test_momentum_zero_is_adagrad_with_eps_inside_sqrt() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    expected, acc = p.detach().clone(), torch.zeros(6, 3, dtype=torch.float64)
    opt = AdagradMomentum([p], lr=0.3, momentum=0.0, eps=1e-6)
    for _ in range(4):
        grad = torch.randn(6, 3, generator=g, dtype=torch.float64)
        p.grad = grad.clone()
        opt.step()
        acc += grad**2
        expected -= 0.3 * grad / torch.sqrt(acc + 1e-6)
    assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-14)
    assert "mom" not in opt.state[p]


def _embedding_step_pair(momentum: float, ids_per_step: list[list[int]]) -> tuple[Any, ...]:
    """Train one table with sparse and with dense gradients: (w_sparse, w_dense, opt_s, opt_d, init)."""
    init = torch.randn(10, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w_sparse = init.clone().requires_grad_(True)
    w_dense = init.clone().requires_grad_(True)
    opt_s = AdagradMomentum([w_sparse], lr=0.2, momentum=momentum)
    opt_d = AdagradMomentum([w_dense], lr=0.2, momentum=momentum)
    for ids in ids_per_step:
        idx = torch.tensor(ids)
        for w, opt, sparse in ((w_sparse, opt_s, True), (w_dense, opt_d, False)):
            opt.zero_grad()
            (F.embedding(idx, w, sparse=sparse).sin().sum()).backward()
            opt.step()
    return w_sparse.detach(), w_dense.detach(), opt_s, opt_d, init


def test_sparse_matches_dense_on_touched_rows() -> None:
    # one step from zero state: dense and sparse agree exactly on touched rows (momentum irrelevant)
    w_s, w_d, _, _, init = _embedding_step_pair(0.4, [[1, 3, 3, 7]])
    assert torch.allclose(w_s[[1, 3, 7]], w_d[[1, 3, 7]], rtol=0, atol=1e-14)
    # without momentum they agree everywhere over several steps
    w_s, w_d, _, _, _ = _embedding_step_pair(0.0, [[1, 3, 3, 7], [2, 3, 9], [1, 1, 1]])
    assert torch.allclose(w_s, w_d, rtol=0, atol=1e-14)


def test_sparse_leaves_untouched_rows_bitwise_and_keeps_their_momentum() -> None:
    w_s, w_d, opt_s, opt_d, init = _embedding_step_pair(0.5, [[1, 3, 7], [3, 5]])
    untouched = [0, 2, 4, 6, 8, 9]
    assert torch.equal(w_s[untouched], init[untouched])
    state = opt_s.state[opt_s.param_groups[0]["params"][0]]
    assert torch.equal(state["acc"][untouched], torch.zeros(6, 4, dtype=torch.float64))
    assert torch.equal(state["mom"][untouched], torch.zeros(6, 4, dtype=torch.float64))
    # rows 1 and 7 (touched in step 1 only): the reference's lazy momentum neither decays nor applies
    # their velocity in step 2, while the dense path moves them by 0.5 * v.
    v1 = state["mom"][[1, 7]]
    assert torch.equal(w_s[[1, 7]], init[[1, 7]] + v1)
    dense_mom = opt_d.state[opt_d.param_groups[0]["params"][0]]["mom"]
    assert torch.allclose(dense_mom[[1, 7]], 0.5 * v1)
    assert torch.allclose(w_d[[1, 7]], init[[1, 7]] + 1.5 * v1)


def test_duplicate_indices_are_summed() -> None:
    w = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    opt = AdagradMomentum([w], lr=0.1)
    # uncoalesced gradient: row 2 appears twice with [1, 2] and [3, -6] -> total [4, -4]
    idx = torch.tensor([[2, 0, 2]])
    vals = torch.tensor([[1.0, 2.0], [5.0, 5.0], [3.0, -6.0]], dtype=torch.float64)
    w.grad = torch.sparse_coo_tensor(idx, vals, (4, 2), check_invariants=True)
    opt.step()
    # acc[2] = [16, 16]; p[2] = -0.1 * [4, -4] / sqrt(16 + 1e-6) ~ [-0.1, 0.1]
    step = 0.1 * 4 / math.sqrt(16 + 1e-6)
    assert w[2].tolist() == pytest.approx([-step, step], rel=1e-14)
    assert opt.state[w]["acc"][2].tolist() == [16.0, 16.0]
    assert w[[1, 3]].abs().sum().item() == 0.0


def test_sparse_rows_grad_converts_dense_gradient() -> None:
    w_a = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    w_b = w_a.detach().clone().requires_grad_(True)
    ids = torch.tensor([5, 1, 5])
    opt_a = AdagradMomentum([w_a], lr=0.1, momentum=0.3)
    opt_b = AdagradMomentum([w_b], lr=0.1, momentum=0.3)
    for _ in range(2):
        opt_a.zero_grad(), opt_b.zero_grad()
        w_a.index_select(0, ids).square().sum().backward()  # dense gradient
        w_a.grad = sparse_rows_grad(w_a.grad, ids)
        F.embedding(ids, w_b, sparse=True).square().sum().backward()  # sparse gradient
        opt_a.step(), opt_b.step()
    assert torch.equal(w_a, w_b)
    assert sparse_rows_grad(w_a.grad, ids).is_sparse


def test_state_dict_round_trip() -> None:
    w = torch.randn(5, 2, requires_grad=True)
    opt = AdagradMomentum([w], lr=0.1, momentum=0.5)
    for _ in range(2):
        opt.zero_grad()
        F.embedding(torch.tensor([0, 3]), w, sparse=True).sum().backward()
        opt.step()
    w2 = w.detach().clone().requires_grad_(True)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # a real checkpoint round trip (no shared state tensors)
    buffer.seek(0)
    opt2 = AdagradMomentum([w2], lr=0.5)
    opt2.load_state_dict(torch.load(buffer))
    assert opt2.param_groups[0]["lr"] == 0.1
    assert opt2.param_groups[0]["momentum"] == 0.5
    for o, p in ((opt, w), (opt2, w2)):
        o.zero_grad()
        F.embedding(torch.tensor([3, 4]), p, sparse=True).sum().backward()
        o.step()
    assert torch.equal(w, w2)


@pytest.mark.parametrize("numba", ["1", "0"])  # sessrec.kernels' updates and the torch code
@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_each_group_steps_with_its_own_lr(optimizer: str, numba: str, monkeypatch) -> None:
    """Two groups (lr 0.1 and 0.4), each with a dense and a row-sparse table: the first step moves every
    element with a gradient by about its group's lr (Adagrad: lr g / sqrt(g^2 + eps); Adam: lr sign(g))."""
    monkeypatch.setenv("SESSREC_NUMBA", numba)
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(6, 3, generator=gen, requires_grad=True) for _ in range(4)]
    groups = [{"params": params[:2], "lr": 0.1}, {"params": params[2:], "lr": 0.4}]
    opt = AdagradMomentum(groups, lr=1.0) if optimizer == "adagrad" else RowSparseAdam(groups, lr=1.0)
    before = [p.detach().clone() for p in params]
    for k, p in enumerate(params):
        sparse = k % 2 == 1  # params 1 and 3: rows 0 and 4 only
        rows = F.embedding(torch.tensor([0, 4]), p, sparse=sparse)  # (2, 3)
        rows.mul(torch.arange(1.0, 7.0).view(2, 3)).sum().backward()
    opt.step()
    for k, (p, p0) in enumerate(zip(params, before)):
        lr = 0.1 if k < 2 else 0.4
        g = torch.zeros(6, 3)
        g[[0, 4]] = torch.arange(1.0, 7.0).view(2, 3)
        step = g / torch.sqrt(g * g + 1e-6) if optimizer == "adagrad" else g / (g.abs() + 1e-8)
        assert torch.allclose(p.detach(), p0 - lr * step, rtol=0, atol=1e-6), k


@pytest.mark.parametrize(("kwargs", "option"), [({"lr": 0.0}, "lr"), ({"momentum": -0.1}, "momentum"),
                                                ({"eps": 0.0}, "eps")])
def test_invalid_options(kwargs: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        AdagradMomentum([torch.zeros(1, requires_grad=True)], **kwargs)
