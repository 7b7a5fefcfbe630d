"""Read an event log into a polars frame (`session`, `item` str, `time` float64 s) for the columnar engine.

`read_columnar` takes the arguments of `sessrec.data.readers.read_events` and returns what that reader
returns, value for value, as a polars frame: ids stay Arrow strings or integers, never one Python object
per row. The plain cases are read by polars itself: an uncompressed CSV/TSV whose header names the
columns exactly, or a Parquet file with string or integer ids, numeric times, no missing or padded ids.
Anything else (compressed files, ISO date-times, a byte-order mark before an id, missing values, a parse
error) goes through the pandas reader, which also owns every error message and warning of the odd cases.
A data row with more fields than the header is refused by both (polars' projected scan would drop the extra
fields silently: the streaming scan reads them into one spare column and names the first such row).
"""

from __future__ import annotations

import logging
import os
import time as clock
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from sessrec.data import fields, readers
from sessrec.data.times import TIME_UNITS, check_time_scale
from sessrec.errors import ConfigError, DataError

log = logging.getLogger("sessrec.data.readers")  # the same logger (and messages) as `read_events`

# the characters Python's `\s` matches in `readers._ID_PADDING`, plus the byte-order mark
_SPACE = "".join(ch for ch in map(chr, range(0x3001)) if ch.isspace()) + "\ufeff"
_PADDED = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in _SPACE) + "]|[" + "".join(
    f"\\x{{{ord(c):x}}}" for c in _SPACE
) + "]$"


class _Fallback(Exception):
    """The file is not a plain case: read it with the pandas reader."""


def read_columnar(path: str | os.PathLike, **spec: Any) -> pl.DataFrame:
    """`read_events(path, **spec)` as a polars frame with columns session, item (str), time (float64)."""
    path = Path(path)
    start = clock.perf_counter()
    try:
        frame = _read_plain(path, **spec)
        how = "polars"
    except (ConfigError, DataError):
        raise
    except Exception as err:  # _Fallback, or polars refusing what pandas may still read or explain
        log.debug("%s: pandas reader (%s)", path.name, err)
        events = readers.read_events(path, **spec)
        frame = pl.from_pandas(events[["session", "item", "time"]])
        how = "pandas"
    log.info("read %s: %d events with the %s reader (%.1f s)", path.name, frame.height, how,
             clock.perf_counter() - start)  # fmt: skip
    return frame


def _read_plain(
    path: Path,
    fmt: str | None = None,
    *,
    sep: str | None = None,
    session_col: str | None = "SessionId",
    item_col: str = "ItemId",
    time_col: str = "Time",
    user_col: str | None = None,
    time_unit: str = "s",
    session_gap: float = readers.DEFAULT_SESSION_GAP,
    session_split_gap: float | None = None,
    names: Sequence[str] | None = None,
    keep: Mapping[str, Sequence[str]] | None = None,
    offset_ms_col: str | None = None,
    drop_missing_sessions: bool = False,
) -> pl.DataFrame:
    """The polars reading of a plain file; raises _Fallback for anything the pandas reader must see."""
    readers.check_gap("session_gap", session_gap)
    if session_split_gap is not None:
        readers.check_gap("session_split_gap", session_split_gap)
    readable = path.is_dir() or (path.is_file() and path.stat().st_size > 0)  # a folder: Parquet parts
    if not readable or time_unit not in TIME_UNITS:
        raise _Fallback("missing, empty or odd")
    if session_col is None and user_col is None:
        raise _Fallback("no session and no user column")
    key_col = session_col if session_col is not None else user_col
    wanted = [key_col, item_col, time_col, offset_ms_col, *(keep or {})]
    columns = list(dict.fromkeys(c for c in wanted if c is not None))
    if session_col is not None and session_split_gap is None and not keep and offset_ms_col is None:
        streamed = _stream_plain(path, fmt, sep, names, session_col, item_col, time_col, time_unit)
        if streamed is not None:
            return streamed
    raw = _read_table(path, fmt, sep, names, columns, [time_col, offset_ms_col])
    rows_read = raw.height
    for col, values in (keep or {}).items():
        if raw.schema[col] != pl.String:
            raise _Fallback(f"'{col}' is not text")
        raw = raw.filter(pl.col(col).is_in([str(v) for v in values]))
    if drop_missing_sessions:
        missing = raw[key_col].null_count()
        if missing:
            log.warning("%s: dropped %d rows without a value in '%s'", path.name, missing, key_col)
            raw = raw.filter(pl.col(key_col).is_not_null())
    if raw.height == 0:
        raise _Fallback("no rows")  # the pandas reader says why
    for col in dict.fromkeys([key_col, item_col]):
        _check_id_column(raw[col])
    seconds = _seconds(raw[time_col], time_unit)
    if offset_ms_col is not None:
        seconds = seconds + _seconds(raw[offset_ms_col], "ms")
    try:
        check_time_scale(seconds.to_numpy(), path, time_col, time_unit)
    except DataError:
        if raw.height != rows_read:  # rows were filtered: positions are no data rows
            raise _Fallback("outlying times: the pandas reader names their data rows") from None
        raise
    item = raw[item_col].cast(pl.String)
    item = item.cast(pl.Enum(item.unique().sort()))  # dictionary-encoded: u32 codes in id order
    events = pl.DataFrame({"key": raw[key_col], "item": item, "time": seconds})
    del raw, item, seconds
    if session_col is None:
        session = _cut_sessions(events, session_gap, by_gap_only=True)
    elif session_split_gap is None:
        session = _session_keys(events["key"])
        _warn_long_sessions(session, events["time"], path)
    else:
        keys = events.with_columns(key=_session_keys(events["key"]))
        session = _cut_sessions(keys, session_split_gap, by_gap_only=False)
    log.info("%s: read %d events", path.name, events.height)
    return pl.DataFrame({"session": session, "item": events["item"], "time": events["time"]})


