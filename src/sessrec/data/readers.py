"""Read event logs (TSV, CSV, Parquet) into one normalised frame: `session`, `item` (string), `time` (s).

`read_events` is the generic reader; `PRESETS` maps the name of a public dataset's layout to the
`read_events` arguments that read it, and `read_preset(name, path, **overrides)` applies one.
Every user error (missing file, missing column, bad or non-finite time value, missing id, a truncated or
corrupt .gz/.bz2/.xz/.zip, a .zst without the `zstandard` package) is a one-line
`sessrec.errors.DataError` naming the file and the cause, never a pandas traceback.

Ids are compared as text without a byte-order mark or surrounding white space (a WARNING says how many
were stripped); ids stored as floats are compared as the integers they hold ("16.0" -> "16"; other floats
are refused). Text files are read as UTF-8 with an optional BOM; a data row with more fields than the
header (an unquoted separator inside a value) is refused, never cut short. Times that are no Unix time
(outside the years 1677..2262) or lie more than 10 years after 99% of the others are refused
(`sessrec.data.times.check_time_scale`); suspicious scales only warn: numbers whose median lies beyond year
5000 (milliseconds read as seconds?) or times all within January 1970.
"""

from __future__ import annotations

import importlib.util
import logging
import lzma
import os
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sessrec.checks import number_problem
from sessrec.data.fields import header_names, id_text, read_fields, text_options
from sessrec.data.times import TIME_UNITS, check_time_scale, data_row, parse_time
from sessrec.errors import ConfigError, DataError, first_line

log = logging.getLogger(__name__)

DEFAULT_SESSION_GAP = 1800.0
"""Inactivity gap (seconds) that ends a session when sessions are cut per user."""

LONG_SESSION = 86400.0
"""A session id whose events span more than this (seconds) is reported when `session_split_gap` is off."""

_ID_PADDING = r"^[\s\ufeff]+|[\s\ufeff]+$"  # a byte-order mark or white space around an id
_DECOMPRESS_ERRORS = (EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)  # bz2 raises OSError/EOF

