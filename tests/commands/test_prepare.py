"""The `prepare` command: run() on tiny logs, the printed table, errors, the real samples end to end."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sessrec.commands import prepare
from sessrec.data.prepared import SPLIT_NAMES, PreparedData
from sessrec.errors import DataError

SHARED = Path(__file__).parents[2].parent / "shared" / "data"
H = 3600


def parse(*argv: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def tiny_log(path: Path) -> Path:
    """Sessions 1-3 in train (day 0-1), 4 in valid (day 3), 5 in test (day 5); items a, b, c."""
    rows = ["SessionId\tItemId\tTime"]
    for session, day in [(1, 0), (2, 0.5), (3, 1), (4, 3), (5, 5)]:
        for k, item in enumerate("abc"):
            rows.append(f"{session}\t{item}\t{int(day * 86400 + k * H)}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_run_writes_folder_and_prints_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "prep"
    args = parse(
        tiny_log(tmp_path / "log.tsv"),
        "--out",
        out,
        "--min-item-support",
        1,
        "--test-days",
        1,
        "--valid-days",
        1,
    )
    assert prepare.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["split", "events", "sessions", "items"]
    assert [line.split() for line in lines[1:5]] == [
        ["train_full", "12", "4", "3"],
        ["train", "9", "3", "3"],
        ["valid", "3", "1", "3"],
        ["test", "3", "1", "3"],
    ]
    data = PreparedData.load(out)
    assert data.item_ids.tolist() == ["a", "b", "c"]
    assert data.meta["options"]["test_days"] == 1.0 and data.meta["format"] == "gru4rec"
    assert data.split("test").items.tolist() == [0, 1, 2]


def test_existing_output_and_overwrite(tmp_path: Path) -> None:
    log = tiny_log(tmp_path / "log.tsv")
    out = tmp_path / "prep"
    out.mkdir()
    opts = ["--min-item-support", 1, "--test-days", 1, "--valid-days", 0]
    with pytest.raises(DataError, match="output exists"):
        prepare.run(parse(log, "--out", out, *opts))
    assert prepare.run(parse(log, "--out", out, "--overwrite", *opts)) == 0
    assert PreparedData.load(out).split("valid").n_events == 0


def test_column_overrides_and_user_sessions(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        "user;thing;when\n"
        + "".join(f"1;{i};{t}\n" for t, i in enumerate("abab"))
        + "2;a;90000000\n2;b;90000001\n"
    )
    out = tmp_path / "prep"
    args = parse(
        log,
        "--out",
        out,
        "--sep",
        ";",
        "--user-col",
        "user",
        "--item-col",
        "thing",
        "--time-col",
        "when",
        "--time-unit",
        "ms",
        "--min-item-support",
        1,
        "--test-days",
        0.5,
        "--valid-days",
        0,
        "--no-dedup",
    )
    assert prepare.run(args) == 0
    data = PreparedData.load(out)
    assert data.split("train_full").items.tolist() == [0, 1, 0, 1]
    assert data.split("test").items.tolist() == [0, 1]  # user 2, 25 hours later
    assert data.meta["reader"]["session_col"] is None


@pytest.mark.parametrize(
    ("content", "extra", "match"),
    [
        (
            "SessionId\tItem\tTime\n1\ta\t1\n",
            [],
            r"column 'ItemId' not found \(columns: SessionId, Item, Time\)",
        ),
        ("SessionId\tItemId\tTime\n1\ta\tnoon\n", [], r"column 'Time' .*'noon'"),
        (
            "SessionId\tItemId\tTime\n1\ta\t1\n1\tb\t2\n",
            [],
            "no events left after the minimum-support filter",
        ),
        ("\x00\x01", ["--format", "yoochoose"], "cannot read as csv|column"),
    ],
)
def test_bad_input_leaves_nothing(tmp_path: Path, content: str, extra: list[str], match: str) -> None:
    log = tmp_path / "in.tsv"
    log.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        prepare.run(parse(log, "--out", tmp_path / "prep", *extra))
    assert "in.tsv" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        prepare.run(parse(tmp_path / "missing.tsv", "--out", tmp_path / "prep"))
    assert not (tmp_path / "prep").exists()


def check_invariants(data: PreparedData) -> None:
    """Sessions of >= 2 events, every index item with >= 5 train_full events, valid items within train."""
    assert (data.counts("train_full") >= 5).all()
    for name in SPLIT_NAMES:
        split = data.split(name)
        if split.n_sessions:
            assert (np.diff(split.offsets) >= 2).all(), name
            assert (split.items < data.n_items).all()
    train_items = set(np.flatnonzero(data.counts("train")))
    assert set(data.split("valid").items.tolist()) <= train_items
    assert data.split("train").n_events + data.split("valid").n_events <= data.split("train_full").n_events


REAL = {
    "diginetica": ("diginetica/sample_train-item-views.csv", (50, 3000), (5, 100)),
    "movielens": ("movielens-latest-small/ml-latest-small/ratings.csv", (50_000, 100_000), (50, 1000)),
}


@pytest.mark.data
@pytest.mark.parametrize("fmt", sorted(REAL))
def test_real_sample_end_to_end(tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture) -> None:
    rel, train_range, test_range = REAL[fmt]
    if not (SHARED / rel).exists():
        pytest.skip(f"{SHARED / rel} absent (real samples live outside the repository)")
    out = tmp_path / fmt
    assert prepare.run(parse(SHARED / rel, "--format", fmt, "--out", out)) == 0
    data = PreparedData.load(out)
    check_invariants(data)
    assert train_range[0] <= data.split("train_full").n_events <= train_range[1]
    assert test_range[0] <= data.split("test").n_events <= test_range[1]
    assert "train_full" in capsys.readouterr().out


def test_subprocess_cli(tmp_path: Path) -> None:
    out = tmp_path / "prep"
    cmd = [
        sys.executable,
        "-m",
        "sessrec",
        "prepare",
        str(tiny_log(tmp_path / "log.tsv")),
        "--out",
        str(out),
        "--min-item-support",
        "1",
        "--test-days",
        "1",
        "--valid-days",
        "1",
    ]
    env = {**os.environ, "SESSREC_LOG_LEVEL": "WARNING"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if "not yet" in done.stderr:
        pytest.skip("sessrec.cli.main is not ready yet")
    assert done.returncode == 0, done.stderr
    assert "train_full" in done.stdout and PreparedData.load(out).n_items == 3
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"sessrec: error: {out}: output exists (pass --overwrite to replace it)"
    ]
