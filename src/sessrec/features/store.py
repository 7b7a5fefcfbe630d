"""Item feature sets on disk, aligned to the prepared item map by original item id.

On-disk layout (what `write_*` produce and `load_*` read):

- dense: ``<name>.npy`` (rows, D) float32 and ``<name>.ids.txt``, one item id per line, row order;
- sparse: ``<name>.npz`` (``scipy.sparse.save_npz`` of a CSR (rows, V) matrix) and ``<name>.ids.txt``;
- properties: ``<name>.parquet`` with an ``item_id`` column plus numeric and categorical columns;
- raw text: any parquet with an ``item_id`` column and a string column (see `load_text`).

Without ``<name>.ids.txt``, the row ids come from ``items.parquet`` in the same folder (its ``item_id``
column in row order): the layout written by `python -m sessrec generate` (image.npy / text.npz).

Loading reorders rows to the catalogue (row i = item index i). Items without a row get zeros and
``mask[i] = False``; encoders decide what a missing item becomes (a learned vector or zeros). Rows whose
id is not in the catalogue are ignored. Coverage is logged ("image.npy: 2,589/2,589 items (100.0%)").
Bad input raises `DataError` naming the file: non-finite values (also after the cast to float32, so
1e39 is refused), non-numeric, complex or boolean dtypes, a malformed sparse matrix (every array of the
.npz is checked before scipy touches it: index bounds, a monotone ``indptr``), an ids file whose length
differs from the rows, duplicate ids, a dimension other than the expected one, or no catalogue item covered.
Ids are compared after stripping a byte-order mark and surrounding white space (a WARNING counts the ids
that changed); a coverage below `MIN_COVERAGE` logs a WARNING with examples of missing ids.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from torch import Tensor

from sessrec.data.fields import id_text
from sessrec.errors import DataError, first_line
from sessrec.features.npz import build_csr, check_dtype, check_finite, read_npz, to_float32
from sessrec.io import atomic_write

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

MIN_COVERAGE = 0.5
"""Share of catalogue items a feature file should cover; below it, loading logs a WARNING."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ID_PADDING = r"^[\s\ufeff]+|[\s\ufeff]+$"  # a byte-order mark or white space around an id


@dataclass(frozen=True)
class DenseFeatures:
    """Dense vectors aligned to the catalogue; rows of missing items are zero."""

    values: Tensor  # (N, D) float32
    mask: Tensor  # (N,) bool, True where the item has a row

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.values.shape[1])


@dataclass(frozen=True)
class SparseFeatures:
    """Sparse vectors (e.g. TF-IDF) aligned to the catalogue, never densified; missing rows are empty."""

    csr: sp.csr_matrix  # (N, V) float32
    mask: Tensor  # (N,) bool


@dataclass(frozen=True)
class PropertyFeatures:
    """Tabular item properties aligned to the catalogue.

    Numeric nulls/NaN are missing values (0 in `numeric`, False in `numeric_present`); categorical
    values are coded 1..K per column by sorted value, 0 = missing or unknown.
    """

    numeric: Tensor  # (N, k) float32
    numeric_present: Tensor  # (N, k) bool
    categorical: Tensor  # (N, c) int64
    cardinalities: tuple[int, ...]  # (c,) K + 1 per column (code 0 included)
    vocabularies: tuple[tuple[str, ...], ...]  # (c,) values of codes 1..K per column
    mask: Tensor  # (N,) bool, True where the item has a row


@dataclass(frozen=True)
class TextFeatures:
    """Raw item texts aligned to the catalogue; missing items get ""."""

    texts: list[str]  # (N,)
    mask: Tensor  # (N,) bool


def ids_path(path: PathLike) -> Path:
    """The ids file that goes with a feature matrix: ``<name>.ids.txt`` beside ``<name>.npy|.npz``."""
    path = Path(path)
    return path.with_name(path.name.rsplit(".", 1)[0] + ".ids.txt")


def _read_ids(path: Path, n_rows: int) -> np.ndarray:
    """Row ids of a matrix file: its ids file, else the sibling items.parquet (generator layout)."""
    ids_file = ids_path(path)
    if ids_file.is_file():
        try:
            ids = np.array(ids_file.read_text(encoding="utf-8").splitlines(), dtype=object)
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{ids_file}: cannot read as UTF-8 text ({first_line(err)})") from None
        source = ids_file
    elif (path.parent / "items.parquet").is_file():
        source = path.parent / "items.parquet"
        ids = _parquet_ids(source)
    else:
        raise DataError(f"{path}: no ids file ({ids_file.name}) and no items.parquet beside it")
    if len(ids) != n_rows:
        raise DataError(f"{path}: {n_rows:,} rows but {source.name} lists {len(ids):,} item ids")
    return ids


