"""The prepared data directory (docs/design.md): writing it atomically, loading and validating it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sessrec.data.arrays import TOKEN_KEY, map_arrays, offsets_of, token, write_arrays
from sessrec.errors import DataError
from sessrec.io import atomic_dir

SPLIT_NAMES = ("train_full", "train", "valid", "test")
SPLIT_COLUMNS = ("session", "item", "time")
SESSIONS_SUFFIX = ".sessions.parquet"  # <split>.sessions.parquet: the input's key of each session
ITEM_COLUMNS = ("item_id", "idx")


@dataclass(frozen=True)
class Split:
    """One split in CSR form: the events of session s are items[offsets[s]:offsets[s + 1]]. Read-only
    memory maps when the prepared folder has its arrays (`sessrec.data.arrays`), else in-memory arrays."""

    items: np.ndarray  # (E,) int32 (memory-mapped) or int64
    offsets: np.ndarray  # (S+1,) int64
    times: np.ndarray  # (E,) float64

    @property
    def n_events(self) -> int:
        """Number of events E."""
        return int(self.items.shape[0])

    @property
    def n_sessions(self) -> int:
        """Number of sessions S."""
        return int(self.offsets.shape[0] - 1)

    def counts(self, n_items: int) -> np.ndarray:
        """Events per item index, int64 (n_items,)."""
        return np.bincount(self.items, minlength=n_items).astype(np.int64)

    @classmethod
    def from_sessions(cls, session: np.ndarray, items: np.ndarray, times: np.ndarray) -> Split:
        """Build from per-event columns whose `session` is 0..S-1, non-decreasing (caller checks)."""
        return cls(items.astype(np.int64), offsets_of(session), times.astype(np.float64))


class PreparedData:
    """A prepared data directory: item map and meta loaded at once, splits on first use (cached)."""

    def __init__(self, root: Path, item_ids: np.ndarray, meta: dict[str, Any]) -> None:
        self.root = root
        self.item_ids = item_ids  # (N,) original ids as str
        self.meta = meta
        self._splits: dict[str, Split] = {}

    @classmethod
    def load(cls, root: str | os.PathLike) -> PreparedData:
        """Open `root`, checking every file is there and items.parquet / meta.json are well formed."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: prepared data folder not found (run `python -m sessrec prepare`)")
        for name in [*(f"{s}.parquet" for s in SPLIT_NAMES), "items.parquet", "meta.json"]:
            if not (root / name).is_file():
                raise DataError(f"{root / name}: file missing from the prepared data folder")
        try:
            meta = json.loads((root / "meta.json").read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{root / 'meta.json'}: cannot read ({err})") from None
        return cls(root, _load_items(root / "items.parquet"), meta)

    @property
    def n_items(self) -> int:
        """Number of items N in the index."""
        return int(self.item_ids.shape[0])

    def split(self, name: str) -> Split:
        """The split `name` (one of train_full, train, valid, test), validated and cached."""
        if name not in SPLIT_NAMES:
            raise DataError(f"{self.root}: unknown split '{name}' (splits: {', '.join(SPLIT_NAMES)})")
        if name not in self._splits:
            counts = self.meta.get("splits", {}).get(name)
            mapped = map_arrays(self.root, name, self.n_items, counts)  # (items, offsets, times) or None
            path = self.root / f"{name}.parquet"
            self._splits[name] = Split(*mapped) if mapped else _load_split(path, self.n_items)
        return self._splits[name]

    def counts(self, name: str) -> np.ndarray:
        """Events per item index in split `name`, int64 (N,)."""
        return self.split(name).counts(self.n_items)

    def session_keys(self, name: str) -> np.ndarray | None:
        """The input's session key (S,) of each session of split `name` (int64 or str objects); None for
        a folder prepared before the keys were kept. DataError when the file does not fit the split."""
        path = self.root / f"{name}{SESSIONS_SUFFIX}"
        if name not in SPLIT_NAMES or not path.is_file():
            return None
        keys = _read_columns(path, ("key",)).column("key").to_numpy(zero_copy_only=False)
        if len(keys) != self.split(name).n_sessions:
            raise DataError(f"{path}: {len(keys):,} session keys for {self.split(name).n_sessions:,} sessions")
        return keys


def _read_columns(path: Path, columns: tuple[str, ...], schema_only: bool = False) -> pa.Table | None:
    """Read `columns` of a parquet file (only check they are there with `schema_only`); DataError when
    unreadable or a column is missing."""
    try:
        found = pq.read_schema(path).names
        missing = [c for c in columns if c not in found]
        if missing:
            raise DataError(f"{path}: column '{missing[0]}' not found (columns: {', '.join(found)})")
        return None if schema_only else pq.read_table(path, columns=list(columns))
    except DataError:
        raise
    except Exception as err:  # pyarrow's errors for a corrupt or non-parquet file
        raise DataError(f"{path}: cannot read as parquet ({str(err).splitlines()[0]})") from None


def _integer_column(table: pa.Table, path: Path, col: str) -> np.ndarray:
    """A column as int64, DataError when it does not hold integers."""
    array = table.column(col).to_numpy()
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: column '{col}' must hold integers, found {array.dtype}")
    return array.astype(np.int64, copy=False)


def _load_items(path: Path) -> np.ndarray:
    """Original item ids ordered by idx; idx must be exactly 0..N-1."""
    table = _read_columns(path, ITEM_COLUMNS)
    idx = _integer_column(table, path, "idx")
    if not np.array_equal(np.sort(idx), np.arange(len(idx))):
        raise DataError(f"{path}: column 'idx' must hold each of 0..{len(idx) - 1} exactly once")
    ids = np.array([str(v) for v in table.column("item_id").to_pylist()], dtype=object)
    out = np.empty(len(ids), dtype=object)
    out[idx] = ids
    return out


def _load_split(path: Path, n_items: int) -> Split:
    """Read one split file and check its item range and session grouping.

    Column by column, each Arrow table dropped as soon as its numpy copy exists and Arrow's freed memory
    handed back at the end: at 64M events the load peaks near the arrays it keeps (~1.1 GB) instead of
    ~4x that, and no Arrow buffers linger until the next split is read."""
    _read_columns(path, SPLIT_COLUMNS, schema_only=True)
    try:
        session = _integer_column(_read_columns(path, ("session",)), path, "session")
        step = np.diff(session)  # (E-1,)
        if len(session) and (session[0] != 0 or np.any((step != 0) & (step != 1))):
            raise DataError(f"{path}: column 'session' must be grouped and numbered 0..S-1 in order")
        del step
        offsets = offsets_of(session)  # (S+1,)
        del session
        items = _integer_column(_read_columns(path, ("item",)), path, "item")
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            bad = int(items[(items < 0) | (items >= n_items)][0])
            raise DataError(
                f"{path}: column 'item' has index {bad} out of range 0..{n_items - 1} (items.parquet)"
            )
        times = _read_columns(path, ("time",)).column("time").to_numpy().astype(np.float64, copy=False)
    finally:
        pa.default_memory_pool().release_unused()
    return Split(items, offsets, times)


def write_prepared(
    out_dir: str | os.PathLike,
    splits: dict[str, Any],
    item_ids: Any,
    meta: dict[str, Any],
    overwrite: bool = False,
    session_keys: dict[str, Any] | None = None,
) -> Path:
    """Write the split frames, items.parquet and meta.json into `out_dir` atomically; returns `out_dir`.

    Frames (pandas or polars) must already follow the design order (see `sessrec.data.preprocess.finalize`);
    `item_ids` is a numpy array or a polars Series of strings. Per-split events/sessions/items are added
    to meta under "splits". `session_keys`: per split, the input's key (S,) of session 0..S-1, written as
    `<split>.sessions.parquet` (column `key`: int64 when every key is an integer, else string).
    """
    out_dir = Path(out_dir)
    missing = [s for s in SPLIT_NAMES if s not in splits]
    if missing:
        raise ValueError(f"write_prepared: split '{missing[0]}' not given")
    meta = {**meta, "n_items": int(len(item_ids)), "splits": {s: split_stats(splits[s]) for s in SPLIT_NAMES}}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for name in SPLIT_NAMES:
            frame = splits[name]
            columns = {"session": _numbers(frame["session"], np.int64), "item": _numbers(frame["item"], np.int32),
                       "time": _numbers(frame["time"], np.float64)}
            split_token = token(columns["session"], columns["item"], columns["time"])
            table = pa.table({"session": pa.array(columns["session"], pa.int64()),
                              "item": pa.array(columns["item"], pa.int32()),
                              "time": pa.array(columns["time"], pa.float64())})
            pq.write_table(table.replace_schema_metadata({TOKEN_KEY: split_token}), tmp / f"{name}.parquet")
            del table
            write_arrays(tmp, name, columns["session"], columns["item"], columns["time"], split_token)
            del columns
            if session_keys is not None:
                pq.write_table(pa.table({"key": _keys(session_keys[name])}), tmp / f"{name}{SESSIONS_SUFFIX}")
        items = pa.table(
            {
                "item_id": _strings(item_ids),
                "idx": pa.array(np.arange(len(item_ids), dtype=np.int32), pa.int32()),
            }
        )
        pq.write_table(items, tmp / "items.parquet")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out_dir


def _keys(keys: Any) -> pa.Array:
    """Session keys (numpy or polars) as an Arrow int64 array when integers, else strings."""
    if hasattr(keys, "to_arrow"):
        keys = keys.to_arrow()
        return keys.cast(pa.int64()) if pa.types.is_integer(keys.type) else keys.cast(pa.string())
    keys = np.asarray(keys)
    if keys.dtype.kind in "iu":
        return pa.array(keys.astype(np.int64), pa.int64())
    return pa.array([str(k) for k in keys], pa.string())


def _numbers(column: Any, dtype: type) -> np.ndarray:
    """A pandas or polars column as a numpy array of `dtype`."""
    return np.asarray(column.to_numpy(), dtype=dtype)


def _strings(ids: Any) -> pa.Array:
    """Item ids as an Arrow string array: a polars Series directly, anything else value by value."""
    if hasattr(ids, "to_arrow"):
        return ids.to_arrow().cast(pa.string())
    return pa.array([str(v) for v in ids], pa.string())


def _n_unique(column: Any) -> int:
    return int(column.n_unique() if hasattr(column, "n_unique") else column.nunique())


def split_stats(frame: pd.DataFrame) -> dict[str, int]:
    """Events, sessions and distinct items of a split frame (pandas or polars; columns session, item)."""
    return {
        "events": int(len(frame)),
        "sessions": _n_unique(frame["session"]),
        "items": _n_unique(frame["item"]),
    }
