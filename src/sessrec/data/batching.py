"""Session-parallel mini-batches (GRU4Rec's training and evaluation iterator), as fixed-shape blocks.

Slot ``i`` of a batch of ``B`` holds one session; each step feeds item ``t`` and targets item ``t+1``.
When a session ends, the next unused session (sessions in the given order, i.e. by first event time)
takes the slot and that slot's ``reset`` is True at the step feeding its first item. When several
slots free up at the same step they take new sessions in increasing slot order (the reference's
order). When no sessions are left, finished slots stay as inactive rows (``active`` False, inputs and
targets 0) instead of shrinking the batch, and the epoch ends when every slot is inactive.

Deliberate differences from the reference: sessions with fewer than 2 events (nothing to predict) are
skipped silently; ``reset`` is True for every slot, active or not, at the first step of an epoch.

Under DDP, rank ``r`` takes the sessions whose index (in the full split) satisfies
``index % world_size == r`` and every rank yields ``max`` over ranks steps: ranks that finish early pad
with fully inactive steps, so collective operations never hang.

Steps are grouped into blocks of ``steps_per_block`` steps (only the last block may be shorter). The
epoch is generated lazily: per block, a loop over the distinct times at which slots free up assigns new
sessions (numpy over the slots), then the whole ``(T, B)`` grid is filled with one vectorised scatter.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from sessrec.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sessrec.data.prepared import Split

_INF = np.iinfo(np.int64).max
_HEAP_CHUNK = 1 << 20  # sessions converted to Python ints at a time in count_steps


@dataclass
class Block:
    """``T`` session-parallel steps of a batch of ``B`` slots."""

    inputs: torch.Tensor  # (T, B) int64 item fed at each step (0 where inactive)
    targets: torch.Tensor  # (T, B) int64 next item to predict (0 where inactive)
    reset: torch.Tensor  # (T, B) bool zero the slot's hidden state before this step
    active: torch.Tensor  # (T, B) bool the row holds a real (input, target) pair
    n_events: int  # number of active rows (computed on the host)

    @property
    def steps(self) -> int:
        return self.inputs.shape[0]

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[1]

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Block:
        """A copy on ``device`` (non-blocking; effective from pinned memory)."""
        return Block(
            self.inputs.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.reset.to(device, non_blocking=non_blocking),
            self.active.to(device, non_blocking=non_blocking),
            self.n_events,
        )

    def pin_memory(self) -> Block:
        """Pinned copy (used by ``DataLoader(pin_memory=True)``)."""
        return Block(
            self.inputs.pin_memory(),
            self.targets.pin_memory(),
            self.reset.pin_memory(),
            self.active.pin_memory(),
            self.n_events,
        )


def _check_offsets(offsets: np.ndarray, n_events: int | None = None) -> np.ndarray:
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or offsets.size == 0 or not np.issubdtype(offsets.dtype, np.integer):
        raise DataError(f"offsets must be a non-empty 1-D integer array (got shape {offsets.shape})")
    offsets = offsets.astype(np.int64, copy=False)
    if offsets[0] < 0 or np.any(offsets[1:] < offsets[:-1]):
        raise DataError("offsets must be non-negative and non-decreasing")
    if n_events is not None and offsets[-1] > n_events:
        raise DataError(f"offsets end at {offsets[-1]} but there are only {n_events} events")
    return offsets


def with_sentinels(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(items (E+S,), offsets (S+1,)) of `split` with `-(s + 1)` appended to each session s: the sentinel
    step is the one fed the session's last event (prediction, `sessrec.evaluation.predict`)."""
    offsets = np.asarray(split.offsets, dtype=np.int64)  # (S+1,)
    items = np.asarray(split.items, dtype=np.int64)[offsets[0] : offsets[-1]]  # (E,)
    n_sessions = offsets.size - 1
    new_offsets = offsets - offsets[0] + np.arange(n_sessions + 1, dtype=np.int64)  # (S+1,)
    out = np.empty(items.size + n_sessions, dtype=np.int64)  # (E+S,)
    is_sentinel = np.zeros(out.size, dtype=np.bool_)  # (E+S,)
    is_sentinel[new_offsets[1:] - 1] = True
    out[is_sentinel] = -np.arange(1, n_sessions + 1, dtype=np.int64)
    out[~is_sentinel] = items
    return out, new_offsets


