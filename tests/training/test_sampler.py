"""Popularity sampler: distribution, zero counts, cache refills, determinism, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sessrec.training import sampler as sampler_module
from sessrec.training.sampler import PopularitySampler
from sessrec.errors import ConfigError, DataError

COUNTS = np.array([0, 1, 5, 20, 100, 0, 3, 40], dtype=np.int64)


def empirical(sampler: PopularitySampler, n_calls: int) -> tuple[np.ndarray, int]:
    draws = torch.cat([sampler.sample() for _ in range(n_calls)])  # (n_calls * n_sample,)
    return np.bincount(draws.numpy(), minlength=len(COUNTS)), draws.numel()


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.75, 1.0])
def test_distribution_matches_counts_power_alpha(alpha: float) -> None:
    sampler = PopularitySampler(COUNTS, alpha, n_sample=1000, cache_size=20_000, seed=3)
    hist, n = empirical(sampler, 300)  # 300k draws over 15 refills
    weights = np.where(COUNTS > 0, COUNTS.astype(float) ** alpha, 0.0)
    p = weights / weights.sum()
    assert hist[COUNTS == 0].sum() == 0  # zero-count items never drawn, even with alpha = 0
    sd = np.sqrt(p * (1 - p) / n)  # binomial standard error of each frequency
    nz = p > 0
    assert np.all(np.abs(hist[nz] / n - p[nz]) < 5 * sd[nz])
    if alpha == 0.0:  # uniform over items with count > 0
        np.testing.assert_allclose(p[nz], 1 / nz.sum())
    torch.testing.assert_close(sampler.log_prob().exp(), torch.from_numpy(p))


def test_sample_shape_dtype_and_refill() -> None:
    sampler = PopularitySampler(COUNTS, 0.5, n_sample=7, cache_size=30, seed=0)  # 4 batches per cache
    assert sampler.n_batches == 4
    rows = [sampler.sample() for _ in range(9)]  # 3 caches drawn
    assert all(r.shape == (7,) and r.dtype == torch.int64 for r in rows)
    assert sampler.state_dict()["refills"] == 3
    assert not torch.equal(torch.stack(rows[:4]), torch.stack(rows[4:8]))  # a fresh cache, not a replay


def test_deterministic_given_seed() -> None:
    def stream(seed: int) -> torch.Tensor:
        sampler = PopularitySampler(COUNTS, 0.75, n_sample=16, cache_size=64, seed=seed)
        return torch.stack([sampler.sample() for _ in range(10)])  # (10, 16) over 3 refills

    assert torch.equal(stream(7), stream(7))
    assert not torch.equal(stream(7), stream(8))


@pytest.mark.parametrize("consumed", [0, 3, 4, 9])
def test_state_dict_round_trip(consumed: int) -> None:
    ref = PopularitySampler(COUNTS, 0.75, n_sample=5, cache_size=20, seed=11)  # 4 batches per cache
    for _ in range(consumed):
        ref.sample()
    state = ref.state_dict()
    resumed = PopularitySampler(COUNTS, 0.75, n_sample=5, cache_size=20, seed=0)
    resumed.load_state_dict(state)
    for _ in range(10):
        assert torch.equal(ref.sample(), resumed.sample())


def test_state_dict_rejects_other_cache_shape() -> None:
    state = PopularitySampler(COUNTS, 0.75, n_sample=5, cache_size=20).state_dict()
    with pytest.raises(ConfigError, match="cache_size"):
        PopularitySampler(COUNTS, 0.75, n_sample=5, cache_size=40).load_state_dict(state)


def test_log_counts_and_torch_input() -> None:
    sampler = PopularitySampler(torch.tensor([0, 1, 4]), 0.5, n_sample=2)
    expected = torch.tensor([-np.inf, 0.0, np.log(2.0)], dtype=torch.float64)
    torch.testing.assert_close(sampler.log_counts(), expected)
    uniform = torch.tensor([-np.inf, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(sampler.log_counts(0.0), uniform)
    assert sampler.to("cpu") is sampler


def test_invalid() -> None:
    with pytest.raises(DataError, match="nothing to sample"):
        PopularitySampler(np.zeros(3), 0.5, 4)
    with pytest.raises(DataError, match="non-negative"):
        PopularitySampler(np.array([1, -1]), 0.5, 4)
    with pytest.raises(ConfigError, match="n_sample"):
        PopularitySampler(COUNTS, 0.5, 0)


def test_cache_drawn_in_chunks_equals_one_draw(monkeypatch) -> None:
    counts = np.arange(1, 301, dtype=np.float64)
    whole = PopularitySampler(counts, 0.5, 16, 16 * 7, seed=4)._draw(2)  # (7, 16) in one chunk
    monkeypatch.setattr(sampler_module, "_DRAW_CHUNK", 40)  # 2 rows a chunk: 4 chunks, the last partial
    chunked = PopularitySampler(counts, 0.5, 16, 16 * 7, seed=4)._draw(2)
    assert chunked.shape == (7, 16)
    assert torch.equal(chunked, whole)


def test_guided_search_equals_searchsorted() -> None:
    from sessrec import kernels

    rng = np.random.default_rng(0)
    counts = torch.as_tensor(np.concatenate([rng.zipf(1.5, 300), np.zeros(5), [0, 7, 0]]).astype(np.float64))
    cdf = counts.pow(0.5).cumsum(0)  # with repeated values (zero counts), as the sampler's
    if not kernels.GuidedSearch.applies(cdf):
        pytest.skip("numba is off")
    search = kernels.GuidedSearch(cdf)
    u = torch.cat([torch.rand(20_000, dtype=torch.float64) * cdf[-1], cdf, torch.tensor([0.0, float(cdf[-1])]),
                   torch.nextafter(cdf, torch.zeros_like(cdf))])  # random, on every cdf value, both ends, just below
    out = search(u, torch.empty(u.shape, dtype=torch.int64))
    assert torch.equal(out, torch.searchsorted(cdf, u, right=True))


def test_sampler_draws_the_same_ids_with_and_without_the_guided_search(monkeypatch) -> None:
    counts = np.array([5.0, 0.0, 1.0, 30.0, 2.0, 0.0, 9.0])
    fast = PopularitySampler(counts, 0.75, 32, 32 * 50, seed=3)._draw(1)
    slow_sampler = PopularitySampler(counts, 0.75, 32, 32 * 50, seed=3)
    monkeypatch.setattr(slow_sampler, "_guided_search", lambda: None)
    assert torch.equal(fast, slow_sampler._draw(1))
