"""Session-parallel iterator: hand-written grids, a naive reference loop, properties, DDP sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sessrec.data.batching import (
    Block, SessionParallelIterator, count_steps, max_rank_sessions, rank_sessions,
)
from sessrec.errors import ConfigError, DataError


def offsets_of(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def naive_grid(items: np.ndarray, offsets: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1):
    """Straight from the description: one Python step at a time. Returns rows of (inp, tgt, reset, active)."""
    queue = [
        s for s in range(len(offsets) - 1) if s % world_size == rank and offsets[s + 1] - offsets[s] >= 2
    ]
    queue.reverse()
    slots: list[list[int] | None] = [None] * batch_size  # [position, end] per slot
    fresh = [False] * batch_size
    for i in range(batch_size):
        if queue:
            s = queue.pop()
            slots[i], fresh[i] = [int(offsets[s]), int(offsets[s + 1])], True
    rows = []
    while any(slot is not None for slot in slots):
        row = []
        for i, slot in enumerate(slots):
            if slot is None:
                row.append((0, 0, False, False))
            else:
                row.append((int(items[slot[0]]), int(items[slot[0] + 1]), fresh[i], True))
        rows.append(row)
        fresh = [False] * batch_size
        for i, slot in enumerate(slots):  # increasing slot order
            if slot is None:
                continue
            slot[0] += 1
            if slot[0] + 1 >= slot[1]:
                slots[i] = None
                if queue:
                    s = queue.pop()
                    slots[i], fresh[i] = [int(offsets[s]), int(offsets[s + 1])], True
    return rows


def naive_blocks(items, offsets, batch_size, steps_per_block, rank=0, world_size=1):
    """The naive grid padded to the longest rank, reset on the first row, cut into blocks."""
    grids = [naive_grid(items, offsets, batch_size, r, world_size) for r in range(world_size)]
    total = max(len(g) for g in grids)
    rows = grids[rank] + [[(0, 0, False, False)] * batch_size] * (total - len(grids[rank]))
    arr = np.array(rows, dtype=np.int64).reshape(total, batch_size, 4)  # (T_all, B, 4)
    if total:
        arr[0, :, 2] = 1
    return [arr[t : t + steps_per_block] for t in range(0, total, steps_per_block)]


def stacked(block: Block) -> np.ndarray:
    return torch.stack([block.inputs, block.targets, block.reset.long(), block.active.long()], -1).numpy()


def check_against_naive(items, offsets, batch_size, steps_per_block, rank=0, world_size=1) -> None:
    it = SessionParallelIterator(items, offsets, batch_size, steps_per_block, rank, world_size)
    expected = naive_blocks(items, offsets, batch_size, steps_per_block, rank, world_size)
    for _ in range(2):  # each iter() is a fresh epoch
        blocks = list(it)
        assert len(blocks) == len(expected) == len(it)
        for got, want in zip(blocks, expected):
            assert got.inputs.dtype == got.targets.dtype == torch.int64
            assert got.reset.dtype == got.active.dtype == torch.bool
            np.testing.assert_array_equal(stacked(got), want)
            assert got.n_events == int(want[:, :, 3].sum())


def test_hand_written_grid() -> None:
    # sessions [10 11 12], [20 21], [30 31 32 33], B=2, T=3
    #   step 0: slot0 10->11 (reset), slot1 20->21 (reset); slot1 ends, takes session 2
    #   step 1: slot0 11->12,         slot1 30->31 (reset); slot0 ends, nothing left: inactive
    #   step 2: slot0 --,             slot1 31->32
    #   step 3: slot0 --,             slot1 32->33          (second block, T=1)
    items = np.array([10, 11, 12, 20, 21, 30, 31, 32, 33])
    blocks = list(SessionParallelIterator(items, offsets_of([3, 2, 4]), batch_size=2, steps_per_block=3))
    assert [b.steps for b in blocks] == [3, 1]
    inputs = torch.cat([b.inputs for b in blocks])
    targets = torch.cat([b.targets for b in blocks])
    reset = torch.cat([b.reset for b in blocks])
    active = torch.cat([b.active for b in blocks])
    assert inputs.tolist() == [[10, 20], [11, 30], [0, 31], [0, 32]]
    assert targets.tolist() == [[11, 21], [12, 31], [0, 32], [0, 33]]
    assert reset.tolist() == [[True, True], [False, True], [False, False], [False, False]]
    assert active.tolist() == [[True, True], [True, True], [False, True], [False, True]]
    assert [b.n_events for b in blocks] == [5, 1]
    assert count_steps(offsets_of([3, 2, 4]), 2) == 4


def test_simultaneous_frees_take_sessions_in_slot_order() -> None:
    # lengths 2,2,3,2 with B=2: both slots free after step 0; slot 0 gets session 2, slot 1 session 3
    items = np.arange(9)
    (block,) = SessionParallelIterator(items, offsets_of([2, 2, 3, 2]), batch_size=2, steps_per_block=8)
    assert block.inputs.tolist() == [[0, 2], [4, 7], [5, 0]]
    assert block.reset.tolist() == [[True, True], [True, True], [False, False]]
    assert block.active.tolist() == [[True, True], [True, True], [True, False]]


def test_max_rank_sessions_counts_what_a_batch_can_fill() -> None:
    """Sessions of >= 2 events, the most on any rank: slots beyond them would only hold padding."""
    offsets = np.array([0, 3, 4, 6, 6, 9, 11])  # lengths 3, 1, 2, 0, 3, 2: sessions 0, 2, 4, 5 count
    assert max_rank_sessions(offsets) == 4
    assert max_rank_sessions(offsets, world_size=2) == 3  # rank 0: sessions 0, 2, 4; rank 1: 5
    assert max_rank_sessions(offsets, world_size=8) == 1
    assert max_rank_sessions(np.array([0])) == 0
    items = np.arange(11)
    capped = SessionParallelIterator(items, offsets, batch_size=4, steps_per_block=2)
    padded = SessionParallelIterator(items, offsets, batch_size=9, steps_per_block=2)
    for a, b in zip(capped, padded, strict=True):  # the same schedule, without the padding columns
        assert torch.equal(a.inputs, b.inputs[:, :4]) and torch.equal(a.targets, b.targets[:, :4])
        assert not b.active[:, 4:].any()


def test_short_sessions_skipped_and_initial_inactive_slots() -> None:
    items = np.arange(7)
    (block,) = SessionParallelIterator(items, offsets_of([1, 3, 0, 1, 2]), batch_size=4, steps_per_block=8)
    assert block.inputs.tolist() == [[1, 5, 0, 0], [2, 0, 0, 0]]
    assert block.reset[0].all() and not block.reset[1].any()  # all slots reset at the epoch start
    assert block.active.tolist() == [[True, True, False, False], [True, False, False, False]]


@pytest.mark.parametrize("batch_size", [1, 3, 8, 50])
@pytest.mark.parametrize("steps_per_block", [1, 4, 32])
def test_matches_naive_loop(batch_size: int, steps_per_block: int) -> None:
    rng = np.random.default_rng(batch_size * 100 + steps_per_block)
    lengths = rng.integers(0, 9, size=40)  # includes empty and single-event sessions
    offsets = offsets_of(lengths.tolist())
    items = rng.integers(0, 1000, size=offsets[-1])
    check_against_naive(items, offsets, batch_size, steps_per_block)


@pytest.mark.parametrize("world_size", [2, 3])
def test_matches_naive_loop_ddp(world_size: int) -> None:
    rng = np.random.default_rng(world_size)
    offsets = offsets_of(rng.integers(1, 12, size=61).tolist())
    items = rng.integers(0, 1000, size=offsets[-1])
    for rank in range(world_size):
        check_against_naive(items, offsets, 4, 5, rank, world_size)


def test_no_sessions() -> None:
    it = SessionParallelIterator(np.arange(2), offsets_of([1, 1]), batch_size=4)
    assert len(it) == 0 and list(it) == []


def test_count_steps_matches_iteration_large() -> None:
    rng = np.random.default_rng(1)
    offsets = offsets_of((1 + rng.geometric(0.3, size=20_000)).tolist())
    it = SessionParallelIterator(np.zeros(offsets[-1], np.int64), offsets, batch_size=16, steps_per_block=32)
    blocks = list(it)
    steps = sum(b.steps for b in blocks)
    assert steps == it.total_steps == count_steps(offsets, 16)
    assert blocks[-1].active[-1].any()  # the last step still has an event: no extra padding
    assert all(b.steps == 32 for b in blocks[:-1])
    assert sum(b.n_events for b in blocks) == it.n_events == offsets[-1] - 20_000


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        SessionParallelIterator(np.arange(3), offsets_of([3]), batch_size=0)
    with pytest.raises(ConfigError, match="rank"):
        SessionParallelIterator(np.arange(3), offsets_of([3]), batch_size=2, rank=2, world_size=2)
    with pytest.raises(DataError, match="non-decreasing"):
        SessionParallelIterator(np.arange(3), np.array([0, 2, 1, 3]), batch_size=2)
    with pytest.raises(DataError, match="only 3 events"):
        SessionParallelIterator(np.arange(3), offsets_of([3, 2]), batch_size=2)


def test_block_to_keeps_fields() -> None:
    (block,) = SessionParallelIterator(np.arange(5), offsets_of([5]), batch_size=2)
    moved = block.to("cpu")
    assert moved.n_events == 4 and torch.equal(moved.inputs, block.inputs)


# ---------------------------------------------------------------- properties (unique item ids = positions)

lengths_st = st.lists(st.integers(0, 7), min_size=0, max_size=30)


def event_pairs(blocks: list[Block]) -> list[tuple[int, int]]:
    pairs = []
    for b in blocks:
        mask = b.active
        pairs += list(zip(b.inputs[mask].tolist(), b.targets[mask].tolist()))
    return pairs


def expected_pairs(offsets: np.ndarray, sessions: np.ndarray) -> set[tuple[int, int]]:
    return {(p, p + 1) for s in sessions for p in range(offsets[s], offsets[s + 1] - 1)}


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, batch_size=st.integers(1, 9), steps_per_block=st.integers(1, 6))
def test_each_pair_once_and_resets_at_session_starts(lengths, batch_size, steps_per_block) -> None:
    offsets = offsets_of(lengths)
    items = np.arange(offsets[-1])
    blocks = list(SessionParallelIterator(items, offsets, batch_size, steps_per_block))
    pairs = event_pairs(blocks)
    assert len(pairs) == len(set(pairs))  # each event predicted once
    assert set(pairs) == expected_pairs(offsets, rank_sessions(offsets))  # all, never across sessions
    starts = set(offsets[:-1][np.diff(offsets) >= 2].tolist())
    for i, b in enumerate(blocks):
        assert not (b.active.logical_not() & (b.inputs != 0)).any()
        is_start = torch.tensor([[x in starts for x in row] for row in b.inputs.tolist()], dtype=torch.bool)
        body = b.reset[1:] if i == 0 else b.reset
        want = (b.active & is_start)[1:] if i == 0 else b.active & is_start
        assert torch.equal(body, want)  # reset exactly at session starts
    if blocks:
        assert blocks[0].reset[0].all()
    # within a slot, an active row without reset continues the previous row's session
    grid_in = torch.cat([b.inputs for b in blocks]) if blocks else torch.zeros(0, batch_size)
    grid_tg = torch.cat([b.targets for b in blocks]) if blocks else grid_in
    grid_rs = torch.cat([b.reset for b in blocks]) if blocks else grid_in.bool()
    grid_ac = torch.cat([b.active for b in blocks]) if blocks else grid_in.bool()
    cont = grid_ac[1:] & ~grid_rs[1:]  # (T-1, B)
    assert torch.equal(grid_in[1:][cont], grid_tg[:-1][cont])


@settings(max_examples=40, deadline=None)
@given(lengths=lengths_st, batch_size=st.integers(1, 6), world_size=st.integers(2, 4))
def test_ddp_shards_disjoint_cover_all_same_length(lengths, batch_size, world_size) -> None:
    offsets = offsets_of(lengths)
    items = np.arange(offsets[-1])
    iters = [SessionParallelIterator(items, offsets, batch_size, 3, r, world_size) for r in range(world_size)]
    per_rank = [list(it) for it in iters]
    assert len({len(it) for it in iters}) == 1
    assert all(len(blocks) == len(iters[0]) for blocks in per_rank)
    assert len({tuple(b.steps for b in blocks) for blocks in per_rank}) == 1
    pair_sets = [set(event_pairs(blocks)) for blocks in per_rank]
    assert sum(len(p) for p in pair_sets) == len(set().union(*pair_sets))  # disjoint
    assert set().union(*pair_sets) == expected_pairs(offsets, rank_sessions(offsets))
