"""Deterministic preprocessing of an event log into train_full / train / valid / test splits.

Steps, as in the GRU4Rec reference preprocessing (docs/gru4rec-reference.md, "Preprocessing"):

1. events are ordered by session, then time (stable: ties keep file order);
2. consecutive duplicate items within a session are removed (`dedup_consecutive`);
3. iterative minimum support until stable: items with >= `min_item_support` events and sessions with
   >= `min_session_length` events;
4. time split (the reference's rule): with `tmax` the latest event time, a session goes to test when its
   LAST event is at or after `tmax - test_days * 86400` (`max_time >= cutoff`), otherwise to train_full.
   Test events of items absent from train_full are dropped, then test sessions with < 2 events;
5. the validation split is made from train_full the same way (`valid_days`, items restricted to the
   remaining train part); `valid_days = 0` disables it (valid is empty and train == train_full).

Deliberate difference from the reference: after the test split the iterative filter is applied again to
train_full, so every item of the index has >= `min_item_support` TRAINING events (the reference can keep an
item whose support was reached only thanks to its test events). When nothing changes, results are equal.
Like the reference, a session id is one session however far apart its events are, unless the reader
splits it (`read_events(session_split_gap=...)`, `prepare --max-session-gap`; it warns about ids that
span more than a day).

Output frames follow docs/design.md: `session` int64 renumbered 0..S-1 (sessions ordered by their first
event's time, ties by the original session key), `item` int32 index into `item_ids` (train_full's items,
sorted as strings), `time` float64, events of a session ordered by time (stable).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sessrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DAY = 86400.0
SPLITS = ("train_full", "train", "valid", "test")


@dataclass
class Preprocessed:
    """Result of `preprocess`: the four split frames, the item index (original ids, as strings) and each
    split's session keys (the input's key of session 0..S-1)."""

    splits: dict[str, pd.DataFrame]
    item_ids: np.ndarray
    session_keys: dict[str, np.ndarray]


def preprocess(
    events: pd.DataFrame,
    *,
    dedup_consecutive: bool = True,
    min_item_support: int = 5,
    min_session_length: int = 2,
    test_days: float = 7.0,
    valid_days: float = 7.0,
    source: str = "events",
) -> Preprocessed:
    """Filter and split `events` (columns session, item, time; see `sessrec.data.readers`).

    `source` names the input in error messages. Raises DataError when a step leaves nothing.
    """
    _check_options(min_item_support, min_session_length, test_days, valid_days)
    if events.empty:
        raise DataError(f"{source}: no events")
    bad_time = ~np.isfinite(events["time"].to_numpy(dtype=np.float64))
    if bad_time.any():
        raise DataError(f"{source}: {int(bad_time.sum()):,} events have a NaN or infinite time")
    data = order_events(events)
    if dedup_consecutive:
        data = drop_consecutive_duplicates(data)
    data = filter_support(data, min_item_support, min_session_length)
    if data.empty:
        raise DataError(
            f"{source}: no events left after the minimum-support filter "
            f"(min_item_support={min_item_support}, min_session_length={min_session_length})"
        )
    log.info(
        "%s: %d events, %d sessions after dedup and support filter",
        source,
        len(data),
        data["session"].nunique(),
    )
    train_full, test = split_by_time(data, test_days)
    train_full = filter_support(train_full, min_item_support, min_session_length)
    _require(
        train_full, source, f"train_full is empty: every session ends within the last test_days={test_days}"
    )
    test = restrict_items(test, train_full["item"].unique())
    _require(
        test, source, f"test is empty after the split (test_days={test_days}, items restricted to train_full)"
    )
    if valid_days > 0:
        train, valid = split_by_time(train_full, valid_days)
        _require(train, source, f"train is empty: every session ends within the last valid_days={valid_days}")
        valid = restrict_items(valid, train["item"].unique())
        _require(valid, source, f"valid is empty after the split (valid_days={valid_days})")
    else:
        train, valid = train_full, train_full.iloc[:0]
    item_ids = np.array(sorted(train_full["item"].astype(str).unique()), dtype=object)
    frames = {"train_full": train_full, "train": train, "valid": valid, "test": test}
    done = {name: finalize(frame, item_ids) for name, frame in frames.items()}
    return Preprocessed(splits={name: f for name, (f, _) in done.items()}, item_ids=item_ids,
                        session_keys={name: keys for name, (_, keys) in done.items()})


def _check_options(
    min_item_support: int, min_session_length: int, test_days: float, valid_days: float
) -> None:
    """Reject invalid option values with a message naming the option."""
    if min_item_support < 1:
        raise ConfigError(f"min_item_support: must be >= 1, got {min_item_support}")
    if min_session_length < 2:
        raise ConfigError(
            f"min_session_length: must be >= 2 (a session needs a next item), got {min_session_length}"
        )
    if not (math.isfinite(test_days) and test_days > 0):
        raise ConfigError(f"test_days: must be a finite number > 0, got {test_days}")
    if not (math.isfinite(valid_days) and valid_days >= 0):
        raise ConfigError(f"valid_days: must be a finite number >= 0 (0 disables validation), got {valid_days}")


def _require(frame: pd.DataFrame, source: str, message: str) -> None:
    """Raise a DataError naming the input when `frame` is empty."""
    if frame.empty:
        raise DataError(f"{source}: {message}")


def order_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events ordered by session key, then time; ties keep their input order. Index reset."""
    data = events[["session", "item", "time"]].reset_index(drop=True)
    data["item"] = data["item"].astype(str)
    order = np.lexsort((np.arange(len(data)), data["time"].to_numpy(), _sort_key(data["session"])))
    return data.iloc[order].reset_index(drop=True)


