"""The polars engine against the pandas one: identical prepared folders, identical preprocessing, readers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessrec.commands import prepare
from sessrec.data.columnar import preprocess_columnar
from sessrec.data.prepared import SPLIT_NAMES
from sessrec.data.preprocess import preprocess
from sessrec.data.readers import read_events
from sessrec.data.scan import read_columnar
from sessrec.data.synthetic import SyntheticConfig, generate, write
from sessrec.errors import DataError

SHARED = Path(__file__).parents[2].parent / "shared" / "data"


def run_both(tmp_path: Path, *argv: object) -> tuple[Path, Path]:
    """`prepare` with --engine pandas and --engine polars into two folders."""
    outs = []
    for engine in ("pandas", "polars"):
        out = tmp_path / engine
        parser = __import__("argparse").ArgumentParser()
        prepare.add_arguments(parser)
        args = parser.parse_args([str(a) for a in argv] + ["--out", str(out), "--engine", engine])
        assert prepare.run(args) == 0
        outs.append(out)
    return outs[0], outs[1]


def assert_same_folder(old: Path, new: Path) -> None:
    """Every split, items.parquet and meta.json are equal (values, types and order)."""
    for name in [*SPLIT_NAMES, *(f"{n}.sessions" for n in SPLIT_NAMES), "items"]:
        a, b = pq.read_table(old / f"{name}.parquet"), pq.read_table(new / f"{name}.parquet")
        assert a.schema == b.schema, name
        assert a.equals(b), name
    assert json.loads((old / "meta.json").read_text()) == json.loads((new / "meta.json").read_text())


def test_tiny_log_with_string_keys_and_unicode(tmp_path: Path) -> None:
    rows = ["SessionId\tItemId\tTime"]
    for s, day in [("s10", 0), ("s9", 0.5), ("x", 1), ("007", 3), ("é", 5), ("s2", 5.2)]:
        for k, item in enumerate(["a", "b", "ä", "B", "a"]):
            rows.append(f"{s}\t{item}\t{int(day * 86400 + (k % 3) * 3600)}")  # time ties
    log = tmp_path / "log.tsv"
    log.write_text("\n".join(rows) + "\n")
    old, new = run_both(tmp_path, log, "--min-item-support", 1, "--test-days", 1, "--valid-days", 1)
    assert_same_folder(old, new)


def test_synthetic_log(tmp_path: Path) -> None:
    data = generate(SyntheticConfig(n_items=300, n_sessions=3000, days=20, image_dim=4, vocab_size=1000))
    raw = write(data, tmp_path / "raw")
    old, new = run_both(tmp_path, raw / "events.tsv", "--test-days", 3, "--valid-days", 3)
    assert_same_folder(old, new)


SAMPLES = {
    "diginetica": ("diginetica/sample_train-item-views.csv", ["--min-item-support", 2]),
    "movielens": (
        "movielens-latest-small/ml-latest-small/ratings.csv",
        ["--test-days", 180, "--valid-days", 180],
    ),
    "rees46": (
        "rees46-multicategory-sample/2019-Oct-sample.csv",
        ["--min-item-support", 1, "--test-days", 0.002, "--valid-days", 0.002],
    ),
}


@pytest.mark.data
@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_shared_samples(tmp_path: Path, fmt: str) -> None:
    rel, extra = SAMPLES[fmt]
    if not (SHARED / rel).exists():
        pytest.skip(f"{SHARED / rel} absent (real samples live outside the repository)")
    old, new = run_both(tmp_path, SHARED / rel, "--format", fmt, *extra)
    assert_same_folder(old, new)


def test_movielens_no_dedup_and_split_gap(tmp_path: Path) -> None:
    path = SHARED / "movielens-latest-small/ml-latest-small/ratings.csv"
    if not path.exists():
        pytest.skip(f"{path} absent")
    old, new = run_both(
        tmp_path, path, "--sep", ",", "--session-col", "userId", "--item-col", "movieId", "--time-col",
        "timestamp", "--max-session-gap", 3600, "--no-dedup", "--test-days", 90, "--valid-days", 0,
    )  # fmt: skip
    assert_same_folder(old, new)


events_strategy = st.lists(
    st.tuples(st.sampled_from(["1", "2", "10", "b", "ü"]), st.sampled_from("abcde"), st.integers(0, 12)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=events_strategy, support=st.integers(1, 3), keys_as_int=st.booleans(), dedup=st.booleans(),
    valid_days=st.sampled_from([0.0, 0.1]),
)  # fmt: skip
def test_preprocess_matches_pandas(
    rows: list, support: int, keys_as_int: bool, dedup: bool, valid_days: float
) -> None:
    events = pd.DataFrame(rows, columns=["session", "item", "time"])
    events["time"] = events["time"].astype(float) * 3600
    if keys_as_int:
        events["session"] = events["session"].map({"1": 1, "2": 2, "10": 10, "b": 11, "ü": 3})
    opts = dict(min_item_support=support, test_days=0.2, valid_days=valid_days, dedup_consecutive=dedup)
    try:
        old = preprocess(events, **opts)
    except DataError as err:
        with pytest.raises(DataError, match=__import__("re").escape(str(err))):
            preprocess_columnar(pl.from_pandas(events), **opts)
        return
    new = preprocess_columnar(lambda: pl.from_pandas(events), **opts)  # a reader: the frame is freed early
    assert new.raw == {"events": len(events), "sessions": events["session"].nunique()}
    assert new.item_ids.to_list() == old.item_ids.tolist()
    for name in SPLIT_NAMES:
        a, b = old.splits[name], new.splits[name].to_pandas()
        assert a["session"].tolist() == b["session"].tolist(), name
        assert a["item"].tolist() == b["item"].tolist(), name
        assert a["time"].tolist() == b["time"].tolist(), name
        assert old.session_keys[name].tolist() == new.session_keys[name].to_list(), name
        assert_keys_are_the_inputs(events, a, old.item_ids, old.session_keys[name])


def assert_keys_are_the_inputs(events: pd.DataFrame, split: pd.DataFrame, item_ids, keys) -> None:
    """Every event of session s of the prepared split is an input event of session keys[s]."""
    keys = np.asarray(keys, dtype=object)
    assert len(keys) == split["session"].nunique()
    got = pd.DataFrame({"session": keys[split["session"].to_numpy()], "item": np.asarray(item_ids)[split["item"]],
                        "time": split["time"].to_numpy()})
    given = events.assign(item=events["item"].astype(str)).drop_duplicates()
    found = got.merge(given, on=["session", "item", "time"], how="left", indicator=True)
    assert (found["_merge"] == "both").all()


def same_read(path: Path, **spec: object) -> pl.DataFrame:
    """read_columnar equals read_events (values and order); returns the polars frame."""
    new = read_columnar(path, **spec)
    old = read_events(path, **spec)
    assert new.columns == ["session", "item", "time"]
    assert new["session"].to_list() == old["session"].tolist()
    assert new["item"].to_list() == old["item"].tolist()
    assert new["time"].to_list() == old["time"].tolist()
    return new


def test_reader_plain_and_fallback_cases(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plain = tmp_path / "plain.tsv"
    plain.write_text("SessionId\tItemId\tTime\n5\ta\t3\n5\tb\t1\n12\tc\t2\n")
    with caplog.at_level(logging.INFO, logger="sessrec.data.readers"):
        assert same_read(plain)["session"].dtype == pl.Int64
    assert "with the polars reader" in caplog.text
    odd = tmp_path / "odd.csv"  # padded id, string keys, ms times, a BOM before the header
    odd.write_text("\ufeffsid,iid,ts\n007, a ,3000\nx,b,1000\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sessrec.data.readers"):
        same_read(odd, sep=",", session_col="sid", item_col="iid", time_col="ts", time_unit="ms")
    assert "with the pandas reader" in caplog.text
    iso = tmp_path / "iso.csv"
    iso.write_text("SessionId,ItemId,Time\n1,a,2020-01-01T00:00:00Z\n1,b,2020-01-01T00:01:00Z\n")
    same_read(iso, sep=",")
    keys = tmp_path / "keys.csv"  # canonical ints, a user column cut by inactivity, a keep filter
    keys.write_text("u,i,t,e\n2,x,10,view\n10,y,5000,view\n2,y,20,buy\n2,z,9000,view\n-1,x,1,view\n")
    same_read(keys, sep=",", session_col=None, user_col="u", item_col="i", time_col="t", keep={"e": ["view"]})
    same_read(keys, sep=",", session_col="u", item_col="i", time_col="t", session_split_gap=100.0)
    same_read(keys, sep=",", session_col="i", item_col="u", time_col="t")


def test_reader_parquet(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame({"SessionId": [3, 1, 3], "ItemId": [7, 8, 7], "Time": [1.5, 2.0, 0.5]}).to_parquet(path)
    assert same_read(path)["item"].to_list() == ["7", "8", "7"]
    pd.DataFrame({"SessionId": ["a", "b"], "ItemId": [1.0, 2.0], "Time": [1, 2]}).to_parquet(path)
    same_read(path)  # float ids: the pandas reader's


def test_reader_errors_are_the_pandas_readers(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("SessionId\tItemId\tTime\n1\ta\t1\n1\t\t2\n")
    with pytest.raises(DataError, match=r"column 'ItemId' has 1 missing value\(s\) \(first at data row 2\)"):
        read_columnar(bad)
    with pytest.raises(DataError, match="file not found"):
        read_columnar(tmp_path / "none.tsv")


def test_engines_agree_on_times_in_milliseconds() -> None:
    times = np.random.default_rng(0).uniform(1e12, 2e12, 1000)
    frame = pl.DataFrame({"session": np.repeat(np.arange(100), 10), "item": ["a", "b"] * 500, "time": times})
    old = preprocess(frame.to_pandas(), min_item_support=1, test_days=3, valid_days=0)
    new = preprocess_columnar(frame, min_item_support=1, test_days=3, valid_days=0)
    assert new.splits["train_full"]["time"].to_list() == old.splits["train_full"]["time"].tolist()
