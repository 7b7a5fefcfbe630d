"""Prepared data folder: atomic write, load round trip, CSR splits, and validation errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sessrec.data.prepared import SPLIT_NAMES, PreparedData, Split, write_prepared
from sessrec.errors import DataError


def frame(session: list[int], item: list[int], time: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"session": np.array(session, np.int64), "item": np.array(item, np.int32), "time": np.array(time)}
    )


def splits() -> dict[str, pd.DataFrame]:
    train = frame([0, 0, 1, 1, 1], [0, 1, 2, 0, 1], [1, 2, 3, 4, 5])
    return {
        "train_full": train,
        "train": train,
        "valid": frame([], [], []),
        "test": frame([0, 0], [2, 0], [9, 10]),
    }


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return write_prepared(
        tmp_path / "prep", splits(), np.array(["10", "20", "x"], dtype=object), {"source": "s"}
    )


def test_round_trip(prepared: Path) -> None:
    data = PreparedData.load(prepared)
    assert data.item_ids.tolist() == ["10", "20", "x"] and data.n_items == 3
    train = data.split("train_full")
    assert isinstance(train.items, np.memmap) and not train.items.flags.writeable  # arrays/, mapped
    assert (
        train.items.dtype == np.int32 and train.offsets.dtype == np.int64 and train.times.dtype == np.float64
    )
    assert train.items.tolist() == [0, 1, 2, 0, 1]
    assert train.offsets.tolist() == [0, 2, 5]
    assert (train.n_events, train.n_sessions) == (5, 2)
    assert data.counts("train_full").tolist() == [2, 2, 1]
    assert data.split("train_full") is train  # cached
    valid = data.split("valid")
    assert (valid.n_events, valid.n_sessions) == (0, 0) and valid.offsets.tolist() == [0]
    assert data.meta["source"] == "s"
    assert data.meta["splits"]["test"] == {"events": 2, "sessions": 1, "items": 2}
    items = pq.read_table(prepared / "items.parquet")
    assert items.schema.field("idx").type == pa.int32() and items.schema.field("item_id").type == pa.string()
    schema = pq.read_schema(prepared / "test.parquet")
    assert [schema.field(c).type for c in ("session", "item", "time")] == [
        pa.int64(),
        pa.int32(),
        pa.float64(),
    ]


def test_split_counts() -> None:
    s = Split.from_sessions(np.array([0, 1, 1]), np.array([3, 3, 0]), np.array([0.0, 1.0, 2.0]))
    assert s.offsets.tolist() == [0, 1, 3]
    assert s.counts(5).tolist() == [1, 0, 0, 2, 0]


def test_write_is_atomic(tmp_path: Path) -> None:
    bad = splits()
    bad["test"] = pd.DataFrame({"session": [0], "item": [0]})  # no time column: fails mid-way
    with pytest.raises(KeyError):
        write_prepared(tmp_path / "prep", bad, np.array(["a", "b", "c"]), {})
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(prepared: Path) -> None:
    with pytest.raises(DataError, match="output exists"):
        write_prepared(prepared, splits(), np.array(["a", "b", "c"]), {})
    write_prepared(prepared, splits(), np.array(["a", "b", "c"]), {}, overwrite=True)
    assert PreparedData.load(prepared).item_ids.tolist() == ["a", "b", "c"]
    assert sorted(p.name for p in prepared.parent.iterdir()) == ["prep"]


def test_missing_folder_and_file(prepared: Path) -> None:
    with pytest.raises(DataError, match="prepared data folder not found"):
        PreparedData.load(prepared.parent / "nope")
    (prepared / "valid.parquet").unlink()
    with pytest.raises(DataError, match=r"valid\.parquet: file missing"):
        PreparedData.load(prepared)


def test_wrong_columns(prepared: Path) -> None:
    pq.write_table(pa.table({"session": [0], "itm": [0], "time": [0.0]}), prepared / "test.parquet")
    data = PreparedData.load(prepared)
    with pytest.raises(
        DataError, match=r"test\.parquet: column 'item' not found \(columns: session, itm, time\)"
    ):
        data.split("test")
    pq.write_table(pa.table({"item_id": ["a"], "index": [0]}), prepared / "items.parquet")
    with pytest.raises(DataError, match=r"items\.parquet: column 'idx' not found"):
        PreparedData.load(prepared)


def test_item_out_of_range_and_bad_grouping(prepared: Path) -> None:
    pq.write_table(
        pa.table({"session": [0, 0], "item": [1, 7], "time": [0.0, 1.0]}), prepared / "test.parquet"
    )
    with pytest.raises(DataError, match=r"test\.parquet: column 'item' has index 7 out of range 0\.\.2"):
        PreparedData.load(prepared).split("test")
    pq.write_table(
        pa.table({"session": [0, 2], "item": [1, 1], "time": [0.0, 1.0]}), prepared / "test.parquet"
    )
    with pytest.raises(DataError, match="grouped and numbered"):
        PreparedData.load(prepared).split("test")


def test_corrupt_meta_and_unknown_split(prepared: Path) -> None:
    data = PreparedData.load(prepared)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        data.split("dev")
    (prepared / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match=r"meta\.json: cannot read"):
        PreparedData.load(prepared)
    assert set(SPLIT_NAMES) == {"train_full", "train", "valid", "test"}


def test_mapped_arrays_equal_the_parquet_split(prepared: Path) -> None:
    from sessrec.data.prepared import _load_split

    data = PreparedData.load(prepared)
    for name in SPLIT_NAMES:
        mapped, read = data.split(name), _load_split(prepared / f"{name}.parquet", data.n_items)
        assert isinstance(mapped.offsets, np.memmap), name
        for a, b in zip((mapped.items, mapped.offsets, mapped.times), (read.items, read.offsets, read.times)):
            assert np.array_equal(a, b), name


def test_an_edited_split_is_read_from_parquet(prepared: Path, caplog: pytest.LogCaptureFixture) -> None:
    pq.write_table(pa.table({"session": [0, 0, 0], "item": [1, 2, 0], "time": [0.0, 1.0, 2.0]}),
                   prepared / "test.parquet")  # same folder, the arrays now stale
    test = PreparedData.load(prepared).split("test")
    assert test.items.tolist() == [1, 2, 0] and not isinstance(test.items, np.memmap)
    assert "test.parquet changed since its memory-mapped copy" in caplog.text


def test_bad_arrays_are_one_line_errors(prepared: Path) -> None:
    np.save(prepared / "arrays" / "test.items.npy", np.array([2, 7], np.int32))
    with pytest.raises(DataError, match=r"arrays/test\.\*\.npy: an item index is out of range 0\.\.2"):
        PreparedData.load(prepared).split("test")
    np.save(prepared / "arrays" / "test.items.npy", np.array([2, 0, 1], np.int32))
    with pytest.raises(DataError, match="offsets do not cover the 3 events"):
        PreparedData.load(prepared).split("test")
    np.save(prepared / "arrays" / "test.items.npy", np.array([2, 0], np.int64))
    with pytest.raises(DataError, match="items must be a 1-D int32 array"):
        PreparedData.load(prepared).split("test")
