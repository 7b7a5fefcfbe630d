"""`preprocess` on polars: the same steps and results as `sessrec.data.preprocess`, on integer columns.

Item ids are dictionary-encoded once (`encode`): a polars Enum over the sorted distinct ids, whose
physical codes (UInt32) therefore order like the ids as strings; string session keys are encoded the same
way. Every later step (ordering, dedup, iterative support filter, time split, restriction to train items,
finalisation) sorts, counts and filters these integer columns; only the item index itself is text.
Ordering ties are broken by row order (polars' stable sort), exactly as the pandas path's lexsort does,
so the two engines write identical prepared folders. Each step logs its counts and seconds at INFO.

`preprocess_columnar` sorts the log once (session, then time) into numpy columns (`Events`, 16 bytes an
event) and keeps that order to the end: neighbours for dedup, chunked bincounts for the support filter,
session ends for the time split, whole sessions moved for finalisation. The polars-frame steps below
(`order_events`, `filter_support`, ..., `finish`) serve the import of pre-split files (`presplit`).
"""

from __future__ import annotations

import logging
import time as clock
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl

from sessrec.data.preprocess import DAY, _check_options
from sessrec.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Columnar:
    """Result of `preprocess_columnar`: four split frames (session Int64, item Int32, time Float64), the
    item index (original ids, sorted as strings) and each split's session keys (the input's key of
    session 0..S-1)."""

    splits: dict[str, pl.DataFrame]
    item_ids: pl.Series
    session_keys: dict[str, pl.Series]
    raw: dict[str, int] | None = None  # events and sessions of the input (`preprocess_columnar`)


@contextmanager
def step(name: str) -> Iterator[dict]:
    """Log '<name>: <what the block put in the dict> (<seconds> s)' at INFO when the block ends."""
    start, said = clock.perf_counter(), {}
    yield said
    log.info("%s: %s (%.2f s)", name, said.get("what", "done"), clock.perf_counter() - start)


def encode(frames: list[pl.DataFrame]) -> tuple[list[pl.DataFrame], pl.Series, list[pl.Series | None]]:
    """Frames (session, item str, time) -> (session Int64 or UInt32 code, item UInt32 code, time); ids;
    per frame its session keys by code (None: integer keys, kept as they are).

    Item codes index the returned ids (sorted distinct items of all frames). String session keys become
    codes in string order: the code of a key is its position in that frame's sorted distinct keys.
    """
    given = frames[0]["item"].dtype
    if len(frames) == 1 and isinstance(given, pl.Enum) and given.categories.is_sorted():
        ids, items = given.categories, given  # encoded by the reader already
    else:
        ids = pl.concat([f["item"].cast(pl.String) for f in frames]).unique().sort()
        items = pl.Enum(ids)
    out, decoders = [], []
    for frame in frames:
        session, decoder = frame["session"], None
        if not session.dtype.is_integer():
            keys = session.cast(pl.String)
            decoder = keys.unique().sort()
            session = keys.cast(pl.Enum(decoder)).to_physical()
        decoders.append(decoder)
        out.append(
            pl.DataFrame(
                {
                    "session": session.cast(pl.Int64),
                    "item": _item_codes(frame["item"], items),
                    "time": frame["time"].cast(pl.Float64),
                }
            )
        )
    return out, ids, decoders


def session_keys(codes: pl.Series | np.ndarray, decoder: pl.Series | None) -> pl.Series:
    """The original session keys of encoded keys `codes` (`encode`): decoded strings, or the integers."""
    codes = pl.Series("key", codes)
    return codes.cast(pl.Int64) if decoder is None else decoder.gather(codes).alias("key")


def _item_codes(item: pl.Series, enum: pl.Enum) -> pl.Series:
    """UInt32 codes of `item` in `enum` (no string copy when the reader encoded it already)."""
    return (item if item.dtype == enum else item.cast(pl.String).cast(enum)).to_physical()


def order_events(data: pl.DataFrame) -> pl.DataFrame:
    """Events by session key, then time; ties keep their input order."""
    return data.sort(["session", "time"], maintain_order=True)


def drop_consecutive_duplicates(data: pl.DataFrame) -> pl.DataFrame:
    """Drop an event whose item equals the previous event's item in the same session (ordered input)."""
    repeat = (pl.col("session") == pl.col("session").shift(1)) & (pl.col("item") == pl.col("item").shift(1))
    return data.filter(~repeat.fill_null(False))


