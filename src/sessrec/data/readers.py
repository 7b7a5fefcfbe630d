"""Read event logs (TSV, CSV, Parquet) into one normalised frame: `session`, `item` (string), `time` (s).

`read_events` is the generic reader; `PRESETS` maps the name of a public dataset's layout to the
`read_events` arguments that read it, and `read_preset(name, path, **overrides)` applies one.
Every user error (missing file, missing column, bad time value, missing id) is a one-line
`sessrec.errors.DataError` naming the file and the cause, never a pandas traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sessrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEFAULT_SESSION_GAP = 1800.0
"""Inactivity gap (seconds) that ends a session when sessions are cut per user."""

_COMPRESSION = {".gz", ".bz2", ".zip", ".xz", ".zst"}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3}

PRESETS: dict[str, dict[str, Any]] = {
    # GRU4Rec's own preprocessed files: tab-separated SessionId, ItemId, Time (seconds).
    "gru4rec": dict(sep="\t", session_col="SessionId", item_col="ItemId", time_col="Time"),
    # CIKM Cup 2016 train-item-views.csv: time = eventdate (a day) + timeframe (ms since session start).
    "diginetica": dict(
        sep=";", session_col="session_id", item_col="item_id", time_col="eventdate", offset_ms_col="timeframe"
    ),
    # RecSys Challenge 2015 yoochoose-clicks.dat: no header, ISO timestamps ending in Z.
    "yoochoose": dict(
        fmt="csv",
        sep=",",
        names=("session_id", "timestamp", "item_id", "category"),
        session_col="session_id",
        item_col="item_id",
        time_col="timestamp",
    ),
    # RetailRocket events.csv: no session id, sessions cut per visitor by inactivity; views only.
    "retailrocket": dict(
        sep=",",
        session_col=None,
        user_col="visitorid",
        item_col="itemid",
        time_col="timestamp",
        time_unit="ms",
        keep={"event": ("view",)},
    ),
    # MovieLens ratings.csv: sessions cut per user by inactivity.
    "movielens": dict(sep=",", session_col=None, user_col="userId", item_col="movieId", time_col="timestamp"),
    # REES46 eCommerce events: 'YYYY-MM-DD HH:MM:SS UTC'; views only; rows without user_session dropped.
    "rees46": dict(
        sep=",",
        session_col="user_session",
        item_col="product_id",
        time_col="event_time",
        keep={"event_type": ("view",)},
        drop_missing_sessions=True,
    ),
}


def read_preset(name: str, path: str | os.PathLike, **overrides: Any) -> pd.DataFrame:
    """Read `path` with the column spec `PRESETS[name]`, updated by `overrides` (see `read_events`)."""
    if name not in PRESETS:
        raise ConfigError(f"--format: unknown format '{name}' (choose from: {', '.join(PRESETS)})")
    return read_events(path, **{**PRESETS[name], **overrides})


def read_events(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    sep: str | None = None,
    session_col: str | None = "SessionId",
    item_col: str = "ItemId",
    time_col: str = "Time",
    user_col: str | None = None,
    time_unit: str = "s",
    session_gap: float = DEFAULT_SESSION_GAP,
    names: Sequence[str] | None = None,
    keep: Mapping[str, Sequence[str]] | None = None,
    offset_ms_col: str | None = None,
    drop_missing_sessions: bool = False,
) -> pd.DataFrame:
    """Read an event log into a frame with columns `session`, `item` (str) and `time` (float64 seconds).

    Args:
        path: the file; `fmt` ('csv', 'tsv' or 'parquet') defaults to what its extension says.
        sep: field separator of a text file (default: tab for .tsv, comma otherwise).
        session_col: column of session ids; None cuts sessions per `user_col` instead: a new session
            starts when a user has been inactive for more than `session_gap` seconds.
        item_col, time_col: item id and time columns. Numeric times are in `time_unit` ('s' or 'ms');
            other times are parsed as ISO date-times (UTC unless they say otherwise).
        names: column names of a text file that has no header row.
        keep: keep only rows whose column value is one of the given strings (e.g. {'event': ['view']}).
        offset_ms_col: a column of milliseconds added to the time (Diginetica's `timeframe`).
        drop_missing_sessions: drop rows without a session id instead of raising.
    Returns the events in file order; `session` is int64 when every key is an integer, else str.
    """
    path = Path(path)
    if time_unit not in _TIME_UNITS:
        raise ConfigError(f"time_unit: must be 's' or 'ms', got '{time_unit}'")
    if session_col is None and user_col is None:
        raise ConfigError("no session column and no user column: cannot form sessions")
    key_col = session_col if session_col is not None else user_col
    wanted = [key_col, item_col, time_col, offset_ms_col, *(keep or {})]
    columns = list(dict.fromkeys(c for c in wanted if c is not None))
    raw = _read_table(path, fmt, sep, names, columns)
    for col, values in (keep or {}).items():
        raw = raw[raw[col].astype(str).isin([str(v) for v in values])]
    if drop_missing_sessions:
        missing = raw[key_col].isna()
        if missing.any():
            log.warning("%s: dropped %d rows without a value in '%s'", path.name, missing.sum(), key_col)
            raw = raw[~missing]
    _check_ids(raw, path, [key_col, item_col])
    time = _parse_time(raw[time_col], path, time_col, time_unit)
    if offset_ms_col is not None:
        time = time + _parse_time(raw[offset_ms_col], path, offset_ms_col, "ms")
    events = pd.DataFrame(
        {"key": raw[key_col].to_numpy(), "item": raw[item_col].astype(str).to_numpy(), "time": time}
    )
    if events.empty:
        raise DataError(f"{path}: no events left to read (rows filtered by {dict(keep or {})})")
    if session_col is None:
        events["session"] = sessionize(events["key"], events["time"].to_numpy(), session_gap)
    else:
        events["session"] = _session_keys(events["key"])
    log.info("%s: read %d events", path.name, len(events))
    return events[["session", "item", "time"]].reset_index(drop=True)


def sessionize(users: pd.Series, time: np.ndarray, gap: float = DEFAULT_SESSION_GAP) -> np.ndarray:
    """Session number (int64) per event: per user, a new session after more than `gap` s of inactivity.

    Sessions are numbered by (user, first time) order; events keep their positions.
    """
    if gap <= 0:
        raise ConfigError(f"session_gap: must be positive, got {gap}")
    order = np.lexsort((time, users.to_numpy()))  # stable: ties keep file order
    user_sorted = users.to_numpy()[order]
    time_sorted = time[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (user_sorted[1:] != user_sorted[:-1]) | (np.diff(time_sorted) > gap)
    session = np.empty(len(order), dtype=np.int64)
    session[order] = np.cumsum(new) - 1
    return session


def _file_type(path: Path, fmt: str | None) -> str:
    """'csv', 'tsv' or 'parquet', from `fmt` or else from the extension (compression suffix ignored)."""
    if fmt is not None:
        if fmt not in ("csv", "tsv", "parquet"):
            raise ConfigError(f"fmt: must be 'csv', 'tsv' or 'parquet', got '{fmt}'")
        return fmt
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _COMPRESSION]
    ext = suffixes[-1] if suffixes else ""
    return {".parquet": "parquet", ".pq": "parquet", ".tsv": "tsv", ".tab": "tsv"}.get(ext, "csv")


def _read_table(
    path: Path, fmt: str | None, sep: str | None, names: Sequence[str] | None, columns: list[str]
) -> pd.DataFrame:
    """Read `columns` of the file as strings (text) or native types (parquet); one-line errors."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    kind = _file_type(path, fmt)
    try:
        if kind == "parquet":
            found = _parquet_columns(path)
            _check_columns(path, columns, found)
            frame = pd.read_parquet(path, columns=columns)
        else:
            sep = sep if sep is not None else ("\t" if kind == "tsv" else ",")
            header = None if names is not None else "infer"
            # only an empty field is missing: ids such as "NA", "null" or "None" are ids, not gaps
            opts: dict[str, Any] = dict(
                sep=sep, header=header, names=names, dtype=str, keep_default_na=False, na_values=[""]
            )
            found = list(names) if names is not None else list(pd.read_csv(path, nrows=0, **opts).columns)
            _check_columns(path, columns, found)
            frame = pd.read_csv(path, usecols=columns, **opts)
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot read as {kind} ({msg})") from None
    if frame.empty:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def _parquet_columns(path: Path) -> list[str]:
    """Column names from a parquet file's schema (no data read)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as err:  # pyarrow raises ArrowInvalid and friends for a non-parquet file
        raise DataError(f"{path}: cannot read as parquet ({str(err).splitlines()[0]})") from None


def _check_columns(path: Path, wanted: list[str], found: Sequence[str]) -> None:
    """Raise a DataError naming the first missing column and the columns that exist."""
    for col in wanted:
        if col not in found:
            shown = ", ".join(str(c) for c in found)
            raise DataError(f"{path}: column '{col}' not found (columns: {shown})")


def _check_ids(frame: pd.DataFrame, path: Path, cols: list[str]) -> None:
    """Raise a DataError for missing session or item ids."""
    for col in cols:
        missing = frame[col].isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            count = int(missing.sum())
            raise DataError(
                f"{path}: column '{col}' has {count} missing value(s) (first at data row {row + 1})"
            )


def _parse_time(values: pd.Series, path: Path, col: str, unit: str) -> np.ndarray:
    """Times as float64 seconds: numbers in `unit`, or ISO date-times; DataError with a bad example."""
    missing = values.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{path}: column '{col}' has {int(missing.sum())} missing time(s) (data row {row + 1})"
        )
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
        return _seconds(stamps)
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
    else:
        numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy()
    if not bad.any():
        return numbers.to_numpy(dtype=np.float64) * _TIME_UNITS[unit]
    if not bad.all():
        _raise_bad_time(values, bad, path, col, "non-numeric time")
    text = values.astype(str)
    if text.iloc[0].endswith(" UTC"):
        text = text.str.removesuffix(" UTC") + "Z"
    stamps = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        _raise_bad_time(values, bad, path, col, "unparseable time")
    return _seconds(stamps)


def _seconds(stamps: pd.Series) -> np.ndarray:
    """Seconds since the Unix epoch, float64."""
    delta = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return delta.to_numpy(dtype=np.float64)


def _raise_bad_time(values: pd.Series, bad: np.ndarray, path: Path, col: str, what: str) -> None:
    """Raise a DataError that shows the first bad value of the time column."""
    row = int(np.flatnonzero(bad)[0])
    example = values.iloc[row]
    raise DataError(
        f"{path}: column '{col}' has {int(bad.sum())} {what} value(s), e.g. {example!r} (data row {row + 1})"
    )


def _session_keys(keys: pd.Series) -> np.ndarray:
    """Session keys as int64 when every key is an integer written canonically, else as strings."""
    if pd.api.types.is_integer_dtype(keys):
        return keys.to_numpy(dtype=np.int64)
    text = keys.astype(str)
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all() and (numbers % 1 == 0).all() and numbers.abs().max() < 2**53:
        ints = numbers.to_numpy().astype(np.int64)
        if (pd.Series(ints).astype(str).to_numpy() == text.to_numpy()).all():
            return ints
    return text.to_numpy(dtype=object)
