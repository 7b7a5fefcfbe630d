"""Import already-split files (`prepare --train A --test B [--valid C]`) into a prepared data folder.

What the GRU4Rec reference, session-rec and RecBole users hold: a train file and a test file (and maybe a
validation file) that were filtered and split elsewhere. Nothing is filtered unless asked:

- with `dedup_consecutive`, consecutive repeats of an item within a session are dropped in every file;
- with `min_item_support` or `min_session_length` given, train_full (train + valid) is filtered
  iteratively as `prepare` filters a raw log (the other one defaults to 1 item event / 2 session events);
- test is restricted to the items of train_full, valid to the items of train, as the reference does:
  events of unknown items are dropped, then sessions shorter than 2 events (counts logged at INFO).

train_full is train followed by valid (valid sessions as given, unrestricted), as when `prepare` splits
a log; without a valid file, train == train_full and valid is empty. Session ids of different files never
merge: each file's sessions are told apart by file before finalisation (sessions ordered by first time,
then file, then id). The item index is train_full's items sorted as strings, like every prepared folder.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from sessrec.data.columnar import (
    Columnar,
    drop_consecutive_duplicates,
    encode,
    filter_support,
    finish,
    order_events,
    restrict_items,
    session_keys,
    step,
)
from sessrec.errors import ConfigError, DataError


def import_splits(
    train: pl.DataFrame,
    test: pl.DataFrame,
    valid: pl.DataFrame | None = None,
    *,
    dedup_consecutive: bool = False,
    min_item_support: int | None = None,
    min_session_length: int | None = None,
    source: str | Mapping[str, str] = "events",
) -> Columnar:
    """Pre-split event frames (session, item, time) -> the four finalised splits and the item index.

    `source` names the input in error messages: one name, or each file's by split ('train', 'test',
    'valid'), so that an error about the test file names the test file."""
    if min_item_support is not None and min_item_support < 1:
        raise ConfigError(f"min_item_support: must be >= 1, got {min_item_support}")
    if min_session_length is not None and min_session_length < 2:
        raise ConfigError(
            f"min_session_length: must be >= 2 (a session needs a next item), got {min_session_length}"
        )
    given = {"train": train, "test": test, **({"valid": valid} if valid is not None else {})}
    for name, frame in given.items():
        if frame.height == 0:
            raise DataError(f"{_name(source, name)}: the {name} file has no events")
        if not frame["time"].cast(pl.Float64).is_finite().all():
            raise DataError(f"{_name(source, name)}: the {name} file has a NaN or infinite time")
    with step("encode ids") as said:
        frames, ids, decoders = encode(list(given.values()))
        frames, keys = _separate_sessions(frames, decoders)
        sizes = ", ".join(f"{n} {f.height:,} events" for n, f in zip(given, frames))
        said["what"] = f"{sizes}, {len(ids):,} distinct items"
    data = {name: order_events(frame) for name, frame in zip(given, frames)}
    if dedup_consecutive:
        with step("dedup") as said:
            before = sum(f.height for f in data.values())
            data = {name: drop_consecutive_duplicates(frame) for name, frame in data.items()}
            said["what"] = f"{before:,} -> {sum(f.height for f in data.values()):,} events"
    train_full = pl.concat([data["train"], data.get("valid", data["train"].clear())])
    if min_item_support is not None or min_session_length is not None:
        with step("support filter") as said:
            before = train_full.height
            train_full = filter_support(train_full, min_item_support or 1, min_session_length or 2)
            said["what"] = f"train_full {before:,} -> {train_full.height:,} events"
        if train_full.height == 0:
            name = _name(source, "train")
            raise DataError(f"{name}: no training events left after the minimum-support filter")
    first_valid = data["train"]["session"].max() + 1  # valid's sessions are numbered after train's
    train = train_full.filter(pl.col("session") < first_valid) if "valid" in data else train_full
    if train.height == 0:
        raise DataError(f"{_name(source, 'train')}: no training events left")
    test_split = _restrict("test", data["test"], train_full, _name(source, "test"))
    valid_split = _restrict("valid", train_full.filter(pl.col("session") >= first_valid), train,
                            _name(source, "valid")) \
        if "valid" in data else train_full.clear()  # fmt: skip
    frames = {"train_full": train_full, "train": train, "valid": valid_split, "test": test_split}
    return finish(frames, ids, keys)


def _name(source: str | Mapping[str, str], split: str) -> str:
    """The name of the `split` file in error messages (`import_splits`' `source`)."""
    return source if isinstance(source, str) else source.get(split, source.get("train", "events"))


def _separate_sessions(
    frames: list[pl.DataFrame], decoders: list[pl.Series | None]
) -> tuple[list[pl.DataFrame], pl.Series]:
    """Session keys of each file as dense codes in key order, numbered after the previous file's; and
    the original key of every code (strings when any file's keys are strings)."""
    out, keys, offset = [], [], 0
    for frame, decoder in zip(frames, decoders):
        codes = frame["session"].rank("dense").cast(pl.Int64) - 1 + offset
        out.append(frame.with_columns(session=codes))
        keys.append(session_keys(frame["session"].unique().sort(), decoder))  # code offset + i -> i-th key
        offset = int(codes.max()) + 1
    if any(k.dtype == pl.String for k in keys):
        keys = [k.cast(pl.String) for k in keys]
    return out, pl.concat(keys)


def _restrict(name: str, frame: pl.DataFrame, known: pl.DataFrame, source: str) -> pl.DataFrame:
    """`frame` restricted to the items of `known`: unknown events, then sessions < 2 events, dropped."""
    with step(f"restrict {name}") as said:
        kept = frame.filter(pl.col("item").is_in(known["item"].unique().implode()))
        out = restrict_items(frame, known["item"].unique())
        said["what"] = (
            f"{frame.height:,} events in {frame['session'].n_unique():,} sessions -> {out.height:,} events "
            f"in {out['session'].n_unique():,} sessions ({frame.height - kept.height:,} events of items "
            f"unknown to {'train_full' if name == 'test' else 'train'}, {kept.height - out.height:,} "
            "events of sessions left shorter than 2)"
        )
    if out.height == 0:
        raise DataError(f"{source}: {name} is empty once restricted to the training items")
    return out
