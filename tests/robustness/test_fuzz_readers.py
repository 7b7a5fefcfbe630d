"""Fuzzing the input readers: random event files and feature files give a result or a SessrecError.

Readers: random bytes (plain or as a compressed name) and random CSV text -> a frame with the
documented columns (session, item, time: finite float64 seconds, no missing values) or a one-line
`SessrecError`, nothing else. Feature loaders: random dense arrays and property tables in this process;
random sparse .npz arrays (format, shape, data, indices, indptr, row, col) in a child interpreter, since
before validation a bad index crashed the interpreter (a signal would otherwise end pytest itself).
SESSREC_FUZZ_EXAMPLES=1000 runs a longer hunt.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessrec.data.readers import read_events
from sessrec.errors import DataError, SessrecError
from sessrec.features.store import (
    DenseFeatures,
    PropertyFeatures,
    SparseFeatures,
    load_dense,
    load_properties,
    load_sparse,
)

EXAMPLES = int(os.environ.get("SESSREC_FUZZ_EXAMPLES", "40"))  # raise it for a longer hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
ITEMS = np.array(["a", "b", "c", "d", "e"], dtype=object)
HEADER = "SessionId,ItemId,Time"


def _events_or_error(path: Path, **options) -> None:
    """read_events(path) is a well-formed frame or a one-line SessrecError."""
    try:
        frame = read_events(path, **options)
    except SessrecError as err:
        assert "\n" not in str(err), str(err)
        return
    assert list(frame.columns) == ["session", "item", "time"]
    assert len(frame) > 0 and not frame.isna().any().any()
    assert frame["time"].dtype == np.float64 and np.isfinite(frame["time"].to_numpy()).all()
    assert all(isinstance(v, str) and v == v.strip() and v for v in frame["item"])


def _in_tmp(name: str, content: bytes) -> tuple[tempfile.TemporaryDirectory, Path]:
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / name
    path.write_bytes(content)
    return folder, path


NAMES = ["ev.csv", "ev.tsv", "ev.csv.gz", "ev.csv.bz2", "ev.csv.xz", "ev.csv.zip", "ev.parquet", "ev.dat"]


@FUZZ
@given(name=st.sampled_from(NAMES), content=st.binary(max_size=300))
def test_random_bytes(name: str, content: bytes) -> None:
    folder, path = _in_tmp(name, content)
    with folder:
        _events_or_error(path)


ID = st.sampled_from(["1", "2", " 3", "\ufeff4", "007", "x", "", '"q"', "a,b", "NA"]) | st.text(max_size=4)
TIME = (
    st.sampled_from(["1600000000", "1600000000000", "5", "inf", "-inf", "nan", "1e400", "", " 7"])
    | st.sampled_from(["2020-01-01", "2020-01-01T00:00:00Z", "2020-01-01 00:00:00 UTC", "0x10"])
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.text(max_size=6)
)
ROW = st.tuples(ID, ID, TIME).map(",".join)


@FUZZ
@given(
    bom=st.booleans(),
    rows=st.lists(ROW, min_size=1, max_size=8),
    packer=st.sampled_from([None, gzip, bz2, lzma]),
    cut=st.floats(0.0, 1.0),
    split=st.sampled_from([None, 60.0]),
)
def test_random_csv_text(bom: bool, rows: list[str], packer, cut: float, split: float | None) -> None:
    text = ("\ufeff" if bom else "") + HEADER + "\n" + "\n".join(rows) + "\n"
    content = text.encode("utf-8")
    name = "ev.csv"
    if packer is not None:  # compressed, and cut short about half of the time
        packed = packer.compress(content)
        content = packed if cut > 0.5 else packed[: int(len(packed) * cut * 2)]
        name += {gzip: ".gz", bz2: ".bz2", lzma: ".xz"}[packer]
    folder, path = _in_tmp(name, content)
    with folder:
        _events_or_error(path, session_split_gap=split)


DTYPES = [np.float32, np.float64, np.float16, np.int64, np.uint8, np.complex64, np.bool_]
VALUES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e39, -1e39, 3.4e38, 0.0])


@FUZZ
@given(
    rows=st.integers(1, 4),
    dims=st.sampled_from([(2,), (0,), (2, 2), ()]),
    dtype=st.sampled_from(DTYPES),
    values=st.lists(VALUES, min_size=8, max_size=8),
    ids=st.lists(st.sampled_from(["a", " b", "\ufeffc", "d", "zz", "a"]), min_size=1, max_size=4),
)
def test_random_dense_arrays(rows: int, dims: tuple, dtype, values: list[float], ids: list[str]) -> None:
    shape = (rows, *dims)
    with np.errstate(all="ignore"):
        array = np.resize(np.array(values), int(np.prod(shape))).astype(dtype).reshape(shape)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.npy"
        np.save(path, array)
        (Path(folder) / "v.ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        try:
            feats = load_dense(path, ITEMS)
        except DataError as err:
            assert "\n" not in str(err) and "v.npy" in str(err)
            return
    assert isinstance(feats, DenseFeatures) and feats.values.shape[0] == len(ITEMS)
    assert bool(feats.values.isfinite().all())


@FUZZ
@given(
    prices=st.lists(VALUES | st.none(), min_size=1, max_size=5),
    brands=st.lists(st.sampled_from(["x", "1e39", None, "inf"]), min_size=5, max_size=5),
)
def test_random_property_tables(prices: list, brands: list) -> None:
    ids = ["a", "b", " c", "d", "zz"][: len(prices)]
    frame = pd.DataFrame({"item_id": ids, "price": prices, "brand": brands[: len(prices)]})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.parquet"
        frame.to_parquet(path)
        try:
            feats = load_properties(path, ITEMS, numeric=["price"], categorical=["brand"])
        except DataError as err:
            assert "\n" not in str(err) and "p.parquet" in str(err)
            return
    assert isinstance(feats, PropertyFeatures) and bool(feats.numeric.isfinite().all())


# ---- sparse .npz: in a child interpreter (`python test_fuzz_readers.py npz`) -----------------------------
INDEX = st.integers(-3, 7) | st.sampled_from([10**8, 2**31 - 1, -(2**31)])


@st.composite
def npz_arrays(draw) -> tuple[dict[str, np.ndarray], int]:
    """(arrays as save_npz writes them, number of ids): mostly valid, often subtly not."""
    n_rows, n_cols, nnz = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 6))
    fmt = draw(st.sampled_from(["csr"] * 4 + ["csc", "coo", "bsr"]))
    shape = draw(st.sampled_from([[n_rows, n_cols]] * 6 + [[n_rows, -1], [n_rows], [n_rows, n_cols, 1]]))
    major = n_rows if fmt != "csc" else n_cols
    cuts = sorted(draw(st.lists(st.integers(0, nnz), min_size=max(major - 1, 0), max_size=max(major - 1, 0))))
    good_indptr = st.just([0, *cuts, nnz][: major + 1])
    indptr = draw(st.one_of(*[good_indptr] * 4, st.lists(st.integers(-1, 8), max_size=6)))
    valid = st.integers(0, max(n_cols - 1, 0))
    index = st.one_of(valid, valid, valid, INDEX)
    index_dtype = draw(st.sampled_from([np.int32, np.int64] * 3 + [np.uint16, np.int8, np.float64]))
    value_dtype = draw(st.sampled_from([np.float32, np.float64] * 4 + DTYPES))

    def ints(size: int, index=index) -> np.ndarray:
        return np.array(draw(st.lists(index, min_size=size, max_size=size)), np.int64).astype(index_dtype)

    values = st.floats(-1e6, 1e6) | VALUES
    with np.errstate(all="ignore"):
        data = np.array(draw(st.lists(values, min_size=nnz, max_size=nnz)), np.float64).astype(value_dtype)
    size = nnz + draw(st.sampled_from([0] * 8 + [-1, 1]))
    arrays = dict(format=np.array(fmt.encode()), shape=np.array(shape), data=data)
    if fmt == "coo":
        rows = st.one_of(*[st.integers(0, max(n_rows - 1, 0))] * 3, INDEX)
        arrays.update(row=ints(max(size, 0), rows), col=ints(nnz))
    else:
        arrays.update(indices=ints(max(size, 0)), indptr=np.array(indptr, np.int64).astype(index_dtype))
    return arrays, draw(st.sampled_from([n_rows] * 5 + [0, 4]))


@settings(FUZZ, max_examples=3 * EXAMPLES)  # cheap, and only here can the shapes that crashed scipy come up
@given(case=npz_arrays())
def fuzz_npz(case: tuple[dict[str, np.ndarray], int]) -> None:
    arrays, n_ids = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.npz"
        np.savez(path, **arrays)
        (Path(folder) / "t.ids.txt").write_text("".join(f"{i}\n" for i in ITEMS[:n_ids]))
        try:
            feats = load_sparse(path, ITEMS)
        except DataError as err:
            assert "\n" not in str(err) and "t.npz" in str(err)
            return
    assert isinstance(feats, SparseFeatures) and feats.csr.shape[0] == len(ITEMS)
    feats.csr.check_format(full_check=True)
    assert feats.csr.dtype == np.float32 and np.isfinite(feats.csr.data).all()


@FUZZ
@given(content=st.binary(max_size=400))
def fuzz_npz_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.npz"
        path.write_bytes(b"PK\x03\x04" + content if content[:1] == b"\x00" else content)
        (Path(folder) / "t.ids.txt").write_text("a\nb\n")
        try:
            load_sparse(path, ITEMS)
        except DataError as err:
            assert "\n" not in str(err)


def test_random_sparse_npz_never_crashes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, __file__, "npz"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"exit {done.returncode} (a signal if < 0)\n{done.stderr[-4000:]}"
    assert "npz fuzz ok" in done.stdout


if __name__ == "__main__" and sys.argv[1:] == ["npz"]:
    fuzz_npz()
    fuzz_npz_bytes()
    print("npz fuzz ok")