def file_item_ids(path: PathLike) -> np.ndarray:
    """The item ids a feature file has rows for (strings): a matrix's ids file (or items.parquet beside
    it), a parquet file's item_id column."""
    path = Path(path)
    if path.suffix == ".parquet":
        return _parquet_ids(path)
    ids_file = ids_path(path)
    source = ids_file if ids_file.is_file() else path.parent / "items.parquet"
    if source.suffix == ".parquet":
        return _parquet_ids(source) if source.is_file() else np.zeros(0, dtype=object)
    return np.array(source.read_text(encoding="utf-8").splitlines(), dtype=object)


def _parquet_ids(path: Path) -> np.ndarray:
    """The item_id column of a parquet file as strings, row order."""
    return _id_strings(path, _read_parquet(path, ["item_id"])["item_id"])


def _id_strings(path: Path, ids: pd.Series) -> np.ndarray:
    """An item_id column as strings (object array), float ids as the integers they hold ("16.0" -> "16");
    DataError when an id is missing or a float id is no integer."""
    missing = ids.isna().to_numpy()
    if missing.any():
        first = int(missing.argmax())
        raise DataError(f"{path}: {int(missing.sum()):,} rows without an item_id (first at row {first})")
    return id_text(ids, path, "item_id").astype(str).to_numpy(dtype=object)


