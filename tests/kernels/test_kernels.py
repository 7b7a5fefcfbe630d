"""The numba kernels (sessrec.kernels) against the torch code they replace (run with SESSREC_NUMBA=0).

The int8-screened ranking is tested in tests/evaluation/test_screening.py, GuidedSearch in
tests/training/test_sampler.py, the whole fused step in tests/training/test_fused.py; the lazy import
and the SESSREC_NUMBA switch of every wrapper in tests/kernels/test_layout.py.
"""

from __future__ import annotations

import pytest
import torch

from sessrec import kernels
from sessrec.evaluation.metrics import target_ranks
from sessrec.training import losses
from sessrec.training.optim import AdagradMomentum


def test_numba_kernels_are_available():
    # numba is a dependency: a broken install would silently fall back to the slower torch code
    assert kernels.enabled()


def test_environment_switch_disables_the_kernels(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SESSREC_NUMBA", "0")
    assert not kernels.enabled()
    p = torch.zeros(3, 2)
    one_row = (torch.tensor([1]), torch.ones(1, 2))
    assert not kernels.sparse_adagrad_momentum_(p, p.clone(), None, *one_row, 0.1, 0.0, 1e-6)
    assert kernels.count_at_least(torch.zeros(2, 3), torch.zeros(2, 1), False, None) is None


def _train(monkeypatch: pytest.MonkeyPatch, use_numba: bool, momentum: float) -> list[torch.Tensor]:
    """Five AdagradMomentum steps on a row-sparse table and a dense weight; returns params and state."""
    monkeypatch.setenv("SESSREC_NUMBA", "1" if use_numba else "0")
    gen = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter(torch.randn(50, 7, generator=gen))  # (N, D)
    dense = torch.nn.Parameter(torch.randn(4, 3, generator=gen))
    opt = AdagradMomentum([table, dense], lr=0.3, momentum=momentum)
    for _ in range(5):
        rows = torch.unique(torch.randint(0, 50, (12,), generator=gen))  # (K,) sorted unique
        values = torch.randn(rows.numel(), 7, generator=gen)  # (K, D)
        table.grad = torch.sparse_coo_tensor(
            rows[None], values, table.shape, is_coalesced=True, check_invariants=True
        )
        dense.grad = torch.randn(4, 3, generator=gen)
        opt.step()
    states = [s[k] for s in opt.state.values() for k in sorted(s)]
    return [table.detach(), dense.detach(), *states]


@pytest.mark.parametrize("momentum", [0.0, 0.4])
def test_optimizer_kernels_match_the_torch_update(monkeypatch: pytest.MonkeyPatch, momentum: float):
    fused = _train(monkeypatch, True, momentum)
    plain = _train(monkeypatch, False, momentum)
    assert len(fused) == len(plain) == (4 if momentum == 0 else 6)
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    initial = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(fused[0], initial)  # it moved


def test_sparse_kernel_touches_only_the_listed_rows():
    p, acc, mom = torch.ones(6, 2), torch.zeros(6, 2), torch.zeros(6, 2)
    rows, g = torch.tensor([1, 4]), torch.tensor([[3.0, 4.0], [1.0, -2.0]])
    assert kernels.sparse_adagrad_momentum_(p, acc, mom, rows, g, 0.5, 0.2, 1e-6)
    untouched = [0, 2, 3, 5]
    assert torch.equal(acc[untouched], torch.zeros(4, 2)) and torch.equal(p[untouched], torch.ones(4, 2))
    assert torch.equal(acc[[1, 4]], g * g)
    # first step: v = -lr g / sqrt(g^2 + eps) ~ -lr sign(g)
    assert torch.allclose(mom[[1, 4]], -0.5 * g.sign(), atol=1e-6)
    assert torch.allclose(p[[1, 4]], 1 - 0.5 * g.sign(), atol=1e-6)


def test_kernels_decline_what_they_do_not_handle():
    p64 = torch.zeros(4, 2, dtype=torch.float64)
    row0 = torch.tensor([0])
    assert not kernels.sparse_adagrad_momentum_(p64, p64.clone(), None, row0, p64[:1], 0.1, 0.0, 1e-6)
    strided = torch.zeros(4, 4)[:, ::2]  # (4, 2) not contiguous
    ok, ones = torch.zeros(4, 2), torch.ones(4, 2)
    pairs = [(ok, ones, ok.clone(), None), (strided, ones, ok, None)]
    assert not kernels.dense_adagrad_momentum_(pairs, 0.1, 0.0, 1e-6)
    assert torch.equal(ok, torch.zeros(4, 2))  # all or nothing: the first one is not updated either
    scores64 = torch.zeros(2, 3, dtype=torch.float64)
    assert kernels.count_at_least(scores64, torch.zeros(2, 1), False, None) is None


@pytest.mark.parametrize("mode", ["standard", "conservative", "median"])
@pytest.mark.parametrize("with_candidates", [False, True])
def test_fused_rank_count_matches_torch(monkeypatch: pytest.MonkeyPatch, mode: str, with_candidates: bool):
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(-3, 4, (9, 40), generator=gen).float()  # many exact ties
    scores[2, 5] = scores[4, 0] = float("nan")
    targets = torch.tensor([0, 5, 7, 39, 0, 12, 13, 20, 1])  # row 4's target score is NaN
    candidates = torch.randperm(40, generator=gen)[:15] if with_candidates else None
    fused = target_ranks(scores, targets, mode, candidates)
    monkeypatch.setenv("SESSREC_NUMBA", "0")
    plain = target_ranks(scores, targets, mode, candidates)
    assert torch.equal(fused, plain)
    manual = [(scores[i] >= scores[i, t]).sum() for i, t in enumerate(targets)]  # includes the target itself
    if mode == "conservative" and not with_candidates:
        assert fused[[0, 1, 2, 3, 5]].tolist() == [float(manual[i]) for i in (0, 1, 2, 3, 5)]
        assert fused[4] == 40  # NaN target: the worst rank


@pytest.mark.parametrize("n_rows", [50, 100_000])  # scan of the marks (N <= 16 M) and sort of the ids
def test_unique_inverse_equals_torch_unique(n_rows: int):
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 40, (300,), generator=gen) * (n_rows // 40)  # (M,) many repeats
    rows, inverse = kernels.unique_inverse(ids, n_rows)
    expected_rows, expected_inverse = torch.unique(ids, return_inverse=True)
    assert torch.equal(rows, expected_rows) and torch.equal(inverse, expected_inverse)
    again = kernels.unique_inverse(ids.flip(0), n_rows)  # the scratch marks were reset after the call
    assert torch.equal(again[0], expected_rows)


def test_unique_inverse_rejects_ids_outside_the_table():
    with pytest.raises(IndexError, match="out of range for a table of 10 rows"):
        kernels.unique_inverse(torch.tensor([3, 10]), 10)
    with pytest.raises(IndexError, match="-1"):
        kernels.unique_inverse(torch.tensor([-1, 2]), 10)
    assert kernels.unique_inverse(torch.tensor([1, 2], dtype=torch.int32), 10) is None  # torch handles it


def test_index_add_rows_equals_torch():
    gen = torch.Generator().manual_seed(6)
    index = torch.randint(0, 7, (40,), generator=gen)
    values = torch.randn(40, 5, generator=gen)
    fused, plain = torch.zeros(7, 5), torch.zeros(7, 5)
    assert kernels.index_add_rows_(fused, index, values)
    plain.index_add_(0, index, values)
    assert torch.equal(fused, plain)


def test_sparse_kernel_checks_rows_and_shapes():
    p, acc = torch.zeros(5, 2), torch.zeros(5, 2)
    with pytest.raises(IndexError, match="out of range for a table of 5 rows"):
        kernels.sparse_adagrad_momentum_(p, acc, None, torch.tensor([1, 5]), torch.ones(2, 2), 0.1, 0.0, 1e-6)
    with pytest.raises(ValueError, match="mismatched shapes"):
        kernels.sparse_adagrad_momentum_(p, acc, None, torch.tensor([1, 2]), torch.ones(3, 2), 0.1, 0.0, 1e-6)


# The fused GRU4Rec step's kernels (sessrec.training.fused), each against the torch code it stands for.


def test_row_update_equals_the_summed_sparse_update(monkeypatch: pytest.MonkeyPatch):
    gen = torch.Generator().manual_seed(7)
    n, d, batch, cols = 30, 5, 4, 7
    ids = torch.randint(0, n, (batch + cols,), generator=gen)  # (B+C,) inputs, then the scored columns
    rows, inverse = kernels.unique_inverse(ids, n)
    grad_in, grad_cols = torch.randn(batch, d - 1, generator=gen), torch.randn(cols, d, generator=gen)
    table = torch.randn(n, d, generator=gen)
    fused, acc, mom = table.clone(), torch.rand(n, d, generator=gen), torch.randn(n, d, generator=gen)
    plain = torch.nn.Parameter(table.clone())
    opt = AdagradMomentum([plain], lr=0.2, momentum=0.3)
    opt.state_for(plain, 0.3).update(acc=acc.clone(), mom=mom.clone())
    values = torch.full((batch + cols, d), float("nan"))  # scratch: overwritten
    assert kernels.row_update_(fused, acc, mom, rows, inverse, grad_in, grad_cols, values, 0.2, 0.3, 1e-6)
    summed = torch.zeros(rows.numel(), d)  # (U, D) autograd's sum: the inputs' part, then the columns'
    summed[:, : d - 1].index_add_(0, inverse[:batch], grad_in)
    summed.index_add_(0, inverse[batch:], grad_cols)
    assert torch.equal(values[: rows.numel()], summed)
    monkeypatch.setenv("SESSREC_NUMBA", "0")
    plain.grad = torch.sparse_coo_tensor(rows[None], summed, (n, d), is_coalesced=True, check_invariants=True)
    opt.step()
    assert torch.allclose(fused, plain.detach(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(acc, opt.state[plain]["acc"]) and torch.allclose(mom, opt.state[plain]["mom"])


def test_gather_columns_equals_index_select():
    gen = torch.Generator().manual_seed(8)
    table = torch.randn(50, 6, generator=gen)
    targets, samples = torch.randint(0, 50, (5,), generator=gen), torch.randint(0, 50, (20,), generator=gen)
    off_targets, off_samples = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    out = torch.empty(25, 7)
    assert kernels.gather_columns(table, targets, samples, off_targets, off_samples, out)
    offsets = torch.cat([off_targets[targets], off_samples[samples]]).unsqueeze(1)  # (C, 1)
    assert torch.equal(out, torch.cat([table[torch.cat([targets, samples])], offsets], 1))


def test_cross_entropy_grad_equals_autograd():
    scores = torch.randn(6, 15, generator=torch.Generator().manual_seed(9)) * 4
    scores[2, 2] = -80.0  # a target whose probability underflows next to 1e-24
    leaf = scores.clone().requires_grad_()
    expected = losses.cross_entropy(leaf)
    expected.backward()
    probs = torch.softmax(scores, 1)
    loss = kernels.cross_entropy_grad(probs, losses.LOG_EPS)  # probs now holds the gradient
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(probs, leaf.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("elu_param", "bpreg"), [(0.5, 1.0), (0.0, 0.3)])
def test_bpr_max_grad_equals_autograd(elu_param: float, bpreg: float):
    scores = torch.randn(5, 12, generator=torch.Generator().manual_seed(10)) * 2
    leaf = scores.clone().requires_grad_()
    expected = losses.bpr_max(leaf, bpreg=bpreg, elu_param=elu_param)
    expected.backward()
    r = losses.elu(scores, elu_param) if elu_param > 0 else scores  # the fused step's inputs
    s = losses.negative_softmax(r, None)
    sig = torch.sigmoid(r.diagonal().unsqueeze(1) - r)
    grad = torch.empty(5, 12)
    loss = kernels.bpr_max_grad(scores, r, s, sig, elu_param, bpreg, losses.EPS, grad)
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(grad, leaf.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dropout", [False, True])
def test_gru_backward_equals_autograd_through_a_gru_cell(dropout: bool):
    gen = torch.Generator().manual_seed(11)
    batch, n_in, hid = 4, 5, 3
    cell = torch.nn.GRUCell(n_in, hid)
    x, h = torch.randn(batch, n_in, generator=gen), torch.randn(batch, hid, generator=gen)
    mask = (torch.rand(batch, hid, generator=gen) > 0.3).float() * 2 if dropout else None
    grad_out = torch.randn(batch, hid + 2, generator=gen)  # columns :H used, as the fused step passes it
    x_leaf = x.clone().requires_grad_()
    out = cell(x_leaf, h)
    (out if mask is None else out * mask).backward(grad_out[:, :hid])
    with torch.no_grad():  # the fused step's forward, saving its activations
        gi = torch.addmm(cell.bias_ih, x, cell.weight_ih.t())  # (B, 3H)
        gh = torch.addmm(cell.bias_hh, h, cell.weight_hh.t())  # (B, 3H)
        rz = torch.sigmoid(gi[:, : 2 * hid] + gh[:, : 2 * hid])  # (B, 2H)
        n = torch.tanh(gi[:, 2 * hid :] + rz[:, :hid] * gh[:, 2 * hid :])  # (B, H)
        assert torch.allclose(n + rz[:, hid:] * (h - n), out, atol=1e-6)
    grad_i, grad_h = torch.empty(batch, 3 * hid), torch.empty(batch, 3 * hid)
    bias_i, bias_h = torch.empty(3 * hid), torch.empty(3 * hid)
    assert kernels.gru_backward(grad_out, mask, h, n, rz, gh, grad_i, grad_h, bias_i, bias_h)
    close = dict(rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad_i.t() @ x, cell.weight_ih.grad, **close)
    assert torch.allclose(grad_h.t() @ h, cell.weight_hh.grad, **close)
    assert torch.allclose(bias_i, cell.bias_ih.grad, **close)
    assert torch.allclose(bias_h, cell.bias_hh.grad, **close)
    assert torch.allclose(grad_i @ cell.weight_ih.detach(), x_leaf.grad, **close)
    with pytest.raises(ValueError, match="shapes"):
        narrow = torch.empty(batch, 3 * hid - 1)
        kernels.gru_backward(grad_out, mask, h, n, rz, gh, narrow, grad_h, bias_i, bias_h)
