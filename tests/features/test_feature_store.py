"""Feature store: round trips, alignment to the catalogue, the generator's layout, bad input."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sessrec.data.synthetic import SyntheticConfig, generate, write
from sessrec.errors import DataError
from sessrec.features import (
    Catalogue,
    ids_path,
    load_dense,
    load_properties,
    load_sparse,
    load_text,
    write_dense,
    write_properties,
    write_sparse,
)

ITEMS = np.array(["a", "b", "c", "d", "e"], dtype=object)
FILE_IDS = ["d", "zz", "a", "c", "b"]  # shuffled, "e" missing, "zz" not in the catalogue


def test_dense_round_trip_aligns_rows_and_masks_missing(tmp_path: Path, caplog) -> None:
    values = np.arange(10, dtype=np.float32).reshape(5, 2)  # row r = [2r, 2r+1]
    path = write_dense(tmp_path / "image.npy", values, FILE_IDS)
    assert ids_path(path).read_text().splitlines() == FILE_IDS
    with caplog.at_level(logging.INFO, logger="sessrec.features.store"):
        feats = load_dense(path, ITEMS, dim=2)
    assert "image.npy: 4/5 items (80.0%)" in caplog.text
    expected = torch.tensor([[4, 5], [8, 9], [6, 7], [0, 1], [0, 0]], dtype=torch.float32)
    assert torch.equal(feats.values, expected)
    assert feats.mask.tolist() == [True, True, True, True, False]
    assert feats.values.dtype == torch.float32 and feats.dim == 2


def test_sparse_round_trip_stays_sparse(tmp_path: Path) -> None:
    matrix = sp.random(5, 1000, density=0.01, format="lil", dtype=np.float32, random_state=0)
    matrix[0, 7] = 2.0  # row 0 belongs to "d"
    matrix = matrix.tocsr()
    path = write_sparse(tmp_path / "text.npz", matrix, FILE_IDS)
    feats = load_sparse(path, ITEMS)
    assert sp.issparse(feats.csr) and feats.csr.shape == (5, 1000)
    assert feats.csr[3, 7] == 2.0
    order = [2, 4, 3, 0]  # file rows of a, b, c, d
    assert (feats.csr[:4] != matrix[order]).nnz == 0
    assert feats.csr[4].nnz == 0 and feats.mask.tolist() == [True] * 4 + [False]


def test_properties_codes_numeric_and_missing(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "item_id": FILE_IDS,
            "price": [4.0, 1.0, 1.5, None, 2.5],
            "brand": ["y", "x", "x", None, "z"],
        }
    )
    path = write_properties(tmp_path / "props.parquet", frame)
    feats = load_properties(path, ITEMS, numeric=["price"], categorical=["brand"])
    assert feats.numeric[:, 0].tolist() == [1.5, 2.5, 0.0, 4.0, 0.0]
    assert feats.numeric_present[:, 0].tolist() == [True, True, False, True, False]
    # vocabulary from catalogue items only ("zz" -> "x" at file row 1 is dropped): x, y, z -> 1, 2, 3
    assert feats.vocabularies == (("x", "y", "z"),) and feats.cardinalities == (4,)
    assert feats.categorical[:, 0].tolist() == [1, 3, 0, 2, 0]
    assert feats.mask.tolist() == [True, True, True, True, False]


def test_integer_ids_match_string_catalogue(tmp_path: Path) -> None:
    frame = pd.DataFrame({"item_id": [3, 1, 2], "text": ["c c", "a a", None]})
    frame.to_parquet(tmp_path / "items.parquet", index=False)
    feats = load_text(tmp_path / "items.parquet", np.array(["1", "2", "3", "4"], dtype=object))
    assert feats.texts == ["a a", "", "c c", ""]
    assert feats.mask.tolist() == [True, True, True, False]


def test_generator_layout_takes_ids_from_items_parquet(tmp_path: Path) -> None:
    cfg = SyntheticConfig(n_items=60, n_topics=3, n_sessions=50, vocab_size=40, image_dim=8, n_categories=3)
    data = generate(cfg)
    raw = write(data, tmp_path / "raw")
    ids = np.array([str(i) for i in np.random.default_rng(0).permutation(np.arange(1, 61))], dtype=object)
    dense = load_dense(raw / "image.npy", ids, dim=8)
    rows = ids.astype(np.int64) - 1
    assert np.array_equal(dense.values.numpy(), data.image[rows])
    sparse = load_sparse(raw / "text.npz", ids)
    assert abs(sparse.csr - data.text[rows]).max() == 0
    props = load_properties(raw / "items.parquet", ids, numeric=["price"], categorical=["category", "brand"])
    assert np.allclose(props.numeric[:, 0].numpy(), data.items["price"].to_numpy()[rows])


def _raw_dense(path: Path, values: np.ndarray, ids: list[str]) -> Path:
    np.save(path, values)
    ids_path(path).write_text("".join(f"{i}\n" for i in ids))
    return path


@pytest.mark.parametrize(
    "values, ids, dim, message",
    [
        (np.array([[np.nan, 1], [np.inf, 0], [1, 1]], np.float32), ["a", "b", "c"], None, "2 rows hold NaN"),
        (np.ones((3, 2), np.float32), ["a", "b"], None, "3 rows but image.ids.txt lists 2"),
        (np.ones((3, 2), np.float32), ["a", "b", "a"], None, "1 duplicate item ids (first: 'a')"),
        (np.ones((3, 2), np.float32), ["a", "b", "c"], 4, "dimension 2 but 4 expected"),
        (np.ones((2, 2), np.float32), ["x", "y"], None, "covers none of the 5 catalogue items"),
    ],
)
def test_dense_bad_input_names_the_file(tmp_path: Path, values, ids, dim, message) -> None:
    path = _raw_dense(tmp_path / "image.npy", values, ids)
    with pytest.raises(DataError, match="image.npy") as info:
        load_dense(path, ITEMS, dim=dim)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_dense_without_ids_file_or_items_parquet(tmp_path: Path) -> None:
    np.save(tmp_path / "image.npy", np.ones((2, 2), np.float32))
    with pytest.raises(DataError, match=r"image.npy: no ids file \(image.ids.txt\)"):
        load_dense(tmp_path / "image.npy", ITEMS)
    with pytest.raises(DataError, match="other.npy: feature file not found"):
        load_dense(tmp_path / "other.npy", ITEMS)


def test_sparse_and_properties_bad_input(tmp_path: Path) -> None:
    matrix = sp.csr_matrix(np.array([[0, np.nan], [1, 0]], dtype=np.float32))
    sp.save_npz(tmp_path / "text.npz", matrix)
    ids_path(tmp_path / "text.npz").write_text("a\nb\n")
    with pytest.raises(DataError, match="text.npz: 1 rows hold NaN or inf"):
        load_sparse(tmp_path / "text.npz", ITEMS)
    with pytest.raises(DataError, match="text.npz: dimension 2 but 3 expected"):
        load_sparse(tmp_path / "text.npz", ITEMS, dim=3)
    with pytest.raises(DataError, match="bad.npz: 1 rows hold NaN"):
        write_sparse(tmp_path / "bad.npz", matrix, ["a", "b"])
    assert not (tmp_path / "bad.npz").exists()
    pd.DataFrame({"item_id": ["a", "b"], "price": [1.0, np.inf]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match="p.parquet: 1 rows hold inf"):
        load_properties(tmp_path / "p.parquet", ITEMS, numeric=["price"])
    with pytest.raises(DataError, match="p.parquet: column 'brand' not found"):
        load_properties(tmp_path / "p.parquet", ITEMS, categorical=["brand"])
    pd.DataFrame({"item_id": ["a", "a"], "brand": ["x", "y"]}).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match="d.parquet: 1 duplicate item ids"):
        load_properties(tmp_path / "d.parquet", ITEMS, categorical=["brand"])


def test_catalogue_resolves_against_data_dir_then_cwd(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.npy").touch()
    (tmp_path / "g.npy").touch()
    monkeypatch.chdir(tmp_path)
    cat = Catalogue(ITEMS, tmp_path / "data")
    assert cat.resolve("f.npy") == tmp_path / "data" / "f.npy"
    assert cat.resolve("g.npy") == tmp_path / "g.npy"
    assert cat.n_items == 5
    with pytest.raises(DataError, match="h.npy: feature file not found"):
        cat.resolve("h.npy")


def test_catalogue_from_prepared(tiny_prepared: Path) -> None:
    cat = Catalogue.from_prepared(tiny_prepared)
    assert cat.n_items == len(cat.counts) and cat.counts.sum() > 0
    feats = load_dense(cat.resolve("../raw/image.npy"), cat.item_ids)
    assert bool(feats.mask.all())


# ---- validation at load: malformed sparse arrays, dtypes, float32 range, id normalisation, coverage ----
def _raw_npz(path: Path, ids: list[str], **arrays) -> Path:
    """An .npz written array by array (as scipy.sparse.save_npz would), bypassing every check."""
    np.savez(path, **arrays)
    ids_path(path).write_text("".join(f"{i}\n" for i in ids))
    return path


def _csr_arrays(**changes) -> dict:
    """A valid 2 x 3 CSR [[1, 0, 2], [0, 3, 0]] as save_npz arrays, with `changes` applied."""
    arrays = dict(
        format=np.array(b"csr"),
        shape=np.array([2, 3]),
        data=np.array([1.0, 2.0, 3.0], np.float32),
        indices=np.array([0, 2, 1], np.int32),
        indptr=np.array([0, 2, 3], np.int32),
    )
    return {**arrays, **changes}


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(indices=np.array([0, 99_999_999, 1], np.int32)), "'indices' holds 0..99999999, outside 0..2"),
        (dict(indices=np.array([0, -1, 1], np.int32)), "'indices' holds -1..1, outside 0..2"),
        (dict(indptr=np.array([0, 3, 2], np.int32)), "'indptr' must rise from 0 to 3"),
        (dict(indptr=np.array([0, 3], np.int32)), "'indptr' must rise from 0 to 3 in 3 entries"),
        (dict(indptr=np.array([1, 2, 3], np.int32)), "'indptr' must rise"),
        (dict(indices=np.array([0.0, 2.0, 1.0])), "'indices' must be a 1-d integer array"),
        (dict(indices=np.array([0, 2], np.int32), indptr=np.array([0, 2, 2])), "'indices' has 2 entries"),
        (dict(data=np.array([1, 2, 3], complex)), "expected real numeric values, found complex128"),
        (dict(data=np.array([True, False, True])), "expected real numeric values, found bool"),
        (dict(data=np.array(["1", "2", "3"])), "expected real numeric values"),
        (dict(shape=np.array([2, -3])), "'shape' must be two non-negative integers"),
        (dict(shape=np.array([2.0, 3.0])), "'shape' must be two non-negative integers"),
        (dict(format=np.array(b"dia")), "format 'dia'"),
        (dict(data=np.array([1e39, 2.0, 3.0])), "1 rows hold NaN or inf values (or values beyond float32"),
    ],
)
def test_sparse_malformed_arrays_are_refused(tmp_path: Path, changes: dict, message: str) -> None:
    path = _raw_npz(tmp_path / "text.npz", ["a", "b"], **_csr_arrays(**changes))
    with pytest.raises(DataError) as info:
        load_sparse(path, ITEMS)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_sparse_archive_without_arrays_or_not_an_archive(tmp_path: Path) -> None:
    arrays = _csr_arrays()
    del arrays["indptr"]
    path = _raw_npz(tmp_path / "text.npz", ["a", "b"], **arrays)
    with pytest.raises(DataError, match=r"text\.npz: cannot read as a scipy sparse \.npz \(no 'indptr'"):
        load_sparse(path, ITEMS)
    with open(path, "wb") as fh:
        np.save(fh, np.ones((2, 3)))
    with pytest.raises(DataError, match="a single array, not an archive"):
        load_sparse(path, ITEMS)
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(DataError, match=r"text\.npz: cannot read"):
        load_sparse(path, ITEMS)


@pytest.mark.parametrize("fmt", ["csc", "coo"])
def test_sparse_csc_and_coo_are_read_as_csr(tmp_path: Path, fmt: str) -> None:
    dense = np.array([[1, 0, 2], [0, 3, 0]], np.float32)
    sp.save_npz(tmp_path / "text.npz", sp.csc_matrix(dense) if fmt == "csc" else sp.coo_matrix(dense))
    ids_path(tmp_path / "text.npz").write_text("c\na\n")
    feats = load_sparse(tmp_path / "text.npz", ITEMS)
    assert feats.csr.format == "csr" and feats.csr.dtype == np.float32
    assert feats.csr.toarray().tolist() == [[0, 3, 0], [0, 0, 0], [1, 0, 2], [0, 0, 0], [0, 0, 0]]


_CRASH_SCRIPT = """
import sys
import numpy as np
from sessrec.errors import SessrecError
from sessrec.features.store import load_sparse
try:
    load_sparse(sys.argv[1], np.array(["a", "b", "c", "d", "e"], dtype=object))