def _read_table(
    path: Path, fmt: str | None, sep: str | None, names: Sequence[str] | None, columns: list[str],
    times: Sequence[str],
) -> pl.DataFrame:
    """The wanted columns: text files as strings, Parquet natively (string or integer ids only)."""
    kind = readers.file_type(path, fmt)
    if any(s.lower() in readers._COMPRESSION for s in path.suffixes):
        raise _Fallback("compressed")
    if kind == "parquet":
        parts = readers.parquet_parts(path) if path.is_dir() else [path]
        frame = pl.concat([pl.read_parquet(p, columns=columns) for p in parts], how="vertical")
        for col, dtype in frame.schema.items():
            numeric_time = dtype.is_float() and col not in columns[:2]  # ids: text or integers only
            if not (dtype == pl.String or dtype.is_integer() or numeric_time):
                raise _Fallback(f"column '{col}' is {dtype}")
        return frame
    sep = sep if sep is not None else ("\t" if kind == "tsv" else ",")
    if len(sep) != 1:
        raise _Fallback("multi-character separator")
    header = names is None
    if header:  # the header exactly as pandas reads it: a padded or missing name is the pandas reader's
        found = list(pd.read_csv(path, sep=sep, nrows=0, dtype=str, encoding="utf-8-sig").columns)
        if any(c not in found for c in columns) or len(set(found)) != len(found):
            raise _Fallback("columns")
    if not header:
        opts = dict(separator=sep, has_header=False, new_columns=list(names), infer_schema=False)
        frame = pl.read_csv(path, **opts)
        return frame.select(columns)
    numbers = {c: pl.Float64 for c in columns[2:] if c in times}  # parsed by polars; a failure falls back
    return pl.read_csv(
        path, separator=sep, columns=columns, infer_schema=False, schema_overrides=numbers,
        encoding="utf8", raise_if_empty=True, truncate_ragged_lines=False,
    ).select(columns)  # fmt: skip


def _stream_plain(
    path: Path, fmt: str | None, sep: str | None, names: Sequence[str] | None,
    session_col: str, item_col: str, time_col: str, time_unit: str,
) -> pl.DataFrame | None:
    """A text file with canonical integer session ids, read in two streaming passes without holding its
    strings: the distinct items first, then integer sessions, item codes and times. None otherwise."""
    kind = readers.file_type(path, fmt)
    sep = sep if sep is not None else ("\t" if kind == "tsv" else ",")
    if kind == "parquet" or names is not None or len(sep) != 1:
        return None
    if any(s.lower() in readers._COMPRESSION for s in path.suffixes):
        raise _Fallback("compressed")
    found = list(pd.read_csv(path, sep=sep, nrows=0, dtype=str, encoding="utf-8-sig").columns)
    if any(c not in found for c in (session_col, item_col, time_col)) or len(set(found)) != len(found):
        raise _Fallback("columns")
    extra = next(f"extra_{i}" for i in range(len(found) + 1) if f"extra_{i}" not in found)
    schema = {c: pl.Float64 if c == time_col else pl.String for c in [*found, extra]}
    # a field beyond the header lands in `extra`: a projected scan would drop it silently
    scan = pl.scan_csv(
        path, separator=sep, has_header=False, skip_rows=1, schema=schema, encoding="utf8",
        raise_if_empty=True, truncate_ragged_lines=True, missing_columns="insert",
    )  # fmt: skip
    ids = scan.select(pl.col(item_col).unique()).collect(engine="streaming").to_series()
    _check_id_column(ids)  # on the distinct values only
    key = pl.col(session_col)
    frame = scan.select(
        session=key.cast(pl.Int64, strict=False),
        canonical=key.str.contains(r"^(0|-?[1-9][0-9]{0,15})$"),
        item=pl.col(item_col).cast(pl.Enum(ids.sort())),
        time=pl.col(time_col) * TIME_UNITS[time_unit],
        ragged=pl.col(extra).is_not_null(),
    ).collect(engine="streaming")
    if frame["ragged"].any():
        row = int(frame["ragged"].arg_max()) + 1
        raise fields.ragged_row(path, row, len(found), True, fields.text_options(sep))
    if frame.height == 0 or frame["session"].null_count() or not frame["canonical"].all():
        return None  # string or missing session ids: the eager reading
    if frame["session"].abs().max() >= 2**53 or frame["time"].null_count():
        return None
    if not frame["time"].is_finite().all():
        raise _Fallback("non-finite times")
    frame = frame.drop("canonical", "ragged")
    check_time_scale(frame["time"].to_numpy(), path, time_col, time_unit)
    _warn_long_sessions(frame["session"], frame["time"], path)
    log.info("%s: read %d events", path.name, frame.height)
    return frame


