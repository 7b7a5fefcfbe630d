"""The numba kernels against the torch code they replace (run with SESSREC_NUMBA=0)."""

from __future__ import annotations

import pytest
import torch

from sessrec import kernels
from sessrec.evaluation.metrics import target_ranks
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