def filter_support(data: pl.DataFrame, min_item_support: int, min_session_length: int) -> pl.DataFrame:
    """Iteratively keep items with >= min_item_support events and sessions with >= min_session_length."""
    rounds = 0
    while True:
        rounds += 1
        kept = data.filter(pl.len().over("item") >= min_item_support)
        kept = kept.filter(pl.len().over("session") >= min_session_length)
        if kept.height == data.height:
            log.debug("support filter stable after %d round(s): %d events", rounds, kept.height)
            return kept
        data = kept


def split_by_time(data: pl.DataFrame, days: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(before, last): sessions whose last event is >= max time - days * 86400 go to `last`."""
    cutoff = data["time"].max() - days * DAY
    last = pl.col("time").max().over("session") >= cutoff
    return data.filter(~last), data.filter(last)


def restrict_items(data: pl.DataFrame, items: pl.Series, min_length: int = 2) -> pl.DataFrame:
    """Keep events of `items`, then sessions with >= min_length events (once, as in the reference)."""
    data = data.filter(pl.col("item").is_in(items.implode()))
    return data.filter(pl.len().over("session") >= min_length)


def finalize(data: pl.DataFrame, index: np.ndarray) -> tuple[pl.DataFrame, pl.Series]:
    """Sessions by first time then key, events by time; session 0..S-1; item -> index[item] (int32).
    Also returns the session column's value (S,) of each new session 0..S-1."""
    first = pl.col("time").min().over("session").alias("first")
    ordered = data.with_columns(first).sort(["first", "session", "time"], maintain_order=True)
    new = (pl.col("session") != pl.col("session").shift(1)).fill_null(True)
    item = index[ordered["item"].to_numpy()]  # (E,) int32
    if len(item) and item.min() < 0:
        raise ValueError("finalize: an item is missing from the item index")  # a bug, not a user error
    frame = pl.DataFrame(
        {
            "session": ordered.select(new.cum_sum().cast(pl.Int64) - 1).to_series(),
            "item": pl.Series(item, dtype=pl.Int32),
            "time": ordered["time"],
        }
    )
    return frame, ordered.select(pl.col("session").filter(new)).to_series()


def index_of(train_full: pl.DataFrame, ids: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """(code -> item index, int32 with -1 for items outside train_full; train_full's ids in order)."""
    codes = train_full["item"].unique().sort().to_numpy()  # (N,) ascending codes = ids sorted as str
    index = np.full(len(ids), -1, dtype=np.int32)
    index[codes] = np.arange(len(codes), dtype=np.int32)
    return index, ids.gather(codes)


def finish(frames: dict[str, pl.DataFrame], ids: pl.Series, keys: pl.Series) -> Columnar:
    """Item index from train_full, then every split finalised; logs the counts. `keys`: the original
    session key of each value of the frames' session column."""
    with step("finalise") as said:
        index, item_ids = index_of(frames["train_full"], ids)
        splits, split_keys = {}, {}
        for name, frame in frames.items():
            splits[name], codes = finalize(frame, index)
            split_keys[name] = keys.gather(codes).alias("key")
        said["what"] = ", ".join(f"{n} {f.height:,} events" for n, f in splits.items())
    return Columnar(splits=splits, item_ids=item_ids, session_keys=split_keys)



CHUNK = 1 << 23  # events per chunk of a counting pass (bounds its int64 temporaries to 64 MB)


@dataclass
class Events:
    """Events as numpy columns, ordered by session code then time (ties in input order): `session` int32
    codes (in session-key order), `item` uint32 codes (into the sorted ids), `time` float64 seconds."""

    session: np.ndarray
    item: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.session)

    def take(self, keep: np.ndarray) -> Events:
        """The events where `keep` is true, in order (one column copied at a time)."""
        return Events(self.session[keep], self.item[keep], self.time[keep])

    def starts(self) -> np.ndarray:
        """(S,) index of the first event of every session."""
        s = self.session
        return np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, dtype=np.int64)


