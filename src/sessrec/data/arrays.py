"""Memory-mapped copies of the prepared splits: `<prepared>/arrays/<split>.{items,offsets,times}.npy`.

`prepare` writes them beside the Parquet splits (`write_prepared`); `PreparedData.split` maps them with
`numpy.load(..., mmap_mode="r")` instead of reading the Parquet file into memory. The pages are the operating
system's file cache: read on first touch, dropped under memory pressure instead of swapped, and shared by
every process that maps the same file (the ranks of a multi-GPU run on one node, a tune study's trials),
where a Parquet read gives each process its own copy (~12 bytes an event kept here: items int32,
times float64, offsets int64 per session).

The Parquet files stay the format of record (other tools read them). The arrays are used only when all
three exist and the split's Parquet file is still the one they were written from: `<split>.source.json`
keeps its size and a hash of the split's columns, which the Parquet file's schema metadata also holds
(`TOKEN_KEY`; read from its footer only). An edited or rewritten split is read from Parquet, with a
warning. They must also agree with meta.json's counts and are checked like a Parquet split (item range,
offsets).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sessrec.errors import DataError

log = logging.getLogger(__name__)

FOLDER = "arrays"
PARTS = {"items": np.int32, "offsets": np.int64, "times": np.float64}
TOKEN_KEY = b"sessrec.arrays"  # Parquet schema metadata: the hash of the columns the arrays were written from


def array_paths(root: Path, name: str) -> dict[str, Path]:
    """The three files of split `name` under the prepared folder `root`."""
    return {part: root / FOLDER / f"{name}.{part}.npy" for part in PARTS}


def token(*columns: np.ndarray) -> str:
    """A hash of a split's columns (what ties a Parquet split to its arrays; deterministic)."""
    digest = hashlib.blake2b(digest_size=16)
    for column in columns:
        digest.update(np.ascontiguousarray(column).data)
    return digest.hexdigest()


def _parquet_token(path: Path) -> str | None:
    metadata = pq.read_schema(path).metadata or {}
    value = metadata.get(TOKEN_KEY)
    return value.decode() if value is not None else None


def offsets_of(session: np.ndarray) -> np.ndarray:
    """CSR offsets (S+1,) int64 of per-event session numbers 0..S-1, grouped in order (caller checks)."""
    if len(session) == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.diff(session)) + 1  # (S-1,)
    return np.concatenate([[0], starts, [len(session)]]).astype(np.int64)


def write_arrays(
    tmp: Path, name: str, session: np.ndarray, items: np.ndarray, times: np.ndarray, split_token: str
) -> None:
    """Write split `name` (per-event session 0..S-1 grouped in order, item index, time) as its arrays
    into `tmp`, the prepared folder being written (`atomic_dir`), after its Parquet file, which holds
    `split_token` (`token(session, items, times)`) in its schema metadata."""
    (tmp / FOLDER).mkdir(exist_ok=True)
    values = {"items": items, "offsets": offsets_of(session), "times": times}
    for part, tmp_file in array_paths(tmp, name).items():
        np.save(tmp_file, np.ascontiguousarray(values[part], dtype=PARTS[part]))
    source = {"size": (tmp / f"{name}.parquet").stat().st_size, "token": split_token}
    (tmp / FOLDER / f"{name}.source.json").write_text(json.dumps(source) + "\n")


def map_arrays(root: Path, name: str, n_items: int, counts: dict[str, Any] | None) -> tuple | None:
    """(items, offsets, times) memory-mapped read-only, or None when the arrays are absent or stale (the
    caller reads the Parquet file). `counts`: meta.json's events and sessions of the split. DataError
    when they exist but do not hold a valid split."""
    paths = array_paths(root, name)
    parquet, source = root / f"{name}.parquet", root / FOLDER / f"{name}.source.json"
    if not all(p.is_file() for p in (*paths.values(), source)):
        return None
    try:
        kept = json.loads(source.read_text())
        stale = kept != {"size": parquet.stat().st_size, "token": _parquet_token(parquet)}
    except (OSError, ValueError, TypeError):  # (pyarrow's read errors are ValueError / OSError)
        stale = True
    if stale:
        log.warning("%s changed since its memory-mapped copy in %s/ was written: reading the Parquet file "
                    "(delete %s/ to silence this)", parquet, root / FOLDER, root / FOLDER)
        return None
    try:
        arrays = {part: np.load(path, mmap_mode="r", allow_pickle=False) for part, path in paths.items()}
    except (OSError, ValueError) as err:
        raise DataError(f"{root / FOLDER}: cannot map the arrays of '{name}' ({err})") from None
    items, offsets, times = arrays["items"], arrays["offsets"], arrays["times"]
    where = f"{root / FOLDER}/{name}.*.npy"
    for part, array in arrays.items():
        if array.dtype != PARTS[part] or array.ndim != 1:
            raise DataError(f"{where}: {part} must be a 1-D {np.dtype(PARTS[part]).name} array")
    if len(times) != len(items) or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(items):
        raise DataError(f"{where}: offsets do not cover the {len(items):,} events")
    if counts is not None and (counts.get("events"), counts.get("sessions")) != (len(items), len(offsets) - 1):
        raise DataError(f"{where}: {len(items):,} events in {len(offsets) - 1:,} sessions, but meta.json says "
                        f"{counts.get('events')} in {counts.get('sessions')}")
    if len(offsets) > 1 and np.any(np.diff(offsets) <= 0):
        raise DataError(f"{where}: offsets must increase (every session has events)")
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise DataError(f"{where}: an item index is out of range 0..{n_items - 1} (items.parquet)")
    return items, offsets, times
