"""Tabular item properties: price (raw and/or log buckets) and categorical columns -> properties parquet."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sessrec.data.readers import read_item_table
from sessrec.errors import ConfigError, DataError
from sessrec.extract import normalise_ids
from sessrec.features.store import write_properties

log = logging.getLogger(__name__)


FAR_OUT = 3.0
"""Log prices beyond the quartiles by more than this many interquartile ranges (Tukey's far-out fences)
do not stretch the buckets: they join the first or the last bucket (no fences when the quartiles agree)."""

CROWDED = 0.9
"""A WARNING says when one price bucket holds more than this share of the priced items."""


def log_buckets(price: np.ndarray, n_buckets: int) -> np.ndarray:
    """Equal-width buckets of log(price) between the smallest and largest positive price within the
    far-out fences (`FAR_OUT`): one extreme price does not push every other item into bucket 0.

    `price` (n,) float; returns (n,) float with codes 0..n_buckets-1, NaN where the price is missing or <= 0.
    """
    if n_buckets < 1:
        raise ConfigError(f"--price-buckets must be >= 1, got {n_buckets}")
    out = np.full(len(price), np.nan)
    ok = np.isfinite(price) & (price > 0)
    if not ok.any():
        return out
    logp = np.log(price[ok])  # (m,)
    lo, hi = _bucket_range(logp)
    if hi == lo:
        out[ok] = 0
        return out
    out[ok] = np.clip(np.floor((logp - lo) / (hi - lo) * n_buckets), 0, n_buckets - 1)
    _warn_crowded(out[ok], n_buckets)
    return out


def _bucket_range(logp: np.ndarray) -> tuple[float, float]:
    """(lowest, highest) log price within the far-out fences; all of them when the quartiles coincide."""
    q1, q3 = np.quantile(logp, [0.25, 0.75])
    if q3 == q1:
        return float(logp.min()), float(logp.max())
    inside = logp[(logp >= q1 - FAR_OUT * (q3 - q1)) & (logp <= q3 + FAR_OUT * (q3 - q1))]
    return float(inside.min()), float(inside.max())


def _warn_crowded(codes: np.ndarray, n_buckets: int) -> None:
    """WARNING when one bucket holds more than `CROWDED` of the priced items `codes` (m,)."""
    counts = np.bincount(codes.astype(np.int64), minlength=n_buckets)
    if n_buckets > 1 and counts.max() > CROWDED * len(codes):
        log.warning(
            "price buckets: bucket %d holds %d of %d priced items; the prices are too close together "
            "for %d log buckets (fewer --price-buckets, or --price-mode raw)",
            int(counts.argmax()), int(counts.max()), len(codes), n_buckets,
        )  # fmt: skip


def check_values(values: np.ndarray, ids: Sequence[object], col: str) -> None:
    """DataError (to be prefixed with the file) for values that are inf or beyond float32's range (what
    the model reads them as; `load_properties` refuses them), naming the column and the first item."""
    with np.errstate(invalid="ignore"):
        bad = np.isinf(values) | (np.abs(values) > np.finfo(np.float32).max)  # NaN (missing) passes
    if bad.any():
        i = int(bad.argmax())
        raise DataError(
            f"column '{col}' holds {int(bad.sum()):,} value(s) that are infinite or beyond float32's range, "
            f"e.g. {float(values[i])!r} for item '{ids[i]}'"
        )


def item_prices(
    path: str | os.PathLike, id_col: str, price_col: str, numeric_ids: bool, how: str
) -> pd.Series:
    """Per-item price (median or mean over rows) from a table such as H&M's transactions; index = item id."""
    frame = read_item_table(path, [id_col, price_col])
    try:
        values = pd.to_numeric(frame[price_col], errors="raise").astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"{path}: column '{price_col}' must be numeric, found {frame[price_col].dtype}"
        ) from None
    ids = pd.Series(normalise_ids(frame[id_col].tolist(), numeric_ids))
    try:
        check_values(values.to_numpy(), ids.to_numpy(), price_col)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    return values.groupby(ids.to_numpy()).agg(how)