def sorted_events(events: pl.DataFrame) -> tuple[Events, pl.Series, pl.Series]:
    """A frame (session, item, time) -> its events ordered by session key then time, the item ids, and
    the original key of every session code.

    A log already in that order (most are) is not sorted again; the columns become numpy arrays."""
    (frame,), ids, (decoder,) = encode([events])
    del events
    key, time = frame["session"].to_numpy(), frame["time"].to_numpy()
    if not (len(key) < 2 or np.all((key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & (time[1:] >= time[:-1])))):
        del key, time
        frame = frame.sort(["session", "time"], maintain_order=True)  # stable: ties keep input order
        key, time = frame["session"].to_numpy(), frame["time"].to_numpy()
    new = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    keys = session_keys(key[new], decoder)  # (S,) the input's key of every dense code
    del key
    dtype = np.int32 if new.sum() < 2**31 else np.int64
    session = np.cumsum(new, dtype=dtype) - 1  # (E,) dense codes in key order
    return Events(session, frame["item"].to_numpy(), time), ids, keys


def count(codes: np.ndarray, n: int) -> np.ndarray:
    """np.bincount(codes, minlength=n), in chunks (no full-length int64 copy of `codes`)."""
    total = np.zeros(n, dtype=np.int64)
    for i in range(0, len(codes), CHUNK):
        total += np.bincount(codes[i : i + CHUNK], minlength=n)
    return total


def session_lengths_ok(ev: Events, keep: np.ndarray, min_length: int) -> np.ndarray:
    """(E,) bool: the event is kept and its session keeps >= min_length events."""
    n = int(ev.session[-1]) + 1 if len(ev) else 0
    kept = np.zeros(n, dtype=np.int64)
    for i in range(0, len(ev), CHUNK):
        kept += np.bincount(ev.session[i : i + CHUNK][keep[i : i + CHUNK]], minlength=n)
    return keep & (kept >= min_length)[ev.session]


def support_filter(ev: Events, n_items: int, min_item_support: int, min_session_length: int) -> Events:
    """`filter_support` on sorted numpy events: items by event count, then sessions by length, iterated."""
    while True:
        keep = (count(ev.item, n_items) >= min_item_support)[ev.item]  # (E,)
        keep = session_lengths_ok(ev, keep, min_session_length)
        if keep.all():
            return ev
        ev = ev.take(keep)


def time_split(ev: Events, days: float) -> tuple[Events, Events]:
    """`split_by_time`: (before, last), `last` the sessions whose last event is >= max time - days."""
    cutoff = ev.time.max() - days * DAY
    ends = np.r_[ev.starts()[1:], len(ev)] - 1  # (S,) last event of every session (its max time)
    late = np.zeros(int(ev.session[-1]) + 1, dtype=bool)
    late[ev.session[ends]] = ev.time[ends] >= cutoff
    last = late[ev.session]  # (E,)
    return ev.take(~last), ev.take(last)


def restrict(ev: Events, known: Events, n_items: int) -> Events:
    """`restrict_items`: events of the items of `known`, then sessions with >= 2 events (once)."""
    keep = (count(known.item, n_items) > 0)[ev.item] if len(ev) else np.zeros(0, dtype=bool)
    return ev.take(session_lengths_ok(ev, keep, 2)) if len(ev) else ev


