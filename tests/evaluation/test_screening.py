"""Exact ranks from the int8-screened factored scores (`sessrec.evaluation.screening`) against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sessrec.evaluation.screening as screening
from sessrec import kernels
from sessrec.evaluation.metrics import target_ranks
from sessrec.evaluation.screening import FactoredScores, ScreenedTable

MODES = ["standard", "conservative", "median"]
needs_kernels = pytest.mark.skipif(not kernels.enabled(), reason="numba kernels unavailable")


def _problem(n: int = 2200, d: int = 24, b: int = 60, seed: int = 0):
    """A table [W | bias] (N, D+1) with tied rows, queries (B, D) in (-1, 1), targets (B,)."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(n, d + 1, generator=gen) * 0.3
    table[10] = table[11]  # exact ties with the target item 11
    table[n // 2] = table[11]
    table[n - 10 :] = table[7]  # ten duplicates of item 7
    query = torch.tanh(torch.randn(b, d, generator=gen) * 2)
    targets = torch.randint(0, n, (b,), generator=gen)
    targets[:5], targets[5:10] = 11, 7
    return table, query, targets


def _exact(table: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Reference scores (B, N): the float32 products (exact in float64) summed exactly rounded (fsum), so
    that equal rows give equal scores (a float64 GEMM need not: its column blocks sum differently)."""
    q, w = query.double().numpy(), table.double().numpy()  # (B, D), (N, D+1)
    prods = q[:, None, :] * w[None, :, :-1]  # (B, N, D) exact
    terms = np.concatenate([prods, np.broadcast_to(w[None, :, -1:], prods.shape[:2] + (1,))], axis=2)
    flat = terms.reshape(-1, terms.shape[2])
    return torch.tensor([math.fsum(row) for row in flat.tolist()], dtype=torch.float64).reshape(prods.shape[:2])


@needs_kernels
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_candidates", [False, True])
def test_ranks_equal_exact_dense_ranks(mode: str, with_candidates: bool) -> None:
    table, query, targets = _problem()  # 2,200 items: three 1,024-column blocks
    cands = torch.randperm(table.shape[0], generator=torch.Generator().manual_seed(3))[:900]
    cands = torch.cat([cands, torch.tensor([10, 11, 1100, 2195])]) if with_candidates else None
    screened = ScreenedTable(table)
    assert screened.screened
    got = screened.ranks(query, targets, mode, cands)
    want = target_ranks(_exact(table, query), targets, mode, cands)
    assert torch.equal(got, want)
    ties = got[:10] - target_ranks(_exact(table, query[:10]), targets[:10], "standard", cands)
    assert (ties > 0).all() if mode != "standard" else (ties == 0).all()  # the duplicates were counted


@needs_kernels
def test_the_error_bound_holds_for_every_pair() -> None:
    table, query, targets = _problem(n=700, d=40, b=64, seed=1)
    s = ScreenedTable(table)
    q = query.double().numpy()
    sq = (np.abs(q).max(1) / 127.0).astype(np.float32).astype(np.float64)  # as screen_queries rounds
    q8 = np.clip(np.floor(q / sq[:, None] + 0.5), -127, 127)
    approx = (sq[:, None] * q8) @ (s.w8.double().numpy() * s.st.double().numpy()[:, None]).T
    exact = q @ table[:, :-1].double().numpy().T
    a, c = np.linalg.norm(q, axis=1), np.linalg.norm(q - sq[:, None] * q8, axis=1)
    bound = a[:, None] * s.eu.double().numpy() + c[:, None] * s.ev.double().numpy()
    err = np.abs(approx - exact)
    assert (err <= bound).all()
    assert err.max() > 0.05 * bound.max()  # a bound, not a vacuous one


@needs_kernels
@pytest.mark.parametrize("mode", MODES)
def test_max_rank_keeps_ranks_up_to_it(mode: str) -> None:
    table, query, targets = _problem(seed=2)
    query[:20] = table[targets[:20], :-1] * 4  # well-ranked targets
    got = ScreenedTable(table).ranks(query, targets, mode, max_rank=20)
    want = target_ranks(_exact(table, query), targets, mode)
    inside = want <= 20
    assert inside.sum() >= 5 and (~inside).sum() >= 5
    assert torch.equal(got[inside], want[inside])
    assert (got[~inside] > 20).all()


@needs_kernels
def test_overflowing_lists_are_scored_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    table, query, targets = _problem(n=1500, seed=4)
    table[:, :-1] *= 1e-3  # scores crowd together: many undecided items per query
    monkeypatch.setattr(screening, "_LIST", 3)
    got = ScreenedTable(table).ranks(query, targets, "conservative")
    assert torch.equal(got, target_ranks(_exact(table, query), targets, "conservative"))


@needs_kernels
def test_all_tied_scores() -> None:
    table = torch.zeros(1200, 9)  # every score 0: everything ties
    query, targets = torch.rand(70, 8), torch.randint(0, 1200, (70,))
    s = ScreenedTable(table)
    assert (s.ranks(query, targets, "standard") == 1).all()
    assert (s.ranks(query, targets, "conservative") == 1200).all()


def test_unscreenable_inputs_fall_back_to_dense_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    table, query, targets = _problem(n=300, b=20)
    nan_table = table.clone()
    nan_table[3, 0] = float("nan")
    assert not ScreenedTable(nan_table).screened
    assert not ScreenedTable(table.double()).screened
    with monkeypatch.context() as m:
        m.setenv("SESSREC_NUMBA", "0")
        assert not ScreenedTable(table).screened
    # not screened: the dense float32 scores, ranked as a score matrix (NaN scores never rank above)
    dense = torch.nn.functional.pad(query, (0, 1), value=1.0) @ nan_table.t()  # (B, N)
    off = FactoredScores(query, ScreenedTable(nan_table))
    torch.testing.assert_close(off.dense(), dense, equal_nan=True)
    assert torch.equal(target_ranks(off, targets, "median"), target_ranks(dense, targets, "median"))
    nan_query = query.clone()
    nan_query[0, 0] = float("nan")
    s = ScreenedTable(table)
    assert s.ranks(nan_query, targets, "conservative") is None
    got = target_ranks(FactoredScores(nan_query, s), targets, "conservative")
    assert got[0] == table.shape[0]  # a NaN target score ranks last
    assert torch.equal(got[1:], target_ranks(_exact(table, query[1:]), targets[1:], "conservative"))


@needs_kernels
def test_kernels_switched_off_after_preparing_fall_back_to_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    table, query, targets = _problem(n=300, b=20)
    s = ScreenedTable(table)
    assert s.screened
    monkeypatch.setenv("SESSREC_NUMBA", "0")  # the wrappers decline: ranks says "not screened"
    assert s.ranks(query, targets, "median") is None
    want = target_ranks(s.scores(query), targets, "median")
    assert torch.equal(target_ranks(FactoredScores(query, s), targets, "median"), want)


def test_weight_only_tables() -> None:
    table, query, targets = _problem(n=400, b=30)
    weight = table[:, :-1].contiguous()
    s = ScreenedTable(weight, has_bias=False)
    want = target_ranks(_exact(torch.nn.functional.pad(weight, (0, 1)), query), targets, "conservative")
    assert torch.equal(target_ranks(FactoredScores(query, s), targets, "conservative"), want)
    torch.testing.assert_close(s.scores(query), query @ weight.t())


def test_bad_shapes_and_targets_are_refused() -> None:
    table, query, targets = _problem(n=50, b=4)
    s = ScreenedTable(table)
    with pytest.raises(ValueError, match="expected query"):
        s.ranks(query[:, :-1], targets, "standard")
    with pytest.raises(ValueError, match="expected query"):
        s.ranks(query, targets[:2], "standard")
    with pytest.raises(IndexError, match="out of range"):
        s.ranks(query, torch.tensor([0, 1, 2, 50]), "standard")