def _check_id_column(ids: pl.Series) -> None:
    """Missing ids, or ids padded with white space or a byte-order mark, are the pandas reader's."""
    if ids.null_count() or (ids.dtype == pl.String and (ids == "").any()):
        raise _Fallback(f"missing values in '{ids.name}'")
    if ids.dtype == pl.String and ids.str.contains(_PADDED).any():
        raise _Fallback(f"padded ids in '{ids.name}'")


def _seconds(values: pl.Series, unit: str) -> pl.Series:
    """Numbers in `unit` as float64 seconds (pandas' arithmetic); anything else is the pandas reader's."""
    if values.dtype == pl.String:
        numbers = values.cast(pl.Float64, strict=False)
    elif values.dtype.is_numeric():
        numbers = values.cast(pl.Float64)
    else:
        raise _Fallback(f"time column of type {values.dtype}")
    if numbers.null_count():
        raise _Fallback("missing or non-numeric times")
    seconds = numbers * TIME_UNITS[unit]
    if not seconds.is_finite().all():
        raise _Fallback("non-finite times")
    return seconds


def _session_keys(keys: pl.Series) -> pl.Series:
    """Session keys as Int64 when every key is an integer written canonically (|k| < 2**53), else str."""
    if keys.dtype.is_integer():
        return keys.cast(pl.Int64)
    if keys.str.contains(r"^(0|-?[1-9][0-9]{0,15})$").all():  # canonical, < 10**16: no string copy
        ints = keys.cast(pl.Int64)
        if ints.abs().max() < 2**53:
            return ints
    return keys.cast(pl.String)


def _cut_sessions(events: pl.DataFrame, gap: float, by_gap_only: bool) -> pl.Series:
    """Session numbers 0..S-1 by (key, first time): a new one after more than `gap` s of inactivity."""
    ordered = events.select("key", "time").with_row_index("row").sort(["key", "time"], maintain_order=True)
    new = (pl.col("key") != pl.col("key").shift(1)) | (pl.col("time").diff() > gap)
    numbered = ordered.select("row", session=new.fill_null(True).cum_sum().cast(pl.Int64) - 1)
    session = np.empty(events.height, dtype=np.int64)
    session[numbered["row"].to_numpy()] = numbered["session"].to_numpy()
    if not by_gap_only:
        n_keys, n_sessions = events["key"].n_unique(), int(session.max(initial=-1)) + 1
        if n_sessions > n_keys:
            log.info("split %d session ids into %d sessions at gaps over %g s", n_keys, n_sessions, gap)
    return pl.Series("session", session)


def _warn_long_sessions(session: pl.Series, time: pl.Series, path: Path) -> None:
    """The WARNING of `readers.warn_long_sessions`, computed by polars."""
    frame = pl.DataFrame({"key": session, "time": time})
    span = frame.group_by("key", maintain_order=True).agg(length=pl.col("time").max() - pl.col("time").min())
    long = span["length"] > readers.LONG_SESSION
    if long.any():
        worst = int(span["length"].arg_max())
        log.warning(
            "%s: %d of %d session ids span more than %g s (e.g. '%s': %.1f days); a reused id stays one "
            "session unless you pass --max-session-gap SECONDS",
            path, int(long.sum()), span.height, readers.LONG_SESSION, span["key"][worst],
            span["length"][worst] / 86400,
        )  # fmt: skip


def read_columnar_preset(name: str, path: str | os.PathLike, **overrides: Any) -> pl.DataFrame:
    """`readers.read_preset` as a polars frame (see `read_columnar`)."""
    if name not in readers.PRESETS:
        return pl.from_pandas(readers.read_preset(name, path, **overrides))  # its ConfigError
    return read_columnar(path, **{**readers.PRESETS[name], **overrides})