def finalize_events(ev: Events, index: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    """`finalize` on sorted numpy events: sessions by first time then key, renumbered; items indexed.
    Also returns the code (S,) of each new session 0..S-1."""
    starts = ev.starts()  # (S,)
    lengths = np.diff(np.r_[starts, len(ev)])  # (S,)
    order = np.lexsort((ev.session[starts], ev.time[starts]))  # (S,) first time (= min), then key
    if np.any(order != np.arange(len(order))):  # sessions move as blocks; events keep their order
        moved = np.cumsum(lengths[order]) - lengths[order]  # (S,) new start of every session
        perm = np.repeat(starts[order] - moved, lengths[order])  # (E,) source - target position
        for i in range(0, len(perm), CHUNK):
            perm[i : i + CHUNK] += np.arange(i, min(i + CHUNK, len(perm)))
        ev = Events(ev.session, ev.item[perm], ev.time[perm])
        del perm
    item = index[ev.item]  # (E,) int32
    if len(item) and item.min() < 0:
        raise ValueError("finalize: an item is missing from the item index")  # a bug, not a user error
    codes = ev.session[starts[order]]  # (S,) the code of each new session
    session = np.repeat(np.arange(len(starts), dtype=np.int64), lengths[order])  # (E,)
    frame = pl.DataFrame({"session": session, "item": pl.Series(item, dtype=pl.Int32), "time": pl.Series(ev.time)})
    return frame, codes


def _require(ev: Events, source: str, message: str) -> None:
    if len(ev) == 0:
        raise DataError(f"{source}: {message}")


def preprocess_columnar(
    events: pl.DataFrame | Callable[[], pl.DataFrame],
    *,
    dedup_consecutive: bool = True,
    min_item_support: int = 5,
    min_session_length: int = 2,
    test_days: float = 7.0,
    valid_days: float = 7.0,
    source: str = "events",
) -> Columnar:
    """`sessrec.data.preprocess.preprocess` on a polars frame (session, item, time); same results.

    `events` may be a function returning the frame: then nothing outside holds it, and it is freed once
    sorted. Every step then works on the sorted integer columns (`Events`), each copy replacing the last;
    `Columnar.raw` gives the input's events and sessions."""
    _check_options(min_item_support, min_session_length, test_days, valid_days)
    if callable(events):
        events = events()
    if events.height == 0:
        raise DataError(f"{source}: no events")
    bad_time = (~events["time"].cast(pl.Float64).is_finite()).sum()
    if bad_time:
        raise DataError(f"{source}: {bad_time:,} events have a NaN or infinite time")
    with step("encode and order") as said:
        data, ids, keys = sorted_events(events)
        del events
        raw = {"events": len(data), "sessions": int(data.session[-1]) + 1}
        said["what"] = f"{raw['events']:,} events, {raw['sessions']:,} sessions, {len(ids):,} distinct items"
    if dedup_consecutive:
        with step("dedup") as said:
            s, i = data.session, data.item
            repeat = np.r_[False, (s[1:] == s[:-1]) & (i[1:] == i[:-1])]  # (E,)
            before, data = len(data), data.take(~repeat)
            del s, i, repeat
            said["what"] = f"{before:,} -> {len(data):,} events (consecutive repeats dropped)"
    n = len(ids)
    with step("support filter") as said:
        before, data = len(data), support_filter(data, n, min_item_support, min_session_length)
        said["what"] = f"{before:,} -> {len(data):,} events, {len(data.starts()):,} sessions"
    if len(data) == 0:
        raise DataError(
            f"{source}: no events left after the minimum-support filter "
            f"(min_item_support={min_item_support}, min_session_length={min_session_length})"
        )
    with step("time split") as said:
        train_full, test = time_split(data, test_days)
        del data
        train_full = support_filter(train_full, n, min_item_support, min_session_length)
        why = f"train_full is empty: every session ends within the last test_days={test_days}"
        _require(train_full, source, why)
        test = restrict(test, train_full, n)
        _require(
            test, source,
            f"test is empty after the split (test_days={test_days}, items restricted to train_full)",
        )  # fmt: skip
        if valid_days > 0:
            train, valid = time_split(train_full, valid_days)
            why = f"train is empty: every session ends within the last valid_days={valid_days}"
            _require(train, source, why)
            valid = restrict(valid, train, n)
            _require(valid, source, f"valid is empty after the split (valid_days={valid_days})")
        else:
            train, valid = train_full, train_full.take(np.zeros(len(train_full), dtype=bool))
        said["what"] = f"train_full {len(train_full):,}, test {len(test):,} events"
    with step("finalise") as said:
        present = count(train_full.item, n) > 0  # (N,) item codes of train_full, in id order
        index = np.where(present, np.cumsum(present) - 1, -1).astype(np.int32)
        item_ids = ids.gather(np.flatnonzero(present))
        pending = {"train_full": train_full, "train": train, "valid": valid, "test": test}
        del train_full, train, valid, test
        splits, split_keys = {}, {}
        for name in list(pending):
            splits[name], codes = finalize_events(pending.pop(name), index)  # each split freed once written
            split_keys[name] = keys.gather(codes)
        said["what"] = ", ".join(f"{n} {f.height:,} events" for n, f in splits.items())
    return Columnar(splits=splits, item_ids=item_ids, session_keys=split_keys, raw=raw)