def _read_parquet(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read `columns` of a parquet file; DataError naming the file and the missing column."""
    if not path.is_file():
        raise DataError(f"{path}: feature file not found")
    try:
        names = pq.read_schema(path).names
    except Exception as err:  # pyarrow's errors for a corrupt or non-parquet file
        raise DataError(f"{path}: cannot read as parquet ({first_line(err)})") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: column '{missing[0]}' not found (columns: {', '.join(names)})")
    try:
        return pq.read_table(path, columns=list(dict.fromkeys(columns))).to_pandas()
    except Exception as err:  # a valid schema over corrupt pages
        raise DataError(f"{path}: cannot read as parquet ({first_line(err)})") from None


def _normalise_ids(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids (n,) as strings without a byte-order mark or white space around them; (ids, how many changed)."""
    raw = pd.Series(np.asarray(ids, dtype=object), dtype=object).astype(str)
    clean = raw.str.replace(_ID_PADDING, "", regex=True)
    return clean.to_numpy(dtype=object), int((clean != raw).sum())


def _align(path: Path, file_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Row of each catalogue item in the file, -1 where absent; logs coverage, checks ids."""
    clean, changed = _normalise_ids(file_ids)
    if changed:
        log.warning(
            "%s: %s item ids had a byte-order mark or surrounding spaces; matched without them",
            path, f"{changed:,}",
        )
    index = pd.Index(clean)
    if index.has_duplicates:
        dup = index[index.duplicated()]
        raise DataError(f"{path}: {len(dup):,} duplicate item ids (first: '{dup[0]}')")
    catalogue, cat_changed = _normalise_ids(item_ids)
    if cat_changed and pd.Index(catalogue).has_duplicates:  # the padding tells catalogue items apart
        catalogue = np.asarray(item_ids, dtype=object)
    rows = index.get_indexer(pd.Index(catalogue))  # (N,)
    found, total = int((rows >= 0).sum()), len(item_ids)
    if total and found == 0:
        sample = index[0] if len(index) else "none"
        raise DataError(
            f"{path}: covers none of the {total:,} catalogue items "
            f"(file ids like '{sample}', catalogue ids like '{item_ids[0]}')"
        )
    share = found / max(total, 1)
    if share < MIN_COVERAGE:
        missing = ", ".join(f"'{v}'" for v in np.asarray(item_ids, dtype=object)[rows < 0][:3])
        log.warning(
            "%s: covers only %s/%s catalogue items (%.1f%%); missing items get no features (e.g. %s)",
            path, f"{found:,}", f"{total:,}", 100.0 * share, missing,
        )
    else:
        log.info("%s: %s/%s items (%.1f%%)", path.name, f"{found:,}", f"{total:,}", 100.0 * share)
    return rows


def _mask(rows: np.ndarray) -> Tensor:
    return torch.from_numpy(rows >= 0)  # (N,) bool


def load_dense(path: PathLike, item_ids: np.ndarray, dim: int | None = None) -> DenseFeatures:
    """Read ``<name>.npy`` (rows, D) and align it to `item_ids` (N,); `dim` is the expected D."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: feature file not found")
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read as .npy ({str(err).splitlines()[0]})") from None
    if matrix.ndim != 2:
        raise DataError(f"{path}: expected a 2-d (rows, D) array, found shape {tuple(matrix.shape)}")
    if matrix.shape[1] == 0:
        raise DataError(f"{path}: the vectors have dimension 0")
    if dim is not None and matrix.shape[1] != dim:
        raise DataError(f"{path}: dimension {matrix.shape[1]} but {dim} expected")
    check_dtype(path, matrix.dtype)
    rows = _align(path, _read_ids(path, matrix.shape[0]), item_ids)  # (N,)
    present = rows >= 0
    values = np.zeros((len(item_ids), matrix.shape[1]), dtype=np.float32)  # (N, D)
    try:
        values[present] = to_float32(matrix[rows[present]])
    except (OSError, ValueError) as err:  # a truncated memory-mapped file
        raise DataError(f"{path}: cannot read as .npy ({first_line(err)})") from None
    check_finite(path, values)
    return DenseFeatures(torch.from_numpy(values), _mask(rows))


def load_sparse(path: PathLike, item_ids: np.ndarray, dim: int | None = None) -> SparseFeatures:
    """Read ``<name>.npz`` (CSR (rows, V)) and align it to `item_ids` (N,); `dim` is the expected V."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: feature file not found")
    fmt, shape, arrays = read_npz(path)
    if dim is not None and shape[1] != dim:
        raise DataError(f"{path}: dimension {shape[1]:,} but {dim:,} expected")
    rows = _align(path, _read_ids(path, shape[0]), item_ids)  # (N,)
    matrix = build_csr(path, fmt, shape, arrays)  # (rows, V), only after every array was checked
    present = np.flatnonzero(rows >= 0)
    picked = matrix[rows[present]]  # (P, V) float32, rows of the present items
    scatter = sp.csr_matrix(
        (np.ones(len(present), dtype=np.float32), (present, np.arange(len(present)))),
        shape=(len(item_ids), len(present)),
    )  # (N, P) places row p at item present[p]
    csr = (scatter @ picked).tocsr()  # (N, V), duplicate entries summed
    csr.sort_indices()
    check_finite(path, csr.data, np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr)))
    return SparseFeatures(csr, _mask(rows))


def _codes(values: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes 1..K by sorted string value, 0 for nulls; returns (codes (N,), vocabulary (K,))."""
    present = values.notna().to_numpy()
    strings = values[present].astype(str).to_numpy()
    vocab, inverse = np.unique(strings, return_inverse=True)
    codes = np.zeros(len(values), dtype=np.int64)
    codes[present] = inverse + 1
    return codes, tuple(str(v) for v in vocab)


def _numeric(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Numeric columns as float64 (rows, k), NaN for nulls; DataError for strings, inf or values that
    float32 (the model's type) cannot hold."""
    out = np.zeros((len(frame), len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        if pd.api.types.is_complex_dtype(frame[col]):
            raise DataError(f"{path}: column '{col}' must be real numbers, found {frame[col].dtype}")
        try:
            out[:, j] = pd.to_numeric(frame[col], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{path}: column '{col}' must be numeric, found {frame[col].dtype}") from None
    n_inf = int(np.isinf(out).any(axis=1).sum())
    if n_inf:
        raise DataError(f"{path}: {n_inf:,} rows hold inf values")
    with np.errstate(invalid="ignore"):
        huge = np.abs(out) > _FLOAT32_MAX  # (rows, k); NaN compares False
    if huge.any():
        row, j = np.argwhere(huge)[0]
        raise DataError(
            f"{path}: {int(huge.any(axis=1).sum()):,} rows hold values beyond float32's range "
            f"(e.g. {out[row, j]:g} in column '{columns[j]}')"
        )
    return out


def load_properties(
    path: PathLike,
    item_ids: np.ndarray,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
) -> PropertyFeatures:
    """Read ``numeric`` and ``categorical`` columns of a parquet with ``item_id`` aligned to `item_ids`."""
    path = Path(path)
    frame = _read_parquet(path, ["item_id", *numeric, *categorical])
    rows = _align(path, _id_strings(path, frame["item_id"]), item_ids)  # (N,)
    present = rows >= 0
    num_file = _numeric(path, frame, numeric)  # (rows, k)
    num = np.full((len(item_ids), len(numeric)), np.nan)  # (N, k)
    num[present] = num_file[rows[present]]
    cats, cards, vocabs = np.zeros((len(item_ids), len(categorical)), dtype=np.int64), [], []
    for j, col in enumerate(categorical):
        aligned = pd.Series([None] * len(item_ids), dtype=object)
        aligned[present] = frame[col].to_numpy(dtype=object)[rows[present]]
        cats[:, j], vocab = _codes(aligned)
        cards.append(len(vocab) + 1)
        vocabs.append(vocab)
    has = ~np.isnan(num)
    return PropertyFeatures(
        numeric=torch.from_numpy(np.where(has, num, 0.0).astype(np.float32)),
        numeric_present=torch.from_numpy(has),
        categorical=torch.from_numpy(cats),
        cardinalities=tuple(cards),
        vocabularies=tuple(vocabs),
        mask=_mask(rows),
    )


def load_text(path: PathLike, item_ids: np.ndarray, column: str = "text") -> TextFeatures:
    """Read the string column `column` of a parquet with ``item_id``, aligned to `item_ids`."""
    path = Path(path)
    frame = _read_parquet(path, ["item_id", column])
    rows = _align(path, _id_strings(path, frame["item_id"]), item_ids)  # (N,)
    raw = frame[column].to_numpy(dtype=object)
    texts = ["" if r < 0 or raw[r] is None or raw[r] != raw[r] else str(raw[r]) for r in rows]
    return TextFeatures(texts, _mask(rows))


def _ids_text(path: Path, item_ids: Sequence[object], n_rows: int) -> str:
    """The ids file's content, one id a line; DataError for a wrong count or a line break in an id."""
    ids = [str(v) for v in item_ids]
    if len(ids) != n_rows:
        raise DataError(f"{path}: {n_rows:,} rows but {len(ids):,} item ids given")
    if any("\n" in v or "\r" in v for v in ids):
        raise DataError(f"{ids_path(path)}: item ids must not contain line breaks")
    return "".join(f"{v}\n" for v in ids)


MATRIX_SUFFIXES = (".npy", ".npz")


def check_ids_owner(path: PathLike) -> None:
    """DataError when another feature matrix beside `path` (x.npz for x.npy, and back) shares its ids
    file: writing `path` would rewrite that file and silently re-label the other matrix's rows."""
    path = Path(path)
    for suffix in MATRIX_SUFFIXES:
        other = path.with_name(path.name.rsplit(".", 1)[0] + suffix)
        if other != path and other.exists():
            shared = ids_path(path).name
            raise DataError(f"{path}: {other.name} beside it shares the ids file {shared}; writing would "
                            "re-label its rows: choose another name")


@contextlib.contextmanager
def _atomic_pair(path: Path, ids_text: str) -> Iterator[Path]:
    """Yield a temporary file for the matrix; on success the matrix and its ids file are renamed into
    place together (two renames, after both files are complete), on error neither is touched."""
    check_ids_owner(path)
    with contextlib.ExitStack() as stack:
        tmp_ids = stack.enter_context(atomic_write(ids_path(path)))
        tmp = stack.enter_context(atomic_write(path))
        tmp_ids.write_text(ids_text, encoding="utf-8")
        yield tmp


def write_dense(path: PathLike, values: np.ndarray, item_ids: Sequence[object]) -> Path:
    """Write ``values`` (rows, D) as float32 ``<name>.npy`` plus ``<name>.ids.txt``, atomically."""
    path = Path(path)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise DataError(f"{path}: expected a 2-d (rows, D) array, got shape {values.shape}")
    check_finite(path, values)
    with _atomic_pair(path, _ids_text(path, item_ids, values.shape[0])) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, values)
    return path


def write_sparse(path: PathLike, matrix: sp.spmatrix, item_ids: Sequence[object]) -> Path:
    """Write ``matrix`` (rows, V) as a float32 CSR ``<name>.npz`` plus ``<name>.ids.txt``, atomically."""
    path = Path(path)
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    check_finite(path, csr.data, np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr)))
    with _atomic_pair(path, _ids_text(path, item_ids, csr.shape[0])) as tmp:
        with open(tmp, "wb") as fh:
            sp.save_npz(fh, csr)
    return path


def write_properties(path: PathLike, frame: pd.DataFrame) -> Path:
    """Write a properties table (an ``item_id`` column, stored as strings) as parquet, atomically."""
    path = Path(path)
    if "item_id" not in frame.columns:
        raise DataError(f"{path}: properties need an 'item_id' column (columns: {', '.join(frame.columns)})")
    out = frame.copy()
    out["item_id"] = out["item_id"].astype(str)
    dup = out["item_id"][out["item_id"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: {len(dup):,} duplicate item ids (first: '{dup.iloc[0]}')")
    with atomic_write(path) as tmp:
        out.to_parquet(tmp, index=False)
    return path
