"""`preprocess` on polars: the same steps and results as `sessrec.data.preprocess`, on integer columns.

Item ids are dictionary-encoded once (`encode`): a polars Enum over the sorted distinct ids, whose
physical codes (UInt32) therefore order like the ids as strings; string session keys are encoded the same
way. Every later step (ordering, dedup, iterative support filter, time split, restriction to train items,
finalisation) sorts, counts and filters these integer columns; only the item index itself is text.
Ordering ties are broken by row order (polars' stable sort), exactly as the pandas path's lexsort does,
so the two engines write identical prepared folders. Each step logs its counts and seconds at INFO.
"""

from __future__ import annotations

import logging
import time as clock
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl

from sessrec.data.preprocess import DAY, _check_options
from sessrec.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Columnar:
    """Result of `preprocess_columnar`: four split frames (session Int64, item Int32, time Float64) and
    the item index (original ids, sorted as strings)."""

    splits: dict[str, pl.DataFrame]
    item_ids: pl.Series


@contextmanager
def step(name: str) -> Iterator[dict]:
    """Log '<name>: <what the block put in the dict> (<seconds> s)' at INFO when the block ends."""
    start, said = clock.perf_counter(), {}
    yield said
    log.info("%s: %s (%.2f s)", name, said.get("what", "done"), clock.perf_counter() - start)


def encode(frames: list[pl.DataFrame]) -> tuple[list[pl.DataFrame], pl.Series]:
    """Frames (session, item str, time) -> (session Int64 or UInt32 code, item UInt32 code, time); ids.

    Item codes index the returned ids (sorted distinct items of all frames). String session keys become
    codes in string order; integer keys stay as they are.
    """
    given = frames[0]["item"].dtype
    if len(frames) == 1 and isinstance(given, pl.Enum) and given.categories.is_sorted():
        ids, items = given.categories, given  # encoded by the reader already
    else:
        ids = pl.concat([f["item"].cast(pl.String) for f in frames]).unique().sort()
        items = pl.Enum(ids)
    out = []
    for frame in frames:
        session = frame["session"]
        if not session.dtype.is_integer():
            keys = session.cast(pl.String)
            session = keys.cast(pl.Enum(keys.unique().sort())).to_physical()
        out.append(
            pl.DataFrame(
                {
                    "session": session.cast(pl.Int64),
                    "item": frame["item"].cast(pl.String).cast(items).to_physical(),
                    "time": frame["time"].cast(pl.Float64),
                }
            )
        )
    return out, ids


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


def finalize(data: pl.DataFrame, index: np.ndarray) -> pl.DataFrame:
    """Sessions by first time then key, events by time; session 0..S-1; item -> index[item] (int32)."""
    first = pl.col("time").min().over("session").alias("first")
    ordered = data.with_columns(first).sort(["first", "session", "time"], maintain_order=True)
    new = (pl.col("session") != pl.col("session").shift(1)).fill_null(True)
    item = index[ordered["item"].to_numpy()]  # (E,) int32
    if len(item) and item.min() < 0:
        raise ValueError("finalize: an item is missing from the item index")  # a bug, not a user error
    return pl.DataFrame(
        {
            "session": ordered.select(new.cum_sum().cast(pl.Int64) - 1).to_series(),
            "item": pl.Series(item, dtype=pl.Int32),
            "time": ordered["time"],
        }
    )


def index_of(train_full: pl.DataFrame, ids: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """(code -> item index, int32 with -1 for items outside train_full; train_full's ids in order)."""
    codes = train_full["item"].unique().sort().to_numpy()  # (N,) ascending codes = ids sorted as str
    index = np.full(len(ids), -1, dtype=np.int32)
    index[codes] = np.arange(len(codes), dtype=np.int32)
    return index, ids.gather(codes)


def finish(frames: dict[str, pl.DataFrame], ids: pl.Series) -> Columnar:
    """Item index from train_full, then every split finalised; logs the counts."""
    with step("finalise") as said:
        index, item_ids = index_of(frames["train_full"], ids)
        splits = {name: finalize(frame, index) for name, frame in frames.items()}
        said["what"] = ", ".join(f"{n} {f.height:,} events" for n, f in splits.items())
    return Columnar(splits=splits, item_ids=item_ids)


def _require(frame: pl.DataFrame, source: str, message: str) -> None:
    if frame.height == 0:
        raise DataError(f"{source}: {message}")


def preprocess_columnar(
    events: pl.DataFrame,
    *,
    dedup_consecutive: bool = True,
    min_item_support: int = 5,
    min_session_length: int = 2,
    test_days: float = 7.0,
    valid_days: float = 7.0,
    source: str = "events",
) -> Columnar:
    """`sessrec.data.preprocess.preprocess` on a polars frame (session, item, time); same results."""
    _check_options(min_item_support, min_session_length, test_days, valid_days)
    if events.height == 0:
        raise DataError(f"{source}: no events")
    bad_time = (~events["time"].cast(pl.Float64).is_finite()).sum()
    if bad_time:
        raise DataError(f"{source}: {bad_time:,} events have a NaN or infinite time")
    with step("encode ids") as said:
        (data,), ids = encode([events])
        said["what"] = f"{data.height:,} events, {len(ids):,} distinct items"
    with step("order") as said:
        data = order_events(data)
        said["what"] = f"{data.height:,} events by session and time"
    if dedup_consecutive:
        with step("dedup") as said:
            before, data = data.height, drop_consecutive_duplicates(data)
            said["what"] = f"{before:,} -> {data.height:,} events (consecutive repeats dropped)"
    with step("support filter") as said:
        before, data = data.height, filter_support(data, min_item_support, min_session_length)
        said["what"] = f"{before:,} -> {data.height:,} events, {data['session'].n_unique():,} sessions"
    if data.height == 0:
        raise DataError(
            f"{source}: no events left after the minimum-support filter "
            f"(min_item_support={min_item_support}, min_session_length={min_session_length})"
        )
    with step("time split") as said:
        train_full, test = split_by_time(data, test_days)
        train_full = filter_support(train_full, min_item_support, min_session_length)
        why = f"train_full is empty: every session ends within the last test_days={test_days}"
        _require(train_full, source, why)
        test = restrict_items(test, train_full["item"].unique())
        _require(
            test, source,
            f"test is empty after the split (test_days={test_days}, items restricted to train_full)",
        )  # fmt: skip
        if valid_days > 0:
            train, valid = split_by_time(train_full, valid_days)
            why = f"train is empty: every session ends within the last valid_days={valid_days}"
            _require(train, source, why)
            valid = restrict_items(valid, train["item"].unique())
            _require(valid, source, f"valid is empty after the split (valid_days={valid_days})")
        else:
            train, valid = train_full, train_full.clear()
        said["what"] = f"train_full {train_full.height:,}, test {test.height:,} events"
    return finish({"train_full": train_full, "train": train, "valid": valid, "test": test}, ids)
