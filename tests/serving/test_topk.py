"""The screened top-k (large catalogues): exactly the dense float32 top k, from int8 products and bounds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sessrec.evaluation.screening import ScreenedTable
from sessrec.serving import Recommender, recommender


def _dense_top(query: torch.Tensor, table: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.topk(F.pad(query, (0, 1), value=1.0) @ table.T, k, dim=1)


def _table(n: int, d: int, seed: int) -> torch.Tensor:
    """Item rows of uneven norms and a popularity-like bias, as trained tables have."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g)
    bias = torch.randn(n, 1, generator=g).mul(0.5) - torch.linspace(0, 2, n).unsqueeze(1)
    return torch.cat([weight, bias], 1).contiguous()


@pytest.mark.parametrize(("n", "rows", "k"), [(3000, 1, 1), (3000, 5, 20), (5000, 300, 50), (2500, 3, 2500)])
def test_screened_top_k_is_the_dense_top_k(n, rows, k):
    table = _table(n, 16, seed=n + rows)
    query = torch.randn(rows, 16, generator=torch.Generator().manual_seed(k))
    screened = ScreenedTable(table)
    assert screened.screened
    scores, items = screened.top_k(query, k)
    want_scores, want_items = _dense_top(query, table, k)
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)
    assert (items == want_items).float().mean() > 0.999  # only float-rounding near-ties may swap
    exact = F.pad(query, (0, 1), value=1.0).double() @ table.double().T  # (R, N) float64 scores
    kth = exact.gather(1, items).min(1).values  # the k-th best score found
    assert bool((exact.gather(1, want_items).min(1).values <= kth + 1e-5).all())  # nothing better left out


@pytest.mark.parametrize("rows", [1, 7])
def test_many_small_blocks_and_chunks(rows, monkeypatch):
    """Item blocks of 128 or 16 items (chunks cut inside them): the heaps and lists carry across blocks."""
    from sessrec.evaluation import screening

    monkeypatch.setattr(screening, "_COLS", 8)
    monkeypatch.setattr(screening, "_ROWS", 16)
    table = _table(3001, 12, seed=rows)
    query = torch.randn(rows, 12, generator=torch.Generator().manual_seed(rows))
    scores, items = ScreenedTable(table).top_k(query, 10)
    want_scores, want_items = _dense_top(query, table, 10)
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)
    assert torch.equal(items, want_items)


@pytest.mark.parametrize(("workers", "rows"), [(2, 1), (3, 7), (4, 2)])
def test_item_ranges_screened_in_threads(workers, rows, monkeypatch):
    """`workers` threads, one item range each (small ranges forced): the union of the ranges' lists still
    holds the exact top k, also when the best items all sit in one range, and the pool is reused."""
    from sessrec.evaluation import screening

    monkeypatch.setattr(screening, "_MIN_RANGE", 500)
    table = _table(3001, 12, seed=workers)  # the bias falls with the index: the top items are early
    query = torch.randn(rows, 12, generator=torch.Generator().manual_seed(rows))
    screened = ScreenedTable(table)
    for _ in range(2):
        scores, items = screened.top_k(query, 10, workers=workers)
        want_scores, want_items = _dense_top(query, table, 10)
        torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)
        assert torch.equal(items, want_items)
    assert screened._threads[0] == workers
    ranges = []
    monkeypatch.setattr(screened, "_stream_items", lambda q8, consume, lo, hi: ranges.append((lo, hi)))
    screened._candidates(query.contiguous(), 10, workers)
    assert sorted(ranges) == [(3001 * i // workers, 3001 * (i + 1) // workers) for i in range(workers)]


def test_a_full_candidate_list_falls_back_to_dense_scores():
    """3,000 equal rows: every item may be in the top 1, the list (2,048) overflows, the row is scored densely."""
    table = _table(1, 8, seed=2).repeat(3000, 1)
    table[2999, -1] += 1.0  # one item better than the rest, after the list is full
    screened, query = ScreenedTable(table), torch.randn(2, 8)
    assert screened._candidates(query, 1) == [None, None]
    scores, items = screened.top_k(query, 1)
    assert items.flatten().tolist() == [2999, 2999]


def test_duplicate_rows_tie_and_k_above_n():
    table = _table(100, 8, seed=1)
    table[50] = table[10]  # an exact tie
    screened = ScreenedTable(table)
    query = torch.randn(2, 8)
    scores, items = screened.top_k(query, 500)
    assert items.shape == (2, 100) and all(sorted(row.tolist()) == list(range(100)) for row in items)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())


def test_off_without_numba():
    code = ("import torch; from sessrec.evaluation.screening import ScreenedTable; "
            "t = ScreenedTable(torch.randn(50, 5)); print(t.top_k(torch.randn(1, 4), 3))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"SESSREC_NUMBA": "0", "PATH": ""})
    assert out.stdout.strip() == "None"


@pytest.mark.parametrize("name", ["gru4rec", "prnn"])
def test_recommender_lists_are_the_same_screened(name, exported, monkeypatch):
    """A catalogue over SCREEN_MIN_ITEMS uses the screened top k: the same lists as the dense path (with
    2 screening threads for the p-RNN)."""
    from sessrec.evaluation import screening

    dense = Recommender.load(exported[name])
    monkeypatch.setattr(recommender, "SCREEN_MIN_ITEMS", 1)
    monkeypatch.setattr(screening, "_MIN_RANGE", 100)
    screened = Recommender.load(exported[name])
    screened.screen_workers = 2 if name == "prnn" else 1
    assert screened._screened is not None and dense._screened is None
    rng = np.random.default_rng(0)
    for _ in range(5):
        clicks = rng.choice(dense.item_ids, size=4).tolist()
        for exclude in (True, False):
            want, got = dense.recommend(clicks, 10, exclude), screened.recommend(clicks, 10, exclude)
            assert [i for i, _ in got] == [i for i, _ in want]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-5)