_COMPRESSION = {".gz", ".bz2", ".zip", ".xz", ".zst"}

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
    session_split_gap: float | None = None,
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
        session_split_gap: with `session_col`, a session id whose events are more than this many
            seconds apart becomes several sessions, numbered 0..S-1 by (session id, time). None (the
            default) keeps each id one session, as the GRU4Rec reference preprocessing does, and warns
            when an id spans more than `LONG_SESSION` seconds.
        item_col, time_col: item id and time columns. Numeric times are in `time_unit` ('s' or 'ms');
            other times are parsed as ISO date-times (UTC unless they say otherwise).
        names: column names of a text file that has no header row.
        keep: keep only rows whose column value is one of the given strings (e.g. {'event': ['view']}).
        offset_ms_col: a column of milliseconds added to the time (Diginetica's `timeframe`).
        drop_missing_sessions: drop rows without a session id instead of raising.
    Returns the events in file order; `session` is int64 when every key is an integer (or when sessions
    are split or cut per user), else str.
    """
    path = Path(path)
    check_gap("session_gap", session_gap)
    if session_split_gap is not None:
        check_gap("session_split_gap", session_split_gap)
    if time_unit not in TIME_UNITS:
        raise ConfigError(f"time_unit: must be 's' or 'ms', got '{time_unit}'")
    if session_col is None and user_col is None:
        raise ConfigError("no session column and no user column: cannot form sessions")
    key_col = session_col if session_col is not None else user_col
    wanted = [key_col, item_col, time_col, offset_ms_col, *(keep or {})]
    columns = list(dict.fromkeys(c for c in wanted if c is not None))
    raw = _read_table(path, fmt, sep, names, columns)
    for col, values in (keep or {}).items():
        raw = raw[raw[col].astype(str).isin([str(v) for v in values])]
    raw = raw.assign(**{c: id_text(raw[c], path, c) for c in dict.fromkeys([key_col, item_col])})
    raw = _strip_ids(raw, path, [key_col, item_col])
    if drop_missing_sessions:
        missing = raw[key_col].isna()
        if missing.any():
            log.warning("%s: dropped %d rows without a value in '%s'", path.name, missing.sum(), key_col)
            raw = raw[~missing]
    _check_ids(raw, path, [key_col, item_col])
    time = parse_time(raw[time_col], path, time_col, time_unit)
    if offset_ms_col is not None:
        time = time + parse_time(raw[offset_ms_col], path, offset_ms_col, "ms")
    check_time_scale(time, path, time_col, time_unit, raw.index)
    events = pd.DataFrame(
        {"key": raw[key_col].to_numpy(), "item": raw[item_col].astype(str).to_numpy(), "time": time}
    )
    if events.empty:
        raise DataError(f"{path}: no events left to read (rows filtered by {dict(keep or {})})")
    if session_col is None:
        events["session"] = sessionize(events["key"], events["time"].to_numpy(), session_gap)
    elif session_split_gap is None:
        events["session"] = _session_keys(events["key"])
        warn_long_sessions(events["session"], time, path)
    else:
        events["session"] = split_sessions(_session_keys(events["key"]), time, session_split_gap)
    log.info("%s: read %d events", path.name, len(events))
    return events[["session", "item", "time"]].reset_index(drop=True)


def sessionize(users: pd.Series, time: np.ndarray, gap: float = DEFAULT_SESSION_GAP) -> np.ndarray:
    """Session number (int64) per event: per user, a new session after more than `gap` s of inactivity.

    Sessions are numbered by (user, first time) order; events keep their positions.
    """
    check_gap("session_gap", gap)
    order = np.lexsort((time, users.to_numpy()))  # stable: ties keep file order
    user_sorted = users.to_numpy()[order]
    time_sorted = time[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (user_sorted[1:] != user_sorted[:-1]) | (np.diff(time_sorted) > gap)
    session = np.empty(len(order), dtype=np.int64)
    session[order] = np.cumsum(new) - 1
    return session


def split_sessions(keys: np.ndarray, time: np.ndarray, gap: float) -> np.ndarray:
    """Session number (int64) per event: a key's events more than `gap` s apart are separate sessions.

    Sessions are numbered 0..S-1 by (key, first time), so the numbering depends only on the data;
    events keep their positions.
    """
    check_gap("session_split_gap", gap)
    codes = pd.factorize(keys, sort=True)[0]  # (n,) int, ordered like the keys
    order = np.lexsort((time, codes))  # stable: ties keep file order
    sorted_codes = codes[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | (np.diff(time[order]) > gap)
    session = np.empty(len(order), dtype=np.int64)
    session[order] = np.cumsum(new) - 1
    n_keys, n_sessions = int(codes.max(initial=-1)) + 1, int(new.sum())
    if n_sessions > n_keys:
        log.info("split %d session ids into %d sessions at gaps over %g s", n_keys, n_sessions, gap)
    return session


def check_gap(name: str, gap: float) -> None:
    """ConfigError unless `gap` is a finite number of seconds > 0."""
    problem = number_problem(gap, low=0, low_open=True, what="a finite number of seconds > 0")
    if problem is not None:
        raise ConfigError(f"{name}: {problem}, got {gap!r}")


def warn_long_sessions(keys: np.ndarray, time: np.ndarray, path: Path) -> None:
    """WARNING when session ids span more than `LONG_SESSION` seconds (reused ids, or one id per user)."""
    codes, uniques = pd.factorize(keys)
    span = pd.Series(time).groupby(codes).agg(["min", "max"])  # (K, 2)
    length = (span["max"] - span["min"]).to_numpy()  # (K,)
    long = length > LONG_SESSION
    if long.any():
        worst = int(length.argmax())
        log.warning(
            "%s: %d of %d session ids span more than %g s (e.g. '%s': %.1f days); a reused id stays one "
            "session unless you pass --max-session-gap SECONDS",
            path, int(long.sum()), len(long), LONG_SESSION, uniques[worst], length[worst] / 86400,
        )


def parquet_parts(folder: Path) -> list[Path]:
    """The Parquet files of a partitioned data set (`folder/**/*.parquet`, sorted by path: the rows are
    read in that order); DataError when there are none. Partition keys in folder names (`day=1/`) are not
    read as columns: the wanted columns must be in the files."""
    parts = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".pq"))
    if not parts:
        raise DataError(f"{folder}: is a folder without .parquet files (give a file, or a folder of Parquet parts)")
    return parts


def file_type(path: Path, fmt: str | None) -> str:
    """'csv', 'tsv' or 'parquet', from `fmt` or else from the extension (compression suffix ignored); a
    folder is a partitioned Parquet data set."""
    if path.is_dir() and fmt in (None, "parquet"):
        return "parquet"
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
    parts = parquet_parts(path) if path.is_dir() else [path]  # a folder: its Parquet parts (DataError: none)
    if not path.is_dir() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    kind = file_type(path, fmt)
    if kind != "parquet" and path.suffix.lower() == ".zst" and importlib.util.find_spec("zstandard") is None:
        raise DataError(f"{path}: reading .zst files needs the 'zstandard' package (pip install zstandard)")
    try:
        if kind == "parquet":
            for part in parts:
                _check_columns(part, columns, _parquet_columns(part))
            frame = pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)
        else:
            sep = sep if sep is not None else ("\t" if kind == "tsv" else ",")
            # only an empty field is missing: ids such as "NA", "null" or "None" are ids, not gaps
            opts = text_options(sep, keep_default_na=False, na_values=[""])
            found = list(names) if names is not None else header_names(path, **opts)
            actual = _match_columns(columns, found)
            _check_columns(path, columns, [*found, *actual])
            wanted = [actual.get(c, c) for c in columns]
            frame = read_fields(path, wanted, found, names is None, dtype=str, **opts)
            frame = frame.rename(columns={v: k for k, v in actual.items()})
    except DataError:
        raise
    except re.error as err:
        raise ConfigError(f"sep: {sep!r} is not a valid separator ({err})") from None
    except ImportError as err:  # an optional decompressor pandas needs
        raise DataError(f"{path}: cannot read as {kind} ({first_line(err)})") from None
    except (*_DECOMPRESS_ERRORS, OSError) as err:
        if path.suffix.lower() in _COMPRESSION or isinstance(err, _DECOMPRESS_ERRORS):
            why = f"truncated or corrupt {path.suffix} file: {first_line(err)}"
            raise DataError(f"{path}: cannot read as {kind} ({why})") from None
        raise DataError(f"{path}: cannot read as {kind} ({first_line(err)})") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"{path}: cannot read as {kind} ({first_line(err)})") from None
    if frame.empty:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def read_item_table(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """`columns` of an items table (.parquet, or .csv/.tsv, maybe compressed), the first being the item id:
    read as text, or as integer text when stored as floats (`id_text`); the other columns typed by pandas.
    One-line DataErrors name the file: not found, unreadable, a missing column, a ragged row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: items table not found")
    name = path.name.lower()
    parquet = ".parquet" in name or name.endswith(".pq")
    opts = text_options("\t" if ".tsv" in name else ",")
    cols = list(dict.fromkeys(columns))
    try:
        found = _parquet_columns(path) if parquet else header_names(path, **opts)
        _check_columns(path, cols, found)
        if parquet:
            frame = pd.read_parquet(path, columns=cols)
        else:
            frame = read_fields(path, cols, found, True, dtype={columns[0]: str}, **opts)
    except DataError:
        raise
    except Exception as err:  # pyarrow / pandas parse errors
        raise DataError(f"{path}: cannot read ({first_line(err)})") from None
    return frame.assign(**{columns[0]: id_text(frame[columns[0]], path, columns[0])})


def _match_columns(wanted: list[str], found: Sequence[object]) -> dict[str, object]:
    """Wanted column -> header name that equals it once a BOM and surrounding spaces are stripped."""
    by_clean = {re.sub(_ID_PADDING, "", str(c)): c for c in found}
    return {c: by_clean[c] for c in wanted if c not in found and c in by_clean}


def _strip_ids(frame: pd.DataFrame, path: Path, cols: list[str]) -> pd.DataFrame:
    """Text ids without a byte-order mark or surrounding white space (empty -> missing); WARNING if any."""
    for col in dict.fromkeys(cols):
        values = frame[col]
        if not pd.api.types.is_string_dtype(values):
            continue
        padded = values.str.contains(_ID_PADDING, regex=True, na=False).to_numpy()
        if not padded.any():
            continue
        example = values[padded].iloc[0]
        stripped = values[padded].str.replace(_ID_PADDING, "", regex=True)
        frame = frame.assign(**{col: values.mask(padded, stripped).replace("", None)})  # a copy
        log.warning(
            "%s: stripped a byte-order mark or surrounding spaces from %d ids in column '%s' (e.g. %r)",
            path, int(padded.sum()), col, example,
        )
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
            hint = ""
            if len(found) == 1:  # the whole header read as one column: another separator
                seps = [name for sep, name in ((",", "','"), (";", "';'"), ("\t", "$'\\t'"), ("|", "'|'"))
                        if sep in str(found[0])]
                hint = f"; the header reads as one column: try --sep {seps[0]}" if seps else ""
            raise DataError(f"{path}: column '{col}' not found (columns: {shown}{hint})")


def _check_ids(frame: pd.DataFrame, path: Path, cols: list[str]) -> None:
    """Raise a DataError for missing session or item ids."""
    for col in cols:
        missing = frame[col].isna().to_numpy()
        if missing.any():
            row = data_row(frame[col], int(np.flatnonzero(missing)[0]))
            count = int(missing.sum())
            raise DataError(f"{path}: column '{col}' has {count} missing value(s) (first at data row {row})")


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
