"""Property-based tests (hypothesis) that tests/data does not already have.

- readers: any event log written as CSV, TSV or parquet reads back exactly (ids as strings, including
  ones pandas would take for missing values), and `sessionize` cuts exactly at gaps > `gap`;
- preprocessing: the output does not depend on the input's row order, keeps only input events, and has
  no consecutive repeats;
- session-parallel iterator: a mid-epoch resume (`blocks(start)`, and the data loader's saved position)
  continues the very same epoch, so every event is still predicted exactly once and never across a
  session boundary. (Coverage and boundaries of a whole epoch, and DDP sharding, are in
  tests/data/test_batching.py; the preprocessing invariants in tests/data/test_preprocess.py.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sessrec.data.batching import SessionParallelIterator, rank_sessions
from sessrec.data.datamodule import _BlockDataset, _BlockLoader
from sessrec.data.preprocess import preprocess
from sessrec.data.readers import read_events, sessionize
from sessrec.errors import DataError

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# item ids: short strings over an alphabet with digits (leading zeros), separators and quotes, plus the
# spellings pandas reads as missing by default
item_ids = st.one_of(
    st.text(alphabet="0179abZ _-'\",;|", min_size=1, max_size=5).filter(lambda s: s.strip() == s),
    st.sampled_from(["NA", "N/A", "null", "None", "nan", "NaN", "-1.#IND", "007", "1e3"]),
)
rows = st.lists(
    st.tuples(st.integers(0, 8), item_ids, st.integers(0, 10**6)), min_size=1, max_size=40
)


@SETTINGS
@given(rows=rows, fmt=st.sampled_from(["csv", "tsv", "parquet"]))
def test_event_log_round_trip(tmp_path: Path, rows, fmt: str) -> None:
    frame = pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])
    path = tmp_path / f"log.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
    events = read_events(path)
    assert events["session"].dtype == np.int64 and events["time"].dtype == np.float64
    assert events["session"].tolist() == frame["SessionId"].tolist()
    assert events["item"].tolist() == frame["ItemId"].tolist()  # strings, exactly as written
    assert events["time"].tolist() == frame["Time"].astype(float).tolist()


@SETTINGS
@given(
    users=st.lists(st.integers(0, 3), min_size=1, max_size=40),
    data=st.data(),
    gap=st.floats(1.0, 50.0),
)
def test_sessionize_cuts_exactly_at_gaps(users, data, gap: float) -> None:
    n = len(users)
    times = np.array(data.draw(st.lists(st.integers(0, 200), min_size=n, max_size=n)), float)
    user = pd.Series(users)
    session = sessionize(user, times, gap)
    assert sorted(set(session.tolist())) == list(range(len(set(session.tolist()))))  # numbered 0..S-1
    for u in set(users):
        idx = np.flatnonzero(user.to_numpy() == u)
        order = idx[np.lexsort((idx, times[idx]))]  # by time, ties in file order
        steps = np.diff(times[order])
        same = session[order][1:] == session[order][:-1]
        assert np.array_equal(same, steps <= gap)  # a new session exactly where the gap exceeds `gap`
    firsts = {}
    for s, u, t in zip(session, users, times):
        firsts.setdefault(s, (u, t))
        assert firsts[s][0] == u  # never two users in one session
        firsts[s] = (u, min(firsts[s][1], t))
    keys = [firsts[s] for s in sorted(firsts)]
    assert keys == sorted(keys)  # numbered by (user, first time)


events_st = st.lists(
    st.tuples(st.integers(0, 15), st.sampled_from("abcdefgh"), st.integers(0, 30)), min_size=1, max_size=120
)


def _frame(rows) -> pd.DataFrame:
    # distinct times within a session, so the (session, time) order is total and row order cannot matter
    seen, out = set(), []
    for s, i, t in rows:
        if (s, t) not in seen:
            seen.add((s, t))
            out.append((s, i, t * 6 * 3600.0))
    return pd.DataFrame(out, columns=["session", "item", "time"])


@SETTINGS
@given(rows=events_st, seed=st.integers(0, 2**16), support=st.integers(1, 3))
@example(rows=[(0, "a", 0), (0, "b", 1), (1, "a", 0), (1, "a", 7), (1, "c", 1), (2, "a", 4), (2, "b", 0)],
         seed=0, support=1)  # test restricted to the training items: a, (c), a
@example(rows=[(0, "a", 0), (0, "c", 7), (1, "a", 1), (1, "c", 0), (2, "a", 4), (2, "c", 0)],
         seed=0, support=1)  # two sessions with the same (item, time)
def test_preprocess_ignores_row_order_and_keeps_only_input_events(rows, seed: int, support: int) -> None:
    events = _frame(rows)
    opts = dict(min_item_support=support, test_days=0.5, valid_days=0.5)
    shuffled = events.sample(frac=1.0, random_state=seed)
    try:
        out = preprocess(events, **opts)
    except DataError:
        with pytest.raises(DataError):
            preprocess(shuffled, **opts)
        return
    again = preprocess(shuffled, **opts)
    assert out.item_ids.tolist() == again.item_ids.tolist()
    source = Counter(zip(events["item"], events["time"]))  # two sessions may share an (item, time)
    for name, frame in out.splits.items():
        pd.testing.assert_frame_equal(frame, again.splits[name])
        got = Counter(zip(out.item_ids[frame["item"].to_numpy()], frame["time"]))
        assert not got - source  # input events only, none more often than in the input
        same_session = frame["session"].to_numpy()[1:] == frame["session"].to_numpy()[:-1]
        repeat = frame["item"].to_numpy()[1:] == frame["item"].to_numpy()[:-1]
        if support == 1 and name in ("train_full", "train"):  # no event of a kept session was filtered out
            assert not (same_session & repeat).any()  # consecutive duplicates removed
        # (a support filter, or valid / test restricted to the training items, drops events from inside
        # sessions and can make two equal items neighbours: the dedup runs on the input, as documented)
    full = set(zip(out.splits["train_full"]["session"], out.splits["train_full"]["time"]))
    assert len(full) == len(out.splits["train_full"])


lengths_st = st.lists(st.integers(0, 7), min_size=0, max_size=30)


def _pairs(blocks) -> list[tuple[int, int]]:
    pairs = []
    for b in blocks:
        pairs += list(zip(b.inputs[b.active].tolist(), b.targets[b.active].tolist()))
    return pairs


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("inputs", "targets", "reset", "active"))


@SETTINGS
@given(lengths=lengths_st, batch_size=st.integers(1, 6), steps_per_block=st.integers(1, 5), data=st.data())
def test_resumed_epoch_is_the_same_epoch(lengths, batch_size: int, steps_per_block: int, data) -> None:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.arange(offsets[-1])  # item = event position: a pair (p, p + 1) names the event
    it = SessionParallelIterator(items, offsets, batch_size, steps_per_block)
    full = list(it)
    start = data.draw(st.integers(0, len(full)))
    tail = list(it.blocks(start))
    assert len(tail) == len(full) - start and all(_same(a, b) for a, b in zip(tail, full[start:]))

    # the same through the data loader's saved position, as a checkpoint taken after `start` blocks
    loader = _BlockLoader(_BlockDataset(it), batch_size=None)
    blocks = iter(loader)
    before = [next(blocks) for _ in range(start)]  # `start` blocks trained, then a checkpoint
    state = loader.state_dict()
    fresh = SessionParallelIterator(items, offsets, batch_size, steps_per_block)  # a new process's
    resumed = _BlockLoader(_BlockDataset(fresh), batch_size=None)
    resumed.load_state_dict(state)
    after = list(resumed)
    blocks = before + after
    if start < len(full):
        assert len(blocks) == len(full) and all(_same(a, b) for a, b in zip(blocks, full))
    else:
        assert state == {"blocks": 0} and len(after) == len(full)  # epoch done: the next one starts
        blocks = before
    pairs = _pairs(blocks)
    expected = {(p, p + 1) for s in rank_sessions(offsets) for p in range(offsets[s], offsets[s + 1] - 1)}
    assert len(pairs) == len(set(pairs)) and set(pairs) == expected  # each event once, within its session
