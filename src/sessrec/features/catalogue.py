"""The catalogue an encoder binds to: item ids in index order, where the data lives, popularity."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sessrec.errors import DataError


@dataclass(frozen=True)
class Catalogue:
    """The prepared item index, as encoders need it.

    Args:
        item_ids: (N,) original item ids as strings; item index i is row i.
        data_dir: folder relative feature paths are resolved against first (the prepared data folder).
        counts: (N,) int64 training event counts (popularity), or None when unknown.
    """

    item_ids: np.ndarray  # (N,) object (str)
    data_dir: Path = field(default_factory=Path)
    counts: np.ndarray | None = None  # (N,) int64

    @property
    def n_items(self) -> int:
        """Number of items N."""
        return int(len(self.item_ids))

    @classmethod
    def from_prepared(cls, data_dir: str | os.PathLike, split: str = "train") -> Catalogue:
        """The catalogue of a prepared data folder, with the counts of `split`."""
        from sessrec.data.prepared import PreparedData

        data = PreparedData.load(data_dir)
        return cls(data.item_ids, Path(data_dir), data.counts(split))

    def resolve(self, path: str | os.PathLike) -> Path:
        """A feature path: absolute as given; relative against `data_dir`, then the working directory."""
        path = Path(path)
        if path.is_absolute():
            candidates = [path]
        else:
            candidates = [self.data_dir / path, Path.cwd() / path]
        for candidate in candidates:
            if candidate.exists():
                return candidate
        looked = " or ".join(str(c.parent) for c in candidates)
        raise DataError(f"{path}: feature file not found (looked in {looked})")