except SessrecError as err:
    print(f"sessrec: error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def test_out_of_range_sparse_index_exits_2_not_a_signal(tmp_path: Path) -> None:
    """Before validation, an index of 10**8 in a 3-column CSR killed the interpreter (free()/SIGSEGV)."""
    arrays = _csr_arrays(indices=np.array([0, 10**8, 1], np.int32))
    path = _raw_npz(tmp_path / "text.npz", ["a", "b"], **arrays)
    done = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # < 0 would be a signal
    why = "cannot read as a scipy sparse .npz ('indices' holds 0..100000000, outside 0..2)"
    assert done.stderr.strip().splitlines() == [f"sessrec: error: {path}: {why}"]


@pytest.mark.parametrize(
    "values, message",
    [
        (np.array([[1e39, 0], [1, 1]]), "1 rows hold NaN or inf values (or values beyond float32's range)"),
        (np.ones((2, 2), complex), "expected real numeric values, found complex128"),
        (np.ones((2, 2), bool), "expected real numeric values, found bool"),
        (np.ones((2, 2, 2), np.float32), "expected a 2-d (rows, D) array, found shape (2, 2, 2)"),
        (np.ones((2, 0), np.float32), "the vectors have dimension 0"),
    ],
)
def test_dense_dtype_shape_and_float32_range(tmp_path: Path, values: np.ndarray, message: str) -> None:
    path = _raw_dense(tmp_path / "image.npy", values, ["a", "b"])
    with pytest.raises(DataError) as info:
        load_dense(path, ITEMS)
    assert str(info.value) == f"{path}: {message}"


def test_dense_integers_are_cast_to_float32(tmp_path: Path) -> None:
    path = _raw_dense(tmp_path / "image.npy", np.array([[1, 2], [3, 4]], np.int64), ["b", "a"])
    feats = load_dense(path, ITEMS)
    assert feats.values.dtype == torch.float32 and feats.values[:2].tolist() == [[3, 4], [1, 2]]


def test_property_beyond_float32_is_refused_categories_are_fine(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"item_id": ["a", "b", "c"], "price": [1.0, 1e39, None], "brand": ["x", "1e39", None]}
    )
    frame.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet: 1 rows hold values beyond float32's range \(e\.g\."):
        load_properties(tmp_path / "p.parquet", ITEMS, numeric=["price"])
    feats = load_properties(tmp_path / "p.parquet", ITEMS, categorical=["brand"])
    assert feats.vocabularies == (("1e39", "x"),) and feats.categorical[:, 0].tolist() == [2, 1, 0, 0, 0]
    pd.DataFrame({"item_id": ["a", None], "price": [1.0, 2.0]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n\.parquet: 1 rows without an item_id"):
        load_properties(tmp_path / "n.parquet", ITEMS, numeric=["price"])


def test_ids_with_bom_or_spaces_are_normalised_with_a_warning(tmp_path: Path, caplog) -> None:
    path = _raw_dense(tmp_path / "image.npy", np.arange(8, dtype=np.float32).reshape(4, 2), [])
    ids_path(path).write_text("\ufeffa\n b\nc \nd\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sessrec.features.store"):
        feats = load_dense(path, ITEMS)
    assert feats.mask.tolist() == [True, True, True, True, False]
    assert feats.values[:4, 0].tolist() == [0, 2, 4, 6]
    assert "3 item ids had a byte-order mark or surrounding spaces" in caplog.text
    ids_path(path).write_text("a\n a\nc\nd\n")
    with pytest.raises(DataError, match=r"image\.npy: 1 duplicate item ids \(first: 'a'\)"):
        load_dense(path, ITEMS)


def test_low_coverage_warns_with_examples(tmp_path: Path, caplog) -> None:
    path = _raw_dense(tmp_path / "image.npy", np.ones((2, 2), np.float32), ["e", "zz"])
    with caplog.at_level(logging.INFO, logger="sessrec.features.store"):
        load_dense(path, ITEMS)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "covers only 1/5 catalogue items (20.0%)" in warnings[0].getMessage()
    assert "'a', 'b', 'c'" in warnings[0].getMessage()
    caplog.clear()
    path = _raw_dense(tmp_path / "image.npy", np.ones((3, 2), np.float32), ["a", "b", "c"])
    with caplog.at_level(logging.INFO, logger="sessrec.features.store"):
        load_dense(path, ITEMS)
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # 60% >= MIN_COVERAGE


def test_ids_file_not_utf8(tmp_path: Path) -> None:
    path = _raw_dense(tmp_path / "image.npy", np.ones((2, 2), np.float32), [])
    ids_path(path).write_bytes(b"a\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"image\.ids\.txt: cannot read as UTF-8 text"):
        load_dense(path, ITEMS)
