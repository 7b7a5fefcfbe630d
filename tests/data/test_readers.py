"""Readers: every preset on a tiny file of its layout, generic options, and one-line DataErrors."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sessrec.data.readers import PRESETS, read_events, read_preset, sessionize, split_sessions
from sessrec.errors import ConfigError, DataError

SHARED = Path(__file__).parents[2].parent / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_gru4rec_tsv(tmp_path: Path) -> None:
    f = write(tmp_path / "ev.tsv", "SessionId\tItemId\tTime\n1\t10\t5\n1\t11\t6.5\n2\t10\t7\n")
    df = read_preset("gru4rec", f)
    assert list(df.columns) == ["session", "item", "time"]
    assert df["session"].dtype == np.int64 and df["time"].dtype == np.float64
    assert df["item"].tolist() == ["10", "11", "10"]
    assert df["time"].tolist() == [5.0, 6.5, 7.0]


def test_diginetica_time_is_date_plus_timeframe(tmp_path: Path) -> None:
    f = write(
        tmp_path / "views.csv",
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "1;NA;81766;526309;2016-05-09\n1;NA;31331;1031018;2016-05-09\n",
    )
    df = read_preset("diginetica", f)
    day = 1462752000.0  # 2016-05-09T00:00Z
    assert df["time"].tolist() == pytest.approx([day + 526.309, day + 1031.018])
    assert df["item"].tolist() == ["81766", "31331"]
    assert df["session"].tolist() == [1, 1]


def test_yoochoose_no_header_iso_z(tmp_path: Path) -> None:
    f = write(
        tmp_path / "clicks.dat",
        "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,S\n",
    )
    df = read_preset("yoochoose", f)
    assert df["time"].tolist() == pytest.approx([1396867869.277, 1396868049.868])
    assert df["item"].tolist() == ["214536502", "214536500"]


def test_retailrocket_views_only_and_gap(tmp_path: Path) -> None:
    rows = [
        "timestamp,visitorid,event,itemid,transactionid",
        "1000000,7,view,1,",
        "1060000,7,addtocart,1,",  # dropped: not a view
        "1100000,7,view,2,",  # 100 s later: same session
        "3000000,7,view,3,",  # 1900 s later: new session
        "1050000,8,view,1,",
    ]
    f = write(tmp_path / "events.csv", "\n".join(rows) + "\n")
    df = read_preset("retailrocket", f)
    assert df["item"].tolist() == ["1", "2", "3", "1"]
    assert df["time"].tolist() == [1000.0, 1100.0, 3000.0, 1050.0]
    s = df["session"].tolist()
    assert s[0] == s[1] and len({s[0], s[2], s[3]}) == 3
    assert len(read_preset("retailrocket", f, keep=None)) == 5


def test_movielens_sessions_by_30_minute_gap(tmp_path: Path) -> None:
    rows = [
        "userId,movieId,rating,timestamp",
        "1,10,4.0,1000",
        "1,11,3.0,2800",
        "1,12,3.0,4601",
        "2,10,5.0,1000",
    ]
    df = read_preset("movielens", write(tmp_path / "ratings.csv", "\n".join(rows) + "\n"))
    # 1000 -> 2800 is exactly 1800 s (same session); 2800 -> 4601 is 1801 s (new session)
    assert df["session"].tolist() == [0, 0, 1, 2]
    df = read_preset("movielens", tmp_path / "ratings.csv", session_gap=10_000)
    assert df["session"].tolist() == [0, 0, 0, 1]


def test_rees46_utc_times_views_and_missing_sessions(tmp_path: Path) -> None:
    head = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
    rows = [
        head,
        "2019-10-01 00:00:00 UTC,view,44600062,1,,shiseido,35.79,5,aa-1",
        "2019-10-01 00:00:05 UTC,cart,3900821,1,,aqua,33.20,5,aa-1",
        "2019-10-01 00:01:00 UTC,view,3900821,1,,aqua,33.20,5,aa-1",
        "2019-10-01 00:02:00 UTC,view,17200506,1,,,10.0,6,",
    ]
    df = read_preset("rees46", write(tmp_path / "2019-Oct.csv", "\n".join(rows) + "\n"))
    assert df["session"].tolist() == ["aa-1", "aa-1"]
    assert df["time"].tolist() == [1569888000.0, 1569888060.0]


def test_generic_parquet_ms_and_user_sessions(tmp_path: Path) -> None:
    f = tmp_path / "log.parquet"
    pd.DataFrame({"u": [1, 1, 2], "it": [5, 6, 5], "ts": [1000, 2000, 3000]}).to_parquet(f)
    df = read_events(f, session_col=None, user_col="u", item_col="it", time_col="ts", time_unit="ms")
    assert df["time"].tolist() == [1.0, 2.0, 3.0]
    assert df["item"].tolist() == ["5", "6", "5"]
    assert df["session"].tolist() == [0, 0, 1]


def test_generic_iso_datetimes_and_string_sessions(tmp_path: Path) -> None:
    f = write(
        tmp_path / "log.txt",
        "s|i|t\nx1|a|2020-01-01T00:00:10\nx1|b|2020-01-01 00:00:20+01:00\n007|a|2020-01-01\n",
    )
    df = read_events(f, sep="|", session_col="s", item_col="i", time_col="t")
    assert df["time"].tolist() == [1577836810.0, 1577836820.0 - 3600, 1577836800.0]
    assert df["session"].tolist() == ["x1", "x1", "007"]  # not all integers: kept as strings


def test_session_keys_keep_leading_zeros(tmp_path: Path) -> None:
    f = write(tmp_path / "log.csv", "SessionId,ItemId,Time\n007,a,1\n7,b,2\n")
    assert read_events(f)["session"].tolist() == ["007", "7"]


def test_sessionize_keeps_positions_and_ties() -> None:
    users = pd.Series([2, 1, 1, 2])
    out = sessionize(users, np.array([0.0, 50.0, 10.0, 5000.0]), gap=100.0)
    assert out.tolist() == [1, 0, 0, 2]
    with pytest.raises(ConfigError, match="session_gap"):
        sessionize(users, np.zeros(4), gap=0)


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (None, "absent.csv", "file not found"),
        ("", "empty.csv", "file is empty"),
        ("SessionId,ItemId,Time\n", "header.csv", "no rows"),
        (
            "SessionId,Item,Time\n1,2,3\n",
            "cols.csv",
            r"column 'ItemId' not found \(columns: SessionId, Item, Time\)",
        ),
        (
            "SessionId,ItemId,Time\n1,2,3\n1,2,abc\n",
            "num.csv",
            r"column 'Time' has 1 non-numeric time value\(s\), e.g. 'abc'",
        ),
        (
            "SessionId,ItemId,Time\n1,2,yesterday\n",
            "date.csv",
            r"column 'Time' .* unparseable time .*'yesterday'",
        ),
        ("SessionId,ItemId,Time\n1,,3\n", "nan.csv", r"column 'ItemId' has 1 missing value"),
        ("SessionId,ItemId,Time\n,1,3\n", "nans.csv", r"column 'SessionId' has 1 missing value"),
        ("SessionId,ItemId,Time\n1,2,\n", "nant.csv", r"column 'Time' has 1 missing time"),
        ("not parquet", "bad.parquet", "cannot read as parquet"),
    ],
)
def test_bad_input_is_one_line_data_error(tmp_path: Path, content: str | None, name: str, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        read_events(path, sep=",")
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_unreadable_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder"):
        read_events(tmp_path)
    f = write(tmp_path / "x.csv.gz", "not gzip at all")
    with pytest.raises(DataError, match=r"x\.csv\.gz: cannot read as csv"):
        read_events(f)


def test_unknown_preset_and_options(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", "SessionId,ItemId,Time\n1,2,3\n")
    with pytest.raises(ConfigError, match="unknown format 'nope'"):
        read_preset("nope", f)
    with pytest.raises(ConfigError, match="time_unit"):
        read_events(f, time_unit="h")


SAMPLES = {
    "diginetica": ("diginetica/sample_train-item-views.csv", 12391, 2986, 7139),
    "movielens": ("movielens-latest-small/ml-latest-small/ratings.csv", 100836, None, 9724),
    "rees46": ("rees46-multicategory-sample/2019-Oct-sample.csv", None, None, None),
}


@pytest.mark.data
@pytest.mark.parametrize("preset", sorted(SAMPLES))
def test_real_samples(preset: str) -> None:
    rel, n_events, n_sessions, n_items = SAMPLES[preset]
    if not (SHARED / rel).exists():
        pytest.skip(f"{SHARED / rel} absent (real samples live outside the repository)")
    df = read_preset(preset, SHARED / rel)
    assert preset in PRESETS and list(df.columns) == ["session", "item", "time"]
    assert df["time"].dtype == np.float64 and not df.isna().any().any()
    assert df["time"].min() > 8e8  # seconds after 1995
    if n_events is not None:
        assert len(df) == n_events and df["item"].nunique() == n_items
    if n_sessions is not None:
        assert df["session"].nunique() == n_sessions
    if preset == "movielens":
        assert 6500 < df["session"].nunique() < 7500  # ~7,100 sessions with a 30-minute gap


# ---- validation: non-finite and suspicious times, compressed files, id normalisation, session splits ----
T0 = 1_600_000_000  # 2020-09-13, seconds


@pytest.mark.parametrize(
    ("times", "match"),
    [
        ([T0, "inf"], r"column 'Time' has 1 non-finite time value\(s\), e.g. 'inf' \(data row 2\)"),
        (["-Infinity", "-inf"], r"has 2 non-finite time value\(s\), e.g. '-Infinity' \(data row 1\)"),
        ([T0, "1e400"], r"non-finite time value\(s\), e.g. '1e400' \(data row 2\)"),
        ([T0, "nan"], r"column 'Time' has 1 non-numeric time value\(s\), e.g. 'nan' \(data row 2\)"),
    ],
)
def test_non_finite_times_name_file_column_row(tmp_path: Path, times: list, match: str) -> None:
    body = "".join(f"1,{i},{t}\n" for i, t in enumerate(times))
    f = write(tmp_path / "ev.csv", "SessionId,ItemId,Time\n" + body)
    with pytest.raises(DataError, match=match) as info:
        read_events(f)
    assert str(info.value).startswith(f"{f}: ")


def test_non_finite_parquet_time_and_row_counts_filtered_rows(tmp_path: Path) -> None:
    f = tmp_path / "ev.parquet"
    pd.DataFrame({"SessionId": [1, 1], "ItemId": [1, 2], "Time": [float(T0), np.inf]}).to_parquet(f)
    with pytest.raises(DataError, match=r"ev\.parquet: column 'Time' has 1 non-finite time .*, e.g. inf"):
        read_events(f)
    rows = "SessionId,ItemId,Time,ev\n1,a,1,cart\n1,b,2,cart\n1,c,inf,view\n"
    with pytest.raises(DataError, match=r"\(data row 3\)"):  # the file's row, not the row among the kept
        read_events(write(tmp_path / "k.csv", rows), keep={"ev": ["view"]})


def test_time_unit_warnings(tmp_path: Path, caplog) -> None:
    ms = write(tmp_path / "ms.csv", f"SessionId,ItemId,Time\n1,a,{T0 * 1000}\n1,b,{T0 * 1000 + 5}\n")
    with caplog.at_level(logging.WARNING, logger="sessrec.data.readers"):
        read_events(ms)
    assert "pass --time-unit ms" in caplog.text and "ms.csv" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sessrec.data.readers"):
        assert read_events(ms, time_unit="ms")["time"].tolist() == [T0, T0 + 0.005]
    assert caplog.text == ""
    jan = write(tmp_path / "jan.csv", "SessionId,ItemId,Time\n1,a,1700000\n1,b,1700100\n")
    with caplog.at_level(logging.WARNING, logger="sessrec.data.readers"):
        read_events(jan, time_unit="ms")
    assert "falls in January 1970" in caplog.text


EVENTS = ("SessionId,ItemId,Time\n" + "".join(f"{i // 3},{i % 7},{T0 + i}\n" for i in range(3000))).encode()


@pytest.mark.parametrize("ext", ["gz", "bz2", "xz"])
@pytest.mark.parametrize("keep", [0.5, 0.99, 12])
def test_truncated_compressed_input(tmp_path: Path, ext: str, keep: float) -> None:
    import bz2
    import gzip
    import lzma

    packed = {"gz": gzip, "bz2": bz2, "xz": lzma}[ext].compress(EVENTS)
    f = tmp_path / f"ev.csv.{ext}"
    f.write_bytes(packed[: int(len(packed) * keep) if keep < 1 else keep])
    with pytest.raises(DataError, match=rf"ev\.csv\.{ext}: cannot read as csv \(truncated or corrupt"):
        read_events(f)
    f.write_bytes(packed)
    assert len(read_events(f)) == 3000


def test_corrupt_zip_and_zst_without_zstandard(tmp_path: Path) -> None:
    f = tmp_path / "ev.csv.zip"
    f.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match=r"ev\.csv\.zip: cannot read as csv"):
        read_events(f)
    if importlib.util.find_spec("zstandard") is not None:
        pytest.skip("zstandard is installed")
    f = write(tmp_path / "ev.csv.zst", "anything")
    with pytest.raises(DataError, match=r"ev\.csv\.zst: reading \.zst files needs the 'zstandard' package"):
        read_events(f)


def test_bom_and_spaces_around_ids_and_header(tmp_path: Path, caplog) -> None:
    text = "\ufeffSessionId, ItemId ,Time\n\ufeff1, a ,5\n1,b\t,6\n 2 ,a,7\n"
    f = tmp_path / "ev.csv"
    f.write_text(text, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sessrec.data.readers"):
        df = read_events(f)
    assert df["session"].tolist() == [1, 1, 2] and df["session"].dtype == np.int64
    assert df["item"].tolist() == ["a", "b", "a"]
    assert "from 2 ids in column 'SessionId'" in caplog.text
    assert "from 2 ids in column 'ItemId'" in caplog.text
    with pytest.raises(DataError, match=r"column 'ItemId' has 1 missing value\(s\) \(first at data row 2\)"):
        read_events(write(tmp_path / "blank.csv", "SessionId,ItemId,Time\n1,a,5\n1,  ,6\n"))


def test_session_split_gap(tmp_path: Path, caplog) -> None:
    day = 86400
    rows = [("x", "a", 0), ("y", "b", 5), ("x", "b", 60), ("x", "c", 3 * day), ("x", "a", 3 * day + 1)]
    body = "".join(f"{s},{i},{T0 + t}\n" for s, i, t in rows)
    f = write(tmp_path / "ev.csv", "SessionId,ItemId,Time\n" + body)
    with caplog.at_level(logging.WARNING, logger="sessrec.data.readers"):
        kept = read_events(f)
    assert kept["session"].tolist() == ["x", "y", "x", "x", "x"]  # default: the reference's rule
    assert "1 of 2 session ids span more than 86400 s (e.g. 'x': 3.0 days)" in caplog.text
    assert "--max-session-gap" in caplog.text
    split = read_events(f, session_split_gap=day)
    assert split["session"].tolist() == [0, 2, 0, 1, 1]  # numbered by (id, time): x, x after 3 days, y
    assert split["item"].tolist() == kept["item"].tolist()
    assert read_events(f, session_split_gap=10 * day)["session"].tolist() == [0, 1, 0, 0, 0]
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="session_split_gap: must be a finite number of seconds > 0"):
            read_events(f, session_split_gap=bad)


def test_split_sessions_ties_keep_file_order_and_int_keys_sort_numerically() -> None:
    keys = np.array([10, 9, 10, 10], dtype=np.int64)
    out = split_sessions(keys, np.array([0.0, 0.0, 0.0, 100.0]), gap=50.0)
    assert out.tolist() == [1, 0, 1, 2]


def test_a_header_read_as_one_column_suggests_the_separator(tmp_path):
    from sessrec.data.readers import _check_columns
    from sessrec.errors import DataError

    with pytest.raises(DataError, match=r"columns: visit;product;ts; the header reads as one column: try --sep ';'\)"):
        _check_columns(tmp_path / "x.csv", ["visit"], ["visit;product;ts"])
    with pytest.raises(DataError, match=r"columns: a, b\)$"):
        _check_columns(tmp_path / "x.csv", ["visit"], ["a", "b"])
