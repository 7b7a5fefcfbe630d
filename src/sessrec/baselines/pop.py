"""Popularity baselines of the GRU4Rec papers: POP (global) and session-POP (within the session)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def _event_counts(items: np.ndarray, n_items: int) -> torch.Tensor:
    """Training events per item as a (N,) float32 tensor."""
    items = np.asarray(items, dtype=np.int64)
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item indices must be in 0..{n_items - 1}")
    return torch.from_numpy(np.bincount(items, minlength=n_items).astype(np.float32))


class Pop(nn.Module):
    """Global popularity: the score of an item is its number of training events, whatever the session.

    `forward` returns a read-only (B, N) view of one (N,) buffer (no copy): do not modify it in place.
    """

    def __init__(self, n_items: int | None = None, normalize: bool = False) -> None:
        super().__init__()
        self.expected_items = n_items  # linked from the data module by the CLI; checked at fit
        self.normalize = normalize  # scores as shares of training events instead of counts
        self.register_buffer("pop", torch.zeros(0))  # (N,) training event counts

    @property
    def n_items(self) -> int:
        return self.pop.shape[0]

    def fit(self, items: np.ndarray, offsets: np.ndarray, n_items: int) -> None:
        """Count training events per item (`offsets` is unused: popularity ignores sessions)."""
        pop = _event_counts(items, n_items)
        self.pop = (pop / pop.sum().clamp_min(1) if self.normalize else pop).to(self.pop.device)

    def begin(self, batch_size: int, device: torch.device | str | None = None) -> None:
        """POP keeps no per-session state."""

    def forward(self, inputs: Tensor, reset: Tensor) -> Tensor:
        return self.pop.unsqueeze(0).expand(inputs.shape[0], -1)  # (B, N)


class SessionPop(nn.Module):
    """Session popularity: items already in the session by count, ties broken by global popularity.

    score(b, j) = count of j in slot b's session so far (current item included) + level(j), where
    level(j) = dense rank of j's training count among the distinct counts, divided by their number, so
    0 <= level < 1 and ties in the training count stay ties. (A dense rank rather than the count itself
    keeps the score exact in float32 even with counts in the millions.)

    Memory: the per-slot state is a dense (B, N) float32 count matrix, 4 * B * N bytes (B = 512 and
    N = 700K items take 1.4 GB), plus the (B, N) scores returned by each step.
    """

    def __init__(self, n_items: int | None = None, popularity_ties: bool = True) -> None:
        super().__init__()
        self.expected_items = n_items  # linked from the data module by the CLI; checked at fit
        self.popularity_ties = popularity_ties  # False: items with equal session counts stay tied
        self.register_buffer("level", torch.zeros(0))  # (N,) popularity level in [0, 1)
        self.register_buffer("counts", torch.zeros(0, 0), persistent=False)  # (B, N) per-slot state

    @property
    def n_items(self) -> int:
        return self.level.shape[0]

    def fit(self, items: np.ndarray, offsets: np.ndarray, n_items: int) -> None:
        """Compute the popularity levels from the training events (`offsets` is unused)."""
        pop = _event_counts(items, n_items).numpy()
        distinct, dense_rank = np.unique(pop, return_inverse=True)  # ascending counts
        level = dense_rank.astype(np.float32) / np.float32(len(distinct))
        if not self.popularity_ties:
            level[:] = 0.0
        self.level = torch.from_numpy(level).to(self.level.device)

    def begin(self, batch_size: int, device: torch.device | str | None = None) -> None:
        """Allocate zeroed (batch_size, N) session counts on `device` (default: the buffers' device)."""
        device = self.level.device if device is None else device
        self.counts = torch.zeros(batch_size, self.n_items, device=device)  # (B, N)

    def forward(self, inputs: Tensor, reset: Tensor) -> Tensor:
        if self.counts.shape != (inputs.shape[0], self.n_items):
            raise RuntimeError(f"call begin({inputs.shape[0]}) before stepping a batch of that size")
        self.counts[reset] = 0.0  # (B, N) new sessions start empty
        valid = inputs >= 0  # (B,) a negative input (padding) counts nothing
        rows = torch.arange(inputs.shape[0], device=inputs.device)
        self.counts[rows[valid], inputs[valid]] += 1.0
        return self.counts + self.level  # (B, N)
