"""Target ranks (three tie modes, candidate sets, NaN) and the Recall/MRR metric with sum states."""

from __future__ import annotations

import math

import pytest
import torch

import sessrec.evaluation.metrics as metrics_mod
from sessrec.errors import ConfigError
from sessrec.evaluation.metrics import RankingMetrics, target_ranks


def brute_ranks(scores: torch.Tensor, targets: torch.Tensor, mode: str, candidates=None) -> list[float]:
    """Pure Python, straight from the definitions."""
    items = sorted(set(candidates.tolist())) if candidates is not None else range(scores.shape[1])
    out = []
    for row, t in zip(scores.tolist(), targets.tolist()):
        others = [row[j] for j in items if j != t]
        if math.isnan(row[t]):
            out.append(len(others) + 1.0)
            continue
        gt = sum(s > row[t] for s in others)
        ge = sum(s >= row[t] for s in others)
        out.append({"standard": gt + 1.0, "conservative": ge + 1.0, "median": (gt + ge) / 2 + 1.0}[mode])
    return out


def test_hand_computed() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.9, 0.2], [1.0, 1.0, 1.0, 0.0, 2.0]])
    targets = torch.tensor([1, 3])
    # row 0: target 0.5; others 0.1 0.5 0.9 0.2 -> 1 above, 2 at least -> standard 2, conservative 3
    # row 1: target 0.0; all four others above -> 5 in every mode
    assert target_ranks(scores, targets, "standard").tolist() == [2.0, 5.0]
    assert target_ranks(scores, targets, "conservative").tolist() == [3.0, 5.0]
    assert target_ranks(scores, targets, "median").tolist() == [2.5, 5.0]
    # candidates {0, 1, 2, 4}: row 0 others 0.1 0.5 0.2 -> 0 above, 1 at least -> 1 / 2 / 1.5;
    # row 1's target (item 3) is outside the set: others 1.0 1.0 1.0 2.0 all above -> 5
    cand = torch.tensor([4, 0, 2, 1])
    assert target_ranks(scores, targets, "standard", cand).tolist() == [1.0, 5.0]
    assert target_ranks(scores, targets, "conservative", cand).tolist() == [2.0, 5.0]
    assert target_ranks(scores, targets, "median", cand).tolist() == [1.5, 5.0]


@pytest.mark.parametrize("mode", ["standard", "conservative", "median"])
@pytest.mark.parametrize("with_candidates", [False, True])
def test_matches_brute_force_with_ties(mode: str, with_candidates: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40, 30), generator=gen).float()  # (B, N) many ties
    targets = torch.randint(0, 30, (40,), generator=gen)
    cand = torch.randperm(30, generator=gen)[:12] if with_candidates else None  # many targets outside
    got = target_ranks(scores, targets, mode, cand)
    assert got.dtype == torch.float32 and got.shape == (40,)
    assert got.tolist() == brute_ranks(scores, targets, mode, cand)


@pytest.mark.parametrize("mode", ["standard", "conservative", "median"])
def test_column_chunks_agree(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (8, 101), generator=gen).double()
    targets = torch.randint(0, 101, (8,), generator=gen)
    cand = torch.arange(0, 101, 3)
    whole = target_ranks(scores, targets, mode, cand)
    monkeypatch.setattr(metrics_mod, "_CHUNK_ELEMENTS", 8 * 7)  # 7 columns a chunk
    assert torch.equal(target_ranks(scores, targets, mode, cand), whole)
    assert whole.tolist() == brute_ranks(scores, targets, mode, cand)


def test_nan_target_is_worst() -> None:
    scores = torch.tensor([[float("nan"), 1.0, 2.0], [0.5, float("nan"), 0.1]])
    targets = torch.tensor([0, 0])
    assert target_ranks(scores, targets, "standard").tolist() == [3.0, 1.0]  # NaN others never above
    assert target_ranks(scores, targets, "conservative", torch.tensor([1, 2])).tolist() == [3.0, 1.0]


def test_invalid_mode() -> None:
    with pytest.raises(ConfigError, match="rank mode"):
        target_ranks(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "optimistic")


RANKS = torch.tensor([1.0, 2.0, 5.0, 30.0, 1.5, 10.0])


def test_ranking_metrics_known_values() -> None:
    metric = RankingMetrics(cutoffs=(1, 5, 20), prefix="val/")
    metric.update(RANKS[:4])
    metric.update(RANKS[4:])
    out = metric.compute()
    assert set(out) == {f"val/{m}@{k}" for m in ("recall", "mrr") for k in (1, 5, 20)}
    expected = {
        "val/recall@1": 1 / 6,
        "val/mrr@1": 1 / 6,
        "val/recall@5": 4 / 6,
        "val/mrr@5": (1 + 1 / 2 + 1 / 5 + 1 / 1.5) / 6,
        "val/recall@20": 5 / 6,
        "val/mrr@20": (1 + 1 / 2 + 1 / 5 + 1 / 1.5 + 1 / 10) / 6,
    }
    for key, value in expected.items():
        assert out[key].dtype == torch.float64
        assert out[key].item() == pytest.approx(value, abs=1e-12)


def test_states_sum_like_two_ranks() -> None:
    single, a, b = RankingMetrics((1, 5, 20)), RankingMetrics((1, 5, 20)), RankingMetrics((1, 5, 20))
    single.update(RANKS)
    a.update(RANKS[:2])  # "rank 0": averaging per-rank means would give a different (wrong) answer
    b.update(RANKS[2:])  # "rank 1"
    manual = RankingMetrics((1, 5, 20))
    for name in ("hits", "rr", "count"):
        setattr(manual, name, getattr(a, name) + getattr(b, name))
    manual._update_count = 1
    a.merge_state(b)
    want = single.compute()
    for merged in (a.compute(), manual.compute()):
        for key, value in want.items():
            torch.testing.assert_close(merged[key], value)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_empty_and_invalid_cutoffs() -> None:
    assert RankingMetrics((20,)).compute()["recall@20"].item() == 0.0
    with pytest.raises(ConfigError, match="cutoffs"):
        RankingMetrics((0, 5))


def test_top_n_items_ties_by_id():
    import numpy as np

    from sessrec.evaluation.metrics import top_n_items

    counts = np.array([3, 7, 7, 0, 5])
    assert top_n_items(counts, 3).tolist() == [1, 2, 4]  # 7, 7 (smaller id first), then 5
