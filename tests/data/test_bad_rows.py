"""Bad rows of event logs: ragged rows, impossible or outlying times, float ids, an empty pre-split test file.

Both readers (`read_events`, pandas; `read_columnar`, polars) must refuse them with a one-line DataError
naming the file, never cut a value short or split on a wrecked cutoff.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from sessrec.data.presplit import import_splits
from sessrec.data.readers import read_events, read_preset
from sessrec.data.scan import read_columnar, read_columnar_preset
from sessrec.errors import DataError

COLS = {"session_col": "sid", "item_col": "iid", "time_col": "ts"}
READERS = [read_events, read_columnar]
T0 = 1_704_975_000


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def log_rows(n: int, start: int = T0, step: int = 60) -> list[str]:
    """n rows 'ts,sid,iid' of 5-event sessions."""
    return [f"{start + i * step},S{i // 5},I{i % 7}" for i in range(n)]


# ---------------------------------------------------------------- rows with more fields than the header


@pytest.mark.parametrize("reader", READERS)
def test_extra_field_is_refused_not_cut(tmp_path: Path, reader) -> None:
    f = write(tmp_path / "ev.csv", "ts,sid,iid\n1704975001,S1,Pants\n1704975002,S1,Shirt, size 1\n")
    with pytest.raises(DataError) as err:
        reader(f, **COLS)
    why = "an unquoted separator inside a value? quote it"
    assert str(err.value) == f"{f}: data row 2 has 4 fields, the header has 3 ({why})"


@pytest.mark.parametrize("reader", READERS)
def test_extra_field_deep_in_a_long_file(tmp_path: Path, reader) -> None:
    rows = log_rows(3000)
    rows[2500] = "S7,I36,170,4421673"  # sid,iid,ts written where ts,sid,iid is expected: four fields
    f = write(tmp_path / "ev.csv", "ts,sid,iid\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"^{f}: data row 2501 has 4 fields, the header has 3 "):
        reader(f, **COLS)


@pytest.mark.parametrize("reader", READERS)
def test_extra_field_in_the_first_row(tmp_path: Path, reader) -> None:
    """pandas would make the first column an index (or drop the field): refused as well."""
    f = write(tmp_path / "ev.csv", "ts,sid,iid\n1704975001,S1,Shirt, size 1\n1704975002,S1,Pants\n")
    with pytest.raises(DataError, match=rf"^{f}: data row 1 has 4 fields, the header has 3"):
        reader(f, **COLS)


@pytest.mark.parametrize("reader", READERS)
def test_quoted_separators_still_read(tmp_path: Path, reader) -> None:
    f = write(
        tmp_path / "ev.csv",
        'ts,sid,iid\n1704975001,S1,"Shirt, size 1"\n1704975002,S1,"Hat,\nred"\n1704975003,S2,Pants\n',
    )
    items = reader(f, **COLS)["item"].cast(str).to_list() if reader is read_columnar else \
        read_events(f, **COLS)["item"].tolist()  # fmt: skip
    assert items == ["Shirt, size 1", "Hat,\nred", "Pants"]


@pytest.mark.parametrize("reader", READERS)
def test_extra_field_with_a_filter_and_in_a_gz_file(tmp_path: Path, reader) -> None:
    text = "ts,sid,iid,ev\n1704975001,S1,Pants,view\n1704975002,S1,Shirt, size 1,view\n"
    f = write(tmp_path / "ev.csv", text)
    with pytest.raises(DataError, match=rf"^{f}: data row 2 has 5 fields, the header has 4"):
        reader(f, keep={"ev": ["view"]}, **COLS)
    gz = tmp_path / "ev.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataError, match=rf"^{gz}: data row 2 has 5 fields, the header has 4"):
        reader(gz, **COLS)


@pytest.mark.parametrize("reader", [read_preset, read_columnar_preset])
def test_extra_field_without_header_names_given(tmp_path: Path, reader) -> None:
    f = write(
        tmp_path / "clicks.dat",
        "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,S,extra\n",
    )
    with pytest.raises(DataError, match=rf"^{f}: data row 2 has 5 fields, 4 column names are given"):
        reader("yoochoose", f)


def test_fewer_fields_read_as_missing_values(tmp_path: Path) -> None:
    f = write(tmp_path / "ev.csv", "ts,sid,iid\n1704975001,S1,Pants\n1704975002,S1\n")
    for reader in READERS:
        with pytest.raises(DataError, match=rf"^{f}: column 'iid' has 1 missing .* at data row 2\)$"):
            reader(f, **COLS)


# ---------------------------------------------------------------- times that are no Unix time, or outliers


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("bad, shown", [("1e300", "1e+300"), ("99999999999999999999", "1e+20")])
def test_impossible_time_is_refused(tmp_path: Path, reader, bad: str, shown: str) -> None:
    rows = log_rows(40)
    rows[11] = f"{bad},S2,I4"
    f = write(tmp_path / "ev.csv", "ts,sid,iid\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        reader(f, **COLS)
    assert str(err.value) == (
        f"{f}: column 'ts' has 1 time(s) outside the years 1677..2262 (no Unix time), e.g. {shown} s after "
        "1970 (data row 12); fix or drop those rows"
    )


@pytest.mark.parametrize("reader", READERS)
def test_far_future_outlier_is_refused(tmp_path: Path, reader) -> None:
    rows = log_rows(300)
    rows[123] = "4102444800,S24,I4"  # 2100-01-01, a placeholder
    f = write(tmp_path / "ev.csv", "ts,sid,iid,ev\n" + "".join(f"{r},view\n" for r in rows))
    for keep in (None, {"ev": ["view"]}):  # with a filter the polars reader leaves the row to pandas
        with pytest.raises(DataError) as err:
            reader(f, keep=keep, **COLS)
        assert str(err.value).startswith(f"{f}: column 'ts' has 1 time(s) more than 10 years after 99% ")
        assert "e.g. 4.10244e+09 s after 1970 (data row 124)" in str(err.value)


@pytest.mark.parametrize("reader", READERS)
def test_data_spanning_decades_is_kept(tmp_path: Path, reader) -> None:
    """MovieLens-like: 1996..2018, most events recent, a few very old ones, and a sparse last year."""
    rng = np.random.default_rng(0)
    years = np.r_[np.full(5, 1996.0), rng.uniform(2010, 2017, 500), np.full(3, 2018.9)]
    times = ((years - 1970) * 365.25 * 86400).astype(np.int64)
    rows = [f"{t},S{i // 4},I{i % 9}" for i, t in enumerate(times)]
    f = write(tmp_path / "ev.csv", "ts,sid,iid\n" + "\n".join(rows) + "\n")
    assert len(reader(f, **COLS)) == len(rows)


@pytest.mark.parametrize("reader", READERS)
def test_milliseconds_read_as_seconds_still_only_warn(tmp_path: Path, reader, caplog) -> None:
    rows = log_rows(40, start=T0 * 1000, step=60_000)
    f = write(tmp_path / "ev.csv", "ts,sid,iid\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        assert len(reader(f, **COLS)) == 40
    assert "pass --time-unit ms" in caplog.text


# ---------------------------------------------------------------- float ids


@pytest.mark.parametrize("reader", READERS)
def test_integral_float_ids_are_integer_text(tmp_path: Path, reader) -> None:
    f = tmp_path / "ev.parquet"
    times = [T0, T0 + 1, T0 + 2]
    pd.DataFrame({"sid": [1.0, 1.0, 2.0], "iid": [16.0, 17.0, 16.0], "ts": times}).to_parquet(f)
    events = reader(f, **COLS)
    events = events.to_pandas() if isinstance(events, pl.DataFrame) else events
    assert events["item"].astype(str).tolist() == ["16", "17", "16"]
    assert events["session"].tolist() == [1, 1, 2]


@pytest.mark.parametrize("reader", READERS)
def test_non_integral_float_ids_are_refused(tmp_path: Path, reader) -> None:
    f = tmp_path / "ev.parquet"
    pd.DataFrame({"sid": [1, 1, 2], "iid": [16.0, 16.5, 16.0], "ts": [T0, T0 + 1, T0 + 2]}).to_parquet(f)
    with pytest.raises(DataError) as err:
        reader(f, **COLS)
    assert str(err.value) == (
        f"{f}: column 'iid' holds 1 non-integer id(s), e.g. 16.5 (data row 2); ids must be text or integers"
    )


# ---------------------------------------------------------------- pre-split files


def frame(rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["session", "item", "time"], orient="row")


def test_presplit_error_names_the_test_file() -> None:
    train = frame([(1, "a", 1.0), (1, "b", 2.0), (2, "a", 3.0), (2, "b", 4.0)])
    test = frame([(9, "x", 5.0), (9, "y", 6.0)])  # only items unseen in training
    with pytest.raises(DataError, match=r"^te\.csv: test is empty once restricted to the training items$"):
        import_splits(train, test, source={"train": "tr.csv", "test": "te.csv"})
    with pytest.raises(DataError, match=r"^te\.csv: the test file has no events$"):
        import_splits(train, test.clear(), source={"train": "tr.csv", "test": "te.csv"})


def test_prepare_presplit_names_the_test_file(tmp_path: Path, capsys) -> None:
    from sessrec.cli import main

    train = write(tmp_path / "tr.csv", "ts,sid,iid\n" + "\n".join(log_rows(40)) + "\n")
    test = write(tmp_path / "te.csv", f"ts,sid,iid\n{T0 + 9000},T1,new1\n{T0 + 9060},T1,new2\n")
    with pytest.raises(SystemExit) as stop:
        main(["prepare", "--train", str(train), "--test", str(test), "--sep", ",", "--session-col", "sid",
              "--item-col", "iid", "--time-col", "ts", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"sessrec: error: {test}: test is empty")
