"""Tabular item properties: price (raw and/or log buckets) and categorical columns -> properties parquet."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sessrec.errors import ConfigError, DataError
from sessrec.extract import normalise_ids, read_items
from sessrec.features.store import write_properties

log = logging.getLogger(__name__)


def log_buckets(price: np.ndarray, n_buckets: int) -> np.ndarray:
    """Equal-width buckets of log(price) between the smallest and largest positive price.

    `price` (n,) float; returns (n,) float with codes 0..n_buckets-1, NaN where the price is missing or <= 0.
    """
    if n_buckets < 1:
        raise ConfigError(f"--price-buckets must be >= 1, got {n_buckets}")
    out = np.full(len(price), np.nan)
    ok = np.isfinite(price) & (price > 0)
    if not ok.any():
        return out
    logp = np.log(price[ok])
    lo, hi = logp.min(), logp.max()
    if hi == lo:
        out[ok] = 0
        return out
    out[ok] = np.clip(np.floor((logp - lo) / (hi - lo) * n_buckets), 0, n_buckets - 1)
    return out


def item_prices(
    path: str | os.PathLike, id_col: str, price_col: str, numeric_ids: bool, how: str
) -> pd.Series:
    """Per-item price (median or mean over rows) from a table such as H&M's transactions; index = item id."""
    frame = read_items(path, [id_col, price_col])
    try:
        values = pd.to_numeric(frame[price_col], errors="raise").astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"{path}: column '{price_col}' must be numeric, found {frame[price_col].dtype}"
        ) from None
    ids = pd.Series(normalise_ids(frame[id_col].tolist(), numeric_ids))
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
    frame = read_items(items, cols)
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
        table = build_properties(
            frame, id_col, numeric, categorical, price, price_mode, price_buckets, numeric_ids
        )
    except DataError as err:  # build_properties works on a frame: name the file here
        raise DataError(f"{items}: {err}") from None
    write_properties(out, table)
    log.info("%s: %s items, columns %s", out.name, f"{len(table):,}", ", ".join(table.columns[1:]))
    return table
