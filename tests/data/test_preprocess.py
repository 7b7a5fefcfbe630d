"""Preprocessing on hand-computed fixtures: dedup, iterative support filter, time splits, ordering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessrec.data.preprocess import (
    drop_consecutive_duplicates,
    filter_support,
    order_events,
    preprocess,
)
from sessrec.errors import ConfigError, DataError

H = 3600.0


def log(rows: list[tuple[object, str, float]]) -> pd.DataFrame:
    """Events from (session, item, time) tuples."""
    return pd.DataFrame(rows, columns=["session", "item", "time"])


def sessions_of(frame: pd.DataFrame, item_ids: np.ndarray) -> list[list[str]]:
    """Item ids per session, in session order."""
    return [list(item_ids[g["item"].to_numpy()]) for _, g in frame.groupby("session", sort=True)]


def test_filter_needs_several_rounds() -> None:
    # counts a2 b3 c2 d2 x1. Round 1: x goes, so s3 = [c] (too short) goes; c now has 1 event.
    # Round 2: c goes, so s4 = [d] goes; d has 1 event. Round 3: d goes, s5 = [b] goes. Round 4: stable.
    events = log(
        [
            (1, "a", 0),
            (1, "b", 1),
            (2, "a", 2),
            (2, "b", 3),
            (3, "c", 4),
            (3, "x", 5),
            (4, "c", 6),
            (4, "d", 7),
            (5, "d", 8),
            (5, "b", 9),
        ]
    )
    out = filter_support(order_events(events), min_item_support=2, min_session_length=2)
    assert out["session"].tolist() == [1, 1, 2, 2]
    assert out["item"].tolist() == ["a", "b", "a", "b"]


def test_dedup_only_consecutive_within_session() -> None:
    events = log([(1, "a", 0), (1, "a", 1), (1, "b", 2), (1, "a", 3), (2, "a", 4), (1, "a", 3.5)])
    out = drop_consecutive_duplicates(order_events(events))
    assert out["session"].tolist() == [1, 1, 1, 2]
    assert out["item"].tolist() == ["a", "b", "a", "a"]


def split_fixture() -> pd.DataFrame:
    """Six sessions over 110 hours (see test_time_split for the expected result)."""
    return log(
        [
            ("A", "a", 0 * H),
            ("A", "b", 1 * H),
            ("B", "a", 24 * H),
            ("B", "b", 25 * H),
            ("B", "c", 26 * H),
            ("C", "b", 72 * H),
            ("C", "a", 73 * H),
            ("D", "a", 80 * H),
            ("D", "d", 90 * H),
            ("E", "b", 110 * H),
            ("E", "a", 100 * H),  # out of time order in the file
            ("F", "c", 85 * H),
            ("F", "e", 85.5 * H),
            ("F", "a", 86 * H),
        ]
    )


def test_time_split() -> None:
    # tmax = 110 h, test cutoff = 86 h: D (ends 90 h), E (110 h) and F (ends exactly at 86 h: reference
    # rule max >= cutoff) go to test. D loses d (not in train_full) and is dropped; F loses e.
    # Validation from train_full (A, B, C; tmax 73 h, cutoff 49 h): C.
    out = preprocess(split_fixture(), min_item_support=1, test_days=1, valid_days=1)
    ids = out.item_ids
    assert ids.tolist() == ["a", "b", "c"]
    s = out.splits
    assert sessions_of(s["train_full"], ids) == [["a", "b"], ["a", "b", "c"], ["b", "a"]]
    assert sessions_of(s["train"], ids) == [["a", "b"], ["a", "b", "c"]]
    assert sessions_of(s["valid"], ids) == [["b", "a"]]
    assert sessions_of(s["test"], ids) == [["c", "a"], ["a", "b"]]  # F first (starts 85 h), then E
    assert s["test"]["time"].tolist() == [85 * H, 86 * H, 100 * H, 110 * H]
    for frame in s.values():
        assert frame.dtypes.to_dict() == {"session": np.int64, "item": np.int32, "time": np.float64}


def test_valid_days_zero_disables_validation() -> None:
    out = preprocess(split_fixture(), min_item_support=1, test_days=1, valid_days=0)
    assert out.splits["valid"].empty
    pd.testing.assert_frame_equal(out.splits["train"], out.splits["train_full"])


def test_session_order_ties_by_key_and_stable_events() -> None:
    events = log([(9, "b", 5), (9, "a", 5), (3, "a", 5), (3, "b", 6), (1, "b", 7), (1, "a", 8)] * 1)
    out = preprocess(events, min_item_support=1, test_days=0.5 / 86400, valid_days=0, dedup_consecutive=False)
    tf = out.splits["train_full"]
    # sessions 3 and 9 both start at t=5: key 3 first; within 9 the tie at t=5 keeps file order (b, a)
    assert sessions_of(tf, out.item_ids) == [["a", "b"], ["b", "a"]]
    assert tf["session"].tolist() == [0, 0, 1, 1]
    assert sessions_of(out.splits["test"], out.item_ids) == [["b", "a"]]


def test_train_full_refiltered_after_split() -> None:
    # Item c has 2 events in all (passes support 2) but one is in the test period: train_full drops it.
    events = log(
        [
            (1, "a", 0),
            (1, "b", 1),
            (1, "c", 2),
            (2, "a", 3),
            (2, "b", 4),
            (3, "a", 10 * 86400),
            (3, "c", 10 * 86400 + 1),
            (4, "b", 10 * 86400),
            (4, "a", 10 * 86400 + 2),
        ]
    )
    out = preprocess(events, min_item_support=2, test_days=1, valid_days=0)
    assert out.item_ids.tolist() == ["a", "b"]
    assert out.splits["train_full"]["item"].tolist() == [0, 1, 0, 1]
    assert sessions_of(out.splits["test"], out.item_ids) == [["b", "a"]]  # session 3 lost c, then too short


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(min_item_support=100), "minimum-support filter"),
        (dict(min_item_support=1, test_days=1000), "train_full is empty"),
        (dict(min_item_support=1, test_days=1e-9, valid_days=0, extra=True), "test is empty"),
        (dict(min_item_support=1, test_days=1, valid_days=1000), "train is empty"),
    ],
)
def test_empty_after_a_step_names_source_and_step(kwargs: dict, match: str) -> None:
    events = split_fixture()
    if kwargs.pop("extra", False):  # a last session of items never seen before
        events = pd.concat([events, log([("G", "x", 119 * H), ("G", "y", 120 * H)])])
    with pytest.raises(DataError, match=match) as info:
        preprocess(events, source="clicks.tsv", **kwargs)
    assert str(info.value).startswith("clicks.tsv: ")


def test_invalid_options() -> None:
    with pytest.raises(ConfigError, match="min_session_length"):
        preprocess(split_fixture(), min_session_length=1)
    with pytest.raises(ConfigError, match="test_days"):
        preprocess(split_fixture(), test_days=0)


random_logs = st.lists(
    st.tuples(st.integers(0, 12), st.sampled_from("abcdefg"), st.integers(0, 20)), min_size=1, max_size=80
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=random_logs, support=st.integers(1, 3))
def test_invariants_property(rows: list[tuple[int, str, int]], support: int) -> None:
    events = log([(s, i, t * 3600.0) for s, i, t in rows])
    try:
        out = preprocess(events, min_item_support=support, test_days=0.25, valid_days=0.25)
    except DataError:
        return  # a tiny random log may well end up empty: that is the documented error
    again = preprocess(events.copy(), min_item_support=support, test_days=0.25, valid_days=0.25)
    n = len(out.item_ids)
    counts = np.bincount(out.splits["train_full"]["item"], minlength=n)
    assert (counts >= support).all() and n == len(set(out.item_ids))
    for name, frame in out.splits.items():
        pd.testing.assert_frame_equal(frame, again.splits[name])
        if frame.empty:
            continue
        lengths = frame.groupby("session").size()
        assert (lengths >= 2).all()
        assert lengths.index.tolist() == list(range(len(lengths)))
        assert frame["session"].is_monotonic_increasing
        assert frame["item"].between(0, n - 1).all()
    train_items = set(out.splits["train"]["item"])
    assert set(out.splits["valid"]["item"]) <= train_items


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("test_days", float("inf"), "test_days: must be a finite number > 0"),
        ("test_days", float("nan"), "test_days: must be a finite number > 0"),
        ("test_days", 0.0, "test_days: must be a finite number > 0"),
        ("valid_days", float("inf"), "valid_days: must be a finite number >= 0"),
        ("valid_days", -1.0, "valid_days: must be a finite number >= 0"),
        ("min_item_support", 0, "min_item_support: must be >= 1"),
    ],
)
def test_non_finite_or_out_of_range_options(option: str, value: float, match: str) -> None:
    events = log([(1, "a", 0), (1, "b", 1)])
    with pytest.raises(ConfigError, match=match):
        preprocess(events, **{option: value})


def test_non_finite_event_times_are_a_data_error() -> None:
    events = log([(1, "a", 0), (1, "b", np.inf), (2, "a", np.nan)])
    with pytest.raises(DataError, match="my.tsv: 2 events have a NaN or infinite time"):
        preprocess(events, source="my.tsv")


# ---- the `prepare` command's numeric options: one line naming the option, before anything is read ----
@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--test-days", "inf"], "argument --test-days: must be a finite number > 0, got 'inf'"),
        (["--test-days", "0"], "argument --test-days: must be a finite number > 0, got '0'"),
        (["--test-days", "nan"], "argument --test-days: must be a finite number > 0"),
        (["--test-days", "a week"], "argument --test-days: invalid float value: 'a week'"),
        (["--valid-days", "-1"], "argument --valid-days: must be a finite number >= 0, got '-1'"),
        (["--valid-days=-inf"], "argument --valid-days: must be a finite number >= 0"),
        (["--min-item-support", "0"], "argument --min-item-support: must be a finite number >= 1"),
        (["--min-session-length", "-2"], "argument --min-session-length: must be a finite number >= 1"),
        (["--min-item-support", "2.5"], "argument --min-item-support: invalid int value: '2.5'"),
        (["--session-gap", "0"], "argument --session-gap: must be a finite number > 0, got '0'"),
        (["--session-gap", "inf"], "argument --session-gap: must be a finite number > 0"),
        (["--max-session-gap", "nan"], "argument --max-session-gap: must be a finite number > 0"),
        (["--max-session-gap", "60", "--user-col", "u"], "--max-session-gap: splits session ids"),
    ],
)
def test_prepare_numeric_options_one_line(tmp_path, capsys, argv: list[str], match: str) -> None:
    from sessrec.cli import main

    events = tmp_path / "ev.tsv"
    events.write_text("SessionId\tItemId\tTime\n1\ta\t1600000000\n1\tb\t1600000001\n")
    with pytest.raises(SystemExit) as stop:
        main(["prepare", str(events), "--out", str(tmp_path / "out"), *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sessrec: error: ") and match in err[-1], err
    assert not (tmp_path / "out").exists()


def test_prepare_max_session_gap_reaches_the_reader() -> None:
    import argparse

    from sessrec.commands import prepare

    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    args = parser.parse_args(["in.tsv", "--out", "o", "--max-session-gap", "3600"])
    assert prepare.reader_overrides(args)["session_split_gap"] == 3600.0
    assert "session_split_gap" not in prepare.reader_overrides(parser.parse_args(["in.tsv", "--out", "o"]))
