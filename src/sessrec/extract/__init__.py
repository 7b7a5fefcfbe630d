"""Item feature extraction: TF-IDF text, tabular properties, CNN image vectors (`sessrec extract`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["neighbour_rate", "normalise_ids", "read_items"]


def read_items(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """Read `columns` of an items table, the first being the item id (`sessrec.data.readers.read_item_table`:
    one-line DataErrors name the file, a ragged row included)."""
    from sessrec.data.readers import read_item_table

    return read_item_table(path, columns)


def normalise_ids(ids: Sequence[object], numeric: bool = False) -> list[str]:
    """Item ids as strings; with `numeric`, all-digit ids lose leading zeros ("0108775015" -> "108775015")."""
    out = [str(v) for v in ids]
    if numeric:
        out = [str(int(v)) if v.isdigit() else v for v in out]
    return out


def neighbour_rate(
    vectors: np.ndarray, labels: Sequence[object], k: int = 10, exclude: Sequence[object] | None = None
) -> tuple[float, float]:
    """Share of the k cosine nearest neighbours (self excluded) with the same label, and its chance rate.

    `vectors` (n, D) dense or scipy sparse; `exclude` (n,) optional group ids: neighbours in the same
    group (e.g. colour variants of one product) are skipped. Chance = sum_c p_c^2 over label shares.
    """
    import scipy.sparse as sp

    x = vectors.astype(np.float32)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel() if sp.issparse(x) else (x * x).sum(axis=1))
    norms[norms == 0] = 1.0
    x = sp.diags(1.0 / norms) @ x if sp.issparse(x) else x / norms[:, None]
    sims = x @ x.T
    sims = sims.toarray() if sp.issparse(sims) else np.asarray(sims)  # (n, n)
    np.fill_diagonal(sims, -np.inf)
    labels = np.asarray(labels, dtype=object)
    if exclude is not None:
        groups = np.asarray(exclude, dtype=object)
        sims[groups[:, None] == groups[None, :]] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (n, k)
    valid = np.isfinite(np.take_along_axis(sims, order, axis=1))
    same = (labels[order] == labels[:, None]) & valid
    rate = float(same.sum() / max(valid.sum(), 1))
    _, counts = np.unique(labels.astype(str), return_counts=True)
    chance = float(((counts / counts.sum()) ** 2).sum())
    return rate, chance