def _sort_key(keys: pd.Series) -> np.ndarray:
    """Session keys as a numpy array lexsort can order (ints as they are, anything else as strings)."""
    if pd.api.types.is_integer_dtype(keys):
        return keys.to_numpy(dtype=np.int64)
    return keys.astype(str).to_numpy(dtype=object)


def drop_consecutive_duplicates(data: pd.DataFrame) -> pd.DataFrame:
    """Drop an event whose item equals the previous event's item in the same session (ordered input)."""
    same_session = data["session"].to_numpy()[1:] == data["session"].to_numpy()[:-1]
    same_item = data["item"].to_numpy()[1:] == data["item"].to_numpy()[:-1]
    repeat = np.concatenate([[False], same_session & same_item])
    return data[~repeat].reset_index(drop=True)


def filter_support(data: pd.DataFrame, min_item_support: int, min_session_length: int) -> pd.DataFrame:
    """Iteratively keep items with >= min_item_support events and sessions with >= min_session_length."""
    rounds = 0
    while True:
        rounds += 1
        item_counts = data["item"].map(data["item"].value_counts()).to_numpy()
        kept = data[item_counts >= min_item_support]
        lengths = kept["session"].map(kept["session"].value_counts()).to_numpy()
        kept = kept[lengths >= min_session_length]
        if len(kept) == len(data):
            log.debug("support filter stable after %d round(s): %d events", rounds, len(kept))
            return kept.reset_index(drop=True)
        data = kept


def split_by_time(data: pd.DataFrame, days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(before, last): sessions whose last event is >= max time - days * 86400 go to `last`."""
    cutoff = data["time"].max() - days * DAY
    session_end = data.groupby("session", sort=False)["time"].transform("max").to_numpy()
    last = session_end >= cutoff
    return data[~last].reset_index(drop=True), data[last].reset_index(drop=True)


def restrict_items(data: pd.DataFrame, items: np.ndarray, min_length: int = 2) -> pd.DataFrame:
    """Keep events of `items`, then sessions with >= min_length events (once, as in the reference)."""
    data = data[data["item"].isin(items)]
    lengths = data["session"].map(data["session"].value_counts()).to_numpy()
    return data[lengths >= min_length].reset_index(drop=True)


def finalize(data: pd.DataFrame, item_ids: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Design-order frame: sessions by first time then key, events by time; session 0..S-1; item idx.
    Also returns the input's session key (S,) of each new session 0..S-1."""
    if data.empty:
        empty = pd.DataFrame(
            {"session": np.empty(0, np.int64), "item": np.empty(0, np.int32), "time": np.empty(0, np.float64)}
        )
        return empty, data["session"].to_numpy()[:0]
    first = data.groupby("session", sort=False)["time"].transform("min").to_numpy()
    times = data["time"].to_numpy(dtype=np.float64)
    order = np.lexsort((np.arange(len(data)), times, _sort_key(data["session"]), first))
    keys = _sort_key(data["session"])[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    idx = pd.Index(item_ids).get_indexer(data["item"].to_numpy(dtype=object)[order])
    if (idx < 0).any():
        raise ValueError("finalize: an item is missing from the item index")  # a bug, not a user error
    frame = pd.DataFrame(
        {
            "session": np.cumsum(new, dtype=np.int64) - 1,
            "item": idx.astype(np.int32),
            "time": times[order],
        }
    )
    return frame, data["session"].to_numpy()[order][new]