def rank_sessions(offsets: np.ndarray, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Indices (S_r,) of the sessions rank ``rank`` iterates: ``index % world_size == rank``, >= 2 events."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size) (got rank={rank}, world_size={world_size})")
    offsets = _check_offsets(offsets)
    ids = np.arange(rank, offsets.size - 1, world_size, dtype=np.int64)  # (S_r',)
    lengths = offsets[ids + 1] - offsets[ids]  # (S_r',)
    return ids[lengths >= 2]


def max_rank_sessions(offsets: np.ndarray, world_size: int = 1) -> int:
    """The most sessions of >= 2 events any of ``world_size`` ranks iterates (`rank_sessions`): batch
    slots beyond it would stay inactive all epoch."""
    offsets = _check_offsets(offsets)
    ids = np.flatnonzero(np.diff(offsets) >= 2)  # (S',) sessions with something to predict
    return int(np.bincount(ids % world_size, minlength=world_size).max())


def count_steps(offsets: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1) -> int:
    """Number of session-parallel steps rank ``rank`` needs for its own sessions (without DDP padding).

    A session of L events occupies its slot for L - 1 steps and the next session takes the slot that
    frees first; the step count is the latest finish time. Only the multiset of slot free times matters,
    so a heap of ``batch_size`` ints is replayed over the sessions (O(S log B), about 0.2 us a session).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (got {batch_size})")
    offsets = _check_offsets(offsets)
    ids = rank_sessions(offsets, rank, world_size)
    steps = offsets[ids + 1] - offsets[ids] - 1  # (S_r,) steps each session occupies
    if steps.size <= batch_size:
        return int(steps.max(initial=0))
    heap = steps[:batch_size].tolist()
    heapq.heapify(heap)
    replace = heapq.heapreplace
    for lo in range(batch_size, steps.size, _HEAP_CHUNK):
        for s in steps[lo : lo + _HEAP_CHUNK].tolist():
            replace(heap, heap[0] + s)
    return max(heap)


class _Schedule:
    """One epoch's slot state for one rank: which session each slot holds and until when."""

    def __init__(self, steps: np.ndarray, batch_size: int) -> None:
        self.steps = steps  # (S_r,) steps each session occupies
        n0 = min(batch_size, steps.size)
        self.cur = np.full(batch_size, -1, dtype=np.int64)  # (B,) session held (-1: none)
        self.start = np.zeros(batch_size, dtype=np.int64)  # (B,) step its session started
        self.free = np.full(batch_size, _INF, dtype=np.int64)  # (B,) step the slot frees up
        self.cur[:n0] = np.arange(n0)
        self.free[:n0] = steps[:n0]
        self.next = n0  # next unused session

    def advance(self, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Assign sessions to slots freeing before ``t1``; return every (slot, session, start) segment
        that may overlap the window ending at ``t1`` (the ones held at its start, then the new ones)."""
        held = np.flatnonzero(self.cur >= 0)  # (H,) slots holding a session
        held_sess, held_start = self.cur[held], self.start[held]  # (H,)
        first_new, n = self.next, self.steps.size
        free, taken, times, counts = self.free, [held], [], []
        while (m := int(free.min())) < t1:
            idx = (free == m).nonzero()[0]  # (F,) slots freeing at m, increasing slot order
            k, c = self.next, min(idx.size, n - self.next)
            if c < idx.size:  # no sessions left for the last slots: they become inactive
                self.cur[idx[c:]], free[idx[c:]] = -1, _INF
                idx = idx[:c]
            self.cur[idx], self.start[idx], free[idx] = np.arange(k, k + c), m, self.steps[k : k + c] + m
            self.next += c
            taken.append(idx)
            times.append(m)
            counts.append(c)
        sess = np.concatenate((held_sess, np.arange(first_new, self.next)))  # (G,)
        starts = np.concatenate((held_start, np.repeat(np.array(times, np.int64), counts)))  # (G,)
        return np.concatenate(taken), sess, starts


class SessionParallelIterator:
    """Iterable over the session-parallel :class:`Block` s of one epoch (each ``iter()`` starts afresh).

    ``items (E,)`` and ``offsets (S+1,)`` are a split's events grouped by session, sessions already
    ordered by first event time. See the module docstring for the exact semantics.
    """

    def __init__(
        self,
        items: np.ndarray,
        offsets: np.ndarray,
        batch_size: int,
        steps_per_block: int = 32,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 (got {batch_size})")
        if steps_per_block < 1:
            raise ConfigError(f"steps_per_block must be >= 1 (got {steps_per_block})")
        self.items = np.asarray(items)  # (E,) no copy
        self.offsets = _check_offsets(offsets, self.items.size)  # (S+1,)
        self.batch_size, self.steps_per_block = batch_size, steps_per_block
        self.rank, self.world_size = rank, world_size
        self.sessions = rank_sessions(self.offsets, rank, world_size)  # (S_r,)
        self._first = self.offsets[self.sessions]  # (S_r,)
        self._steps = self.offsets[self.sessions + 1] - self._first - 1  # (S_r,)
        self._total_steps: int | None = None

    @property
    def total_steps(self) -> int:
        """Steps per epoch on every rank (max over ranks); computed once, O(S log B)."""
        if self._total_steps is None:
            self._total_steps = max(
                count_steps(self.offsets, self.batch_size, r, self.world_size) for r in range(self.world_size)
            )
        return self._total_steps

    @property
    def n_events(self) -> int:
        """Active (input, target) pairs this rank yields per epoch."""
        return int(self._steps.sum())

    def __len__(self) -> int:
        return -(-self.total_steps // self.steps_per_block)

    def __iter__(self) -> Iterator[Block]:
        return self.blocks()

    def blocks(self, start: int = 0) -> Iterator[Block]:
        """The epoch's blocks from block ``start`` on (a mid-epoch resume): the earlier blocks' slot
        assignments are replayed but their tensors are not built."""
        schedule = _Schedule(self._steps, self.batch_size)
        total = self.total_steps
        for i, t0 in enumerate(range(0, total, self.steps_per_block)):
            t1 = min(t0 + self.steps_per_block, total)
            segments = schedule.advance(t1)
            if i < start:
                continue
            block = self._fill(t0, t1, *segments)
            if t0 == 0:
                block.reset[0] = True
            yield block

    def _fill(self, t0: int, t1: int, slots: np.ndarray, sess: np.ndarray, starts: np.ndarray) -> Block:
        """Scatter the segments' events into a fresh ``(t1 - t0, B)`` block."""
        shape = (t1 - t0, self.batch_size)
        inputs, targets = np.zeros(shape, np.int64), np.zeros(shape, np.int64)  # (T, B)
        reset, active = np.zeros(shape, np.bool_), np.zeros(shape, np.bool_)  # (T, B)
        lo = np.maximum(starts, t0)  # (G,) first step of each segment inside the window
        n = np.clip(np.minimum(starts + self._steps[sess], t1) - lo, 0, None)  # (G,) its steps there
        total = int(n.sum())
        if total:
            seg = np.repeat(np.arange(n.size), n)  # (M,) segment of each cell
            t = lo[seg] + np.arange(total) - np.repeat(np.cumsum(n) - n, n)  # (M,) global step
            rows, cols = t - t0, slots[seg]  # (M,)
            pos = self._first[sess[seg]] + (t - starts[seg])  # (M,) event index of the input
            inputs[rows, cols] = self.items[pos]
            targets[rows, cols] = self.items[pos + 1]
            reset[rows, cols] = t == starts[seg]
            active[rows, cols] = True
        tensors = (torch.from_numpy(a) for a in (inputs, targets, reset, active))
        return Block(*tensors, n_events=total)
