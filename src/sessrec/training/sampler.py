"""Popularity-based negative sampling with a pre-drawn cache (as the GRU4Rec reference).

``PopularitySampler`` draws ``n_sample`` item ids, with replacement, with probability proportional to
``count ** alpha`` (items with count 0 are never drawn, also for ``alpha = 0``). A cache of
``cache_size // n_sample`` batches is drawn at once on the sampler's device (uniform randoms through
``torch.searchsorted`` on the cumulative weights, or the same search through a guide table on CPU:
`sessrec.kernels.GuidedSearch`) and each ``sample()`` returns the next row.

Reproducibility: refill ``r`` draws from a generator seeded with ``(seed, r)``, so the stream is fully
determined by ``seed`` and the device, and ``state_dict()`` needs only the refill counter and the
position in the cache: ``load_state_dict`` redraws the current cache and continues the same stream.
(Values drawn on CPU and on CUDA differ: the generators differ.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from sessrec import kernels
from sessrec.errors import ConfigError, DataError


def _seed_for(seed: int, refill: int) -> int:
    """A 63-bit seed for refill ``refill`` of the stream ``seed``."""
    return int(np.random.SeedSequence([seed, refill]).generate_state(1, np.uint64)[0] >> np.uint64(1))


_DRAW_CHUNK = 1 << 20  # uniform randoms drawn at a time when filling the cache (8 MiB of float64)


class PopularitySampler:
    """Negative sampler with probability proportional to ``counts ** alpha``; memory O(N + cache)."""

    def __init__(
        self,
        counts: np.ndarray | torch.Tensor,
        alpha: float,
        n_sample: int,
        cache_size: int = 10_000_000,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if n_sample < 1:
            raise ConfigError(f"n_sample must be >= 1 (got {n_sample})")
        if cache_size < 1:
            raise ConfigError(f"cache_size must be >= 1 (got {cache_size})")
        if alpha < 0:
            raise ConfigError(f"sample_alpha must be >= 0 (got {alpha})")
        counts = torch.as_tensor(counts).detach().to("cpu", torch.float64)  # (N,)
        if counts.ndim != 1 or counts.numel() == 0:
            raise DataError(f"item counts must be a non-empty 1-D array (got shape {tuple(counts.shape)})")
        if (counts < 0).any() or not torch.isfinite(counts).all():
            raise DataError("item counts must be finite and non-negative")
        if not (counts > 0).any():
            raise DataError("every item count is 0: nothing to sample")
        self.alpha, self.n_sample, self.seed = float(alpha), n_sample, seed
        self.n_batches = max(1, cache_size // n_sample)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._counts = counts.to(self.device, self._float)  # (N,)
        self._cdf = self._cumulative(self._counts)  # (N,)
        self._last = int(torch.nonzero(counts > 0)[-1])  # highest drawable id: guards u == total
        self._refills = 0  # caches drawn so far (the current cache is refill _refills - 1)
        self._pos = self.n_batches  # next row of the cache; n_batches = exhausted
        self._cache: torch.Tensor | None = None  # (n_batches, n_sample)
        self._generator: torch.Generator | None = None
        self._search: kernels.GuidedSearch | None = None  # searchsorted over _cdf on CPU

    @property
    def _float(self) -> torch.dtype:
        return torch.float32 if self.device.type == "mps" else torch.float64

    @property
    def n_items(self) -> int:
        return self._counts.numel()

    def _cumulative(self, counts: torch.Tensor) -> torch.Tensor:
        weights = torch.where(counts > 0, counts.pow(self.alpha), torch.zeros_like(counts))  # (N,)
        return weights.cumsum(0)  # (N,)

    def _draw(self, refill: int) -> torch.Tensor:
        """The cache of refill ``refill``: (n_batches, n_sample) int64 ids."""
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(_seed_for(self.seed, refill))
        ids = torch.empty(self.n_batches, self.n_sample, dtype=torch.int64, device=self.device)  # (K, S)
        search = self._guided_search()
        step = max(1, _DRAW_CHUNK // self.n_sample)  # rows per chunk: no (K, S) float temporary
        for lo in range(0, self.n_batches, step):
            part = ids[lo : lo + step]  # (k, S) view
            u = torch.rand(part.shape, generator=self._generator, device=self.device, dtype=self._float)
            u.mul_(self._cdf[-1])
            if search is not None:  # CPU with numba: the same ids in O(1) each
                search(u, part)
            else:
                torch.searchsorted(self._cdf, u, right=True, out=part)  # first cdf > u: never a 0-weight id
        return ids.clamp_(max=self._last)

    def _guided_search(self) -> kernels.GuidedSearch | None:
        if self._search is None or self._search.source is not self._cdf:
            applies = kernels.GuidedSearch.applies(self._cdf)
            self._search = kernels.GuidedSearch(self._cdf) if applies else None
        return self._search

    def sample(self) -> torch.Tensor:
        """The next ``(n_sample,)`` int64 ids on the sampler's device (a view of the cache: do not modify)."""
        if self._pos >= self.n_batches:
            self._cache = self._draw(self._refills)
            self._refills += 1
            self._pos = 0
        row = self._cache[self._pos]  # (n_sample,)
        self._pos += 1
        return row

    def to(self, device: torch.device | str) -> PopularitySampler:
        """Move to ``device`` in place (the current cache moves too, so the stream continues there)."""
        device = torch.device(device)
        if device != self.device:
            self.device = device
            self._counts = self._counts.to(device, self._float)
            self._cdf = self._cumulative(self._counts)
            if self._cache is not None:
                self._cache = self._cache.to(device)
        return self

    def log_counts(self, alpha: float | None = None) -> torch.Tensor:
        """``alpha * log(count)`` per item, (N,) on the device; -inf for count 0 (``alpha`` default: own)."""
        alpha = self.alpha if alpha is None else alpha
        counts = self._counts
        return torch.where(counts > 0, counts.log() * alpha, torch.full_like(counts, -torch.inf))  # (N,)

    def log_prob(self) -> torch.Tensor:
        """Log probability (N,) that one draw is each item (-inf where never drawn)."""
        return self.log_counts() - self._cdf[-1].log()  # (N,)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "refills": self._refills, "pos": self._pos, "n_batches": self.n_batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by :meth:`state_dict` (redraws the current cache)."""
        if state["n_batches"] != self.n_batches:
            raise ConfigError(
                f"sampler state has {state['n_batches']} cached batches, this sampler {self.n_batches}: "
                "use the same n_sample and cache_size to resume"
            )
        self.seed, self._refills, self._pos = int(state["seed"]), int(state["refills"]), int(state["pos"])
        self._cache = self._draw(self._refills - 1) if self._refills > 0 else None
        if self._cache is None:
            self._pos = self.n_batches


