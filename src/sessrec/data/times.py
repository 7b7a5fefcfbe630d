"""Time columns of event logs as float64 seconds since 1970: numbers in a unit, or ISO date-times.

`parse_time` refuses missing, non-finite, non-numeric or unparseable values with a one-line `DataError`
showing the first bad value and its data row. `check_time_scale` refuses times that are no Unix time
(outside the years 1677..2262) or lie more than 10 years after 99% of the others (a typo such as
99999999999 or a placeholder far in the future, which would leave one session after the time split's
cutoff); it warns about times that look like a unit mistake (a median beyond year ~5100: milliseconds read
as seconds?) or relative times (all in January 1970).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sessrec.errors import DataError

log = logging.getLogger("sessrec.data.readers")  # the warnings of `read_events`, under its logger

MS_LIKE_SECONDS = 1e11
"""Times whose median exceeds this many seconds (year ~5100) were probably given in a smaller unit."""

TIME_UNITS = {"s": 1.0, "ms": 1e-3}

UNIX_RANGE = (-(2**63) / 1e9, (2**63 - 1) / 1e9)
"""Seconds a time can take (datetime64[ns]: 1677-09-21 to 2262-04-11); anything else is no Unix time."""

OUTLIER_GAP = 10 * 365.25 * 86400
"""A time more than this (10 years) after 99% of a column's times is refused as a typo or placeholder."""


def data_row(values: pd.Series, position: int) -> int:
    """1-based data row (header excluded) in the file of the value at `position`, filtered rows counted."""
    label = values.index[position]
    return int(label) + 1 if isinstance(label, (int, np.integer)) else position + 1


def parse_time(values: pd.Series, path: Path, col: str, unit: str) -> np.ndarray:
    """Times as float64 seconds: numbers in `unit`, or ISO date-times; DataError with a bad example."""
    missing = values.isna().to_numpy()
    if missing.any():
        row = data_row(values, int(np.flatnonzero(missing)[0]))
        raise DataError(f"{path}: column '{col}' has {int(missing.sum())} missing time(s) (data row {row})")
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
        return _seconds(stamps)
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
    else:
        numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy()
    if not bad.any():
        seconds = numbers.to_numpy(dtype=np.float64) * TIME_UNITS[unit]
        infinite = ~np.isfinite(seconds)
        if infinite.any():
            _raise_bad_time(values, infinite, path, col, "non-finite time")
        return seconds
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
    position = int(np.flatnonzero(bad)[0])
    example = values.iloc[position]
    example = example.item() if isinstance(example, np.generic) else example
    raise DataError(
        f"{path}: column '{col}' has {int(bad.sum())} {what} value(s), e.g. {example!r} "
        f"(data row {data_row(values, position)})"
    )


def check_time_scale(
    seconds: np.ndarray, path: Path, col: str, unit: str, index: pd.Index | None = None
) -> None:
    """DataError for impossible or outlying times (`refuse_outliers`); WARNING for times that look like a
    unit mistake: a median beyond year ~5100 (then nothing is refused), or all in January 1970.
    `index`: the 0-based data row of each time, when it is not its position."""
    median, high = (float(q) for q in np.quantile(seconds, [0.5, 0.99], method="lower"))
    if median > MS_LIKE_SECONDS:
        hint = "pass --time-unit ms" if unit == "s" else "convert them to seconds or milliseconds"
        log.warning(
            "%s: column '%s' times look too large for unit '%s' (median %.4g s after 1970, past year 5000); "
            "%s", path, col, unit, median, hint,
        )
        return
    refuse_outliers(seconds, high, path, col, index)
    if seconds.min() >= 0 and seconds.max() < 31 * 86400:
        log.warning(
            "%s: every time in column '%s' falls in January 1970 (%.4g..%.4g s after the epoch): "
            "relative times, or a wrong --time-unit?", path, col, seconds.min(), seconds.max(),
        )


def refuse_outliers(seconds: np.ndarray, high: float, path: Path, col: str, index: pd.Index | None) -> None:
    """DataError for a time outside `UNIX_RANGE` (years 1677..2262: no Unix time), or more than
    `OUTLIER_GAP` after `high` (the 99th percentile): one such typo or placeholder moves the time split's
    cutoff so that (nearly) every session lands before it. Earlier times are not checked: they do not
    move the cutoff, and data sets that span decades keep their oldest events."""
    low, top = UNIX_RANGE
    if seconds.min() >= low and seconds.max() <= min(top, high + OUTLIER_GAP):
        return
    impossible = (seconds < low) | (seconds > top)
    what = "time(s) outside the years 1677..2262 (no Unix time)"
    if not impossible.any():
        impossible = seconds > high + OUTLIER_GAP
        what = "time(s) more than 10 years after 99% of the others (a typo or a placeholder?)"
    position = int(impossible.argmax())
    row = (int(index[position]) if index is not None else position) + 1
    raise DataError(
        f"{path}: column '{col}' has {int(impossible.sum())} {what}, e.g. {seconds[position]:.6g} s "
        f"after 1970 (data row {row}); fix or drop those rows"
    )