def build_properties(
    frame: pd.DataFrame,
    id_col: str,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    price: pd.Series | None = None,
    price_mode: str = "both",
    price_buckets: int = 10,
    numeric_ids: bool = False,
) -> pd.DataFrame:
    """Properties table: ``item_id`` (str), numeric columns (float64), categorical columns (str, null kept).

    `price` (indexed by item id) adds ``price`` (raw, `price_mode` raw|both) and/or ``price_bucket``
    (log bucket as a categorical string "00".."NN", `price_mode` log|both).
    """
    if price_mode not in ("raw", "log", "both"):
        raise ConfigError(f"--price-mode must be raw, log or both, got '{price_mode}'")
    out = pd.DataFrame({"item_id": normalise_ids(frame[id_col].tolist(), numeric_ids)})
    for col in numeric:
        try:
            out[col] = pd.to_numeric(frame[col], errors="raise").astype(np.float64).to_numpy()
        except (TypeError, ValueError):
            raise DataError(f"column '{col}' must be numeric, found {frame[col].dtype}") from None
        check_values(out[col].to_numpy(), out["item_id"].to_numpy(), col)
    for col in categorical:
        values = frame[col].astype(object)
        out[col] = pd.array([None if pd.isna(v) else str(v) for v in values], dtype="string")
    if price is not None:
        p = price.reindex(out["item_id"]).to_numpy(dtype=np.float64)  # (n,), NaN where unknown
        if price_mode in ("raw", "both"):
            out["price"] = p
        if price_mode in ("log", "both"):
            codes = log_buckets(p, price_buckets)
            width = len(str(price_buckets - 1))
            out["price_bucket"] = pd.array(
                [None if np.isnan(c) else f"{int(c):0{width}d}" for c in codes], dtype="string"
            )
        log.info("price: %s/%s items priced", f"{int(np.isfinite(p).sum()):,}", f"{len(p):,}")
    return out


def extract_properties(
    items: str | os.PathLike,
    out: str | os.PathLike,
    id_col: str,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    price_col: str | None = None,
    prices: str | os.PathLike | None = None,
    prices_id_col: str | None = None,
    price_agg: str = "median",
    price_mode: str = "both",
    price_buckets: int = 10,
    numeric_ids: bool = False,
) -> pd.DataFrame:
    """Read `items` (and optionally a separate price table), build the properties table, write it."""
    out = Path(out)
    if out.suffix != ".parquet":
        raise ConfigError(f"--out {out}: properties are written as .parquet")
    cols = [id_col, *numeric, *categorical]
    if price_col and prices is None:
        cols.append(price_col)
    frame = read_item_table(items, cols)
    if frame[id_col].duplicated().any():
        dup = frame[id_col][frame[id_col].duplicated()].iloc[0]
        raise DataError(f"{items}: column '{id_col}' holds duplicate item ids (first: '{dup}')")
    price = None
    if prices is not None:
        if not price_col:
            raise ConfigError("--prices needs --price-col (the price column of that table)")
        price = item_prices(prices, prices_id_col or id_col, price_col, numeric_ids, price_agg)
    elif price_col:
        ids = normalise_ids(frame[id_col].tolist(), numeric_ids)
        try:
            price = pd.Series(
                pd.to_numeric(frame[price_col], errors="raise").astype(np.float64).to_numpy(), index=ids
            )
        except (TypeError, ValueError):
            raise DataError(f"{items}: column '{price_col}' must be numeric") from None
        try:
            check_values(price.to_numpy(), ids, price_col)
        except DataError as err:
            raise DataError(f"{items}: {err}") from None
    try:
        table = build_properties(
            frame, id_col, numeric, categorical, price, price_mode, price_buckets, numeric_ids
        )
    except DataError as err:  # build_properties works on a frame: name the file here
        raise DataError(f"{items}: {err}") from None
    write_properties(out, table)
    log.info("%s: %s items, columns %s", out.name, f"{len(table):,}", ", ".join(table.columns[1:]))
    return table
