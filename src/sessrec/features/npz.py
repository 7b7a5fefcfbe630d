"""The numeric arrays of feature files: value checks shared by .npy and .npz, and the sparse .npz reader.

A ``scipy.sparse.save_npz`` file is read without pickles and every array is checked (dtypes, lengths,
index bounds, a monotone ``indptr``) before scipy sees it: scipy trusts a CSR's indices and crashes on
one out of bounds. Errors are `DataError`s naming the file; `sessrec.features.store` aligns the rows.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sessrec.errors import DataError, first_line


def check_finite(path: Path, values: np.ndarray, row_of: np.ndarray | None = None) -> None:
    """DataError when any value is NaN or inf, saying how many rows hold one.

    Call it on float32 values: a value beyond float32's range has become inf in the cast.
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    if row_of is None:
        n_bad = int(bad.reshape(len(values), -1).any(axis=1).sum())
    else:
        n_bad = len(np.unique(row_of[bad]))
    raise DataError(f"{path}: {n_bad:,} rows hold NaN or inf values (or values beyond float32's range)")


def check_dtype(path: Path, dtype: np.dtype, what: str = "values") -> None:
    """DataError unless `dtype` is a real number type (not bool, complex, object, string or a record)."""
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise DataError(f"{path}: expected real numeric {what}, found {dtype}")


def to_float32(values: np.ndarray) -> np.ndarray:
    """`values` as float32; out-of-range values become inf (checked by `check_finite`), silently."""
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(np.float32)


_NPZ_KEYS = {  # the arrays scipy.sparse.save_npz writes per format, besides 'format' and 'shape'
    "csr": ("data", "indices", "indptr"),
    "csc": ("data", "indices", "indptr"),
    "coo": ("data", "row", "col"),
}
_NPZ_ERRORS = (  # what np.load raises for a corrupt zip or npy member
    OSError, ValueError, KeyError, EOFError, RuntimeError, NotImplementedError, MemoryError,
    UnicodeDecodeError, zipfile.BadZipFile, zlib.error,
)  # fmt: skip


def _bad_npz(path: Path, why: str) -> DataError:
    return DataError(f"{path}: cannot read as a scipy sparse .npz ({why})")


def read_npz(path: Path) -> tuple[str, tuple[int, int], dict[str, np.ndarray]]:
    """(format, shape, arrays) of a ``scipy.sparse.save_npz`` file, every array checked (no pickles)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise _bad_npz(path, "a single array, not an archive")
        with loaded as npz:
            names = set(npz.files)
            if "format" not in names or "shape" not in names:
                raise _bad_npz(path, "no 'format' or 'shape' array")
            fmt = npz["format"]
            fmt = fmt.item().decode("ascii") if fmt.dtype.kind == "S" and fmt.ndim == 0 else str(fmt)
            if fmt not in _NPZ_KEYS:
                raise _bad_npz(path, f"format '{fmt[:20]}'; save a CSR matrix")
            absent = [k for k in _NPZ_KEYS[fmt] if k not in names]
            if absent:
                raise _bad_npz(path, f"no '{absent[0]}' array")
            arrays = {k: npz[k] for k in ("shape", *_NPZ_KEYS[fmt])}
    except DataError:
        raise
    except _NPZ_ERRORS as err:
        raise _bad_npz(path, first_line(err)) from None
    shape = arrays.pop("shape")
    if shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer) or (shape < 0).any():
        raise _bad_npz(path, "'shape' must be two non-negative integers")
    n_rows, n_cols = int(shape[0]), int(shape[1])
    if max(n_rows, n_cols) >= 2**62:
        raise _bad_npz(path, f"shape ({n_rows}, {n_cols}) is too large")
    _check_sparse_arrays(path, fmt, (n_rows, n_cols), arrays)
    return fmt, (n_rows, n_cols), arrays


def _check_sparse_arrays(path: Path, fmt: str, shape: tuple[int, int], arrays: dict[str, np.ndarray]) -> None:
    """DataError unless the arrays form a valid `fmt` matrix of `shape`: dtypes, lengths, index bounds.

    Runs before scipy sees the arrays: scipy trusts a CSR's indices and crashes on one out of bounds.
    """
    data = arrays["data"]
    if data.ndim != 1:
        raise _bad_npz(path, f"'data' must be 1-d, found shape {data.shape}")
    check_dtype(path, data.dtype)
    for name in _NPZ_KEYS[fmt][1:]:
        if arrays[name].ndim != 1 or not np.issubdtype(arrays[name].dtype, np.integer):
            raise _bad_npz(path, f"'{name}' must be a 1-d integer array, found {arrays[name].dtype}")
    if fmt == "coo":
        bounds = {"row": shape[0], "col": shape[1]}
    else:
        major, minor = shape if fmt == "csr" else shape[::-1]
        indptr, nnz = arrays["indptr"], len(arrays["indices"])
        ends = len(indptr) == major + 1 and indptr[0] == 0 and indptr[-1] == nnz
        if not ends or (indptr[1:] < indptr[:-1]).any():
            raise _bad_npz(path, f"'indptr' must rise from 0 to {nnz:,} in {major + 1:,} entries")
        bounds = {"indices": minor}
    for name, limit in bounds.items():
        index = arrays[name]
        if len(index) != len(data):
            raise _bad_npz(path, f"'{name}' has {len(index):,} entries but 'data' {len(data):,}")
        if len(index) and (index.min() < 0 or index.max() >= limit):
            lo, hi = int(index.min()), int(index.max())
            raise _bad_npz(path, f"'{name}' holds {lo}..{hi}, outside 0..{limit - 1}")


def build_csr(path: Path, fmt: str, shape: tuple[int, int], arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """The float32 CSR matrix of arrays that `_check_sparse_arrays` accepted, scipy's full check on top."""
    data = to_float32(arrays["data"])  # scipy has no float16; values beyond float32 become inf (refused)
    try:
        if fmt == "coo":
            matrix = sp.coo_matrix((data, (arrays["row"], arrays["col"])), shape=shape).tocsr()
        else:
            cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
            matrix = cls((data, arrays["indices"], arrays["indptr"]), shape=shape)
            matrix.check_format(full_check=True)
            matrix = matrix.tocsr()
        matrix.check_format(full_check=True)
    except (ValueError, TypeError, OverflowError, MemoryError) as err:
        raise _bad_npz(path, first_line(err)) from None
    return matrix