def log_q_columns(log_pop: Tensor, targets: Tensor, samples: Tensor, alpha: float) -> Tensor:
    """The logQ vector (B+S,) the reference subtracts (times ``logq``) from each row of the scores.

    Args:
        log_pop: (N,) log of the RAW training count of each item (not normalised: the reference uses
            ``log(count)`` for the targets and ``log(count ** alpha)`` for the samples, so normalising to
            probabilities would shift the two parts by different constants, log Z vs alpha log Z, and
            change the loss).
        targets: (B,) item ids of the in-batch targets (the first B columns).
        samples: (S,) item ids of the shared extra negatives.
        alpha: the sampler's ``sample_alpha``.

    Returns:
        (B+S,) ``cat([log_pop[targets], alpha * log_pop[samples]])``: the in-batch target columns use the
        plain count (they are drawn by the data, i.e. proportional to popularity), the extra samples the
        count raised to ``alpha`` (the distribution they were drawn from, unnormalised).
    """
    lq_targets = log_pop.index_select(0, targets)  # (B,)
    lq_samples = log_pop.index_select(0, samples) * alpha  # (S,)
    return torch.cat([lq_targets, lq_samples])  # (B+S,)


def training_sampler(counts: torch.Tensor, hparams: Any, rank: int, device: torch.device) -> PopularitySampler | None:
    """The sampler a `SessionRecModule` trains with (None without sampled negatives): `hparams`' n_sample,
    sample_alpha and sample_cache_size, seeded from torch's initial seed and the rank."""
    if hparams.n_sample <= 0 or hparams.negatives != "sampled":
        return None
    seed = torch.initial_seed() % 2**31 + rank
    return PopularitySampler(counts.numpy(), hparams.sample_alpha, hparams.n_sample, hparams.sample_cache_size,
                             seed=seed, device=device)
