"""Import of pre-split files: `prepare --train A --test B [--valid C]` reproduces a split exactly."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sessrec.commands import prepare
from sessrec.data.prepared import PreparedData
from sessrec.data.synthetic import SyntheticConfig, generate, write
from sessrec.errors import ConfigError, DataError


def run(*argv: object) -> int:
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    return prepare.run(parser.parse_args([str(a) for a in argv]))


def export(data: PreparedData, split: str, path: Path) -> Path:
    """A prepared split written back as a GRU4Rec TSV with the original item ids."""
    s = data.split(split)
    session = np.repeat(np.arange(s.n_sessions), np.diff(s.offsets))
    pd.DataFrame({"SessionId": session, "ItemId": data.item_ids[s.items], "Time": s.times}).to_csv(
        path, sep="\t", index=False
    )
    return path


def test_import_reproduces_a_split_exactly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = SyntheticConfig(n_items=200, n_sessions=2000, days=20, image_dim=4, vocab_size=1000)
    raw = write(generate(config), tmp_path / "raw")
    assert run(raw / "events.tsv", "--out", tmp_path / "split", "--test-days", 3, "--valid-days", 0) == 0
    split = PreparedData.load(tmp_path / "split")
    train = export(split, "train_full", tmp_path / "train.tsv")
    test = export(split, "test", tmp_path / "test.tsv")
    capsys.readouterr()
    assert run("--train", train, "--test", test, "--out", tmp_path / "imported") == 0
    table = capsys.readouterr().out
    imported = PreparedData.load(tmp_path / "imported")
    assert imported.meta["splits"] == split.meta["splits"]  # counts
    assert imported.item_ids.tolist() == split.item_ids.tolist()  # items
    for name in ("train_full", "train", "valid", "test"):  # sessions, event by event
        a = pq.read_table(tmp_path / "split" / f"{name}.parquet")
        assert a.equals(pq.read_table(tmp_path / "imported" / f"{name}.parquet")), name
    assert f"{split.meta['splits']['test']['events']:,}" in table
    assert imported.meta["options"]["presplit"] is True


def write_log(path: Path, rows: list[tuple[object, str, int]]) -> Path:
    pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"]).to_csv(path, sep="\t", index=False)
    return path


def test_test_and_valid_restricted_to_training_items(tmp_path: Path) -> None:
    train = [(1, "a", 0), (1, "b", 1), (2, "c", 2), (2, "a", 3), (3, "z", 4)]
    valid = [(1, "a", 10), (1, "v", 11), (1, "b", 12), (2, "v", 13), (2, "c", 14)]
    train, valid = write_log(tmp_path / "train.tsv", train), write_log(tmp_path / "valid.tsv", valid)
    test = write_log(
        tmp_path / "test.tsv",
        [(7, "a", 20), (7, "x", 21), (7, "b", 22), (8, "x", 23), (8, "a", 24), (9, "v", 25), (9, "c", 26)],
    )
    assert run("--train", train, "--test", test, "--valid", valid, "--out", tmp_path / "out") == 0
    data = PreparedData.load(tmp_path / "out")
    ids = data.item_ids
    assert ids.tolist() == ["a", "b", "c", "v", "z"]  # train_full = train + valid: v is known to test

    def sessions(name: str) -> list[list[str]]:
        split = data.split(name)
        return [ids[split.items[a:b]].tolist() for a, b in zip(split.offsets, split.offsets[1:])]

    assert sessions("train") == [["a", "b"], ["c", "a"], ["z"]]  # nothing filtered unless asked
    assert sessions("valid") == [["a", "b"]]  # v unknown to train; session 2 left with one event
    assert sessions("train_full") == [["a", "b"], ["c", "a"], ["z"], ["a", "v", "b"], ["v", "c"]]
    assert sessions("test") == [["a", "b"], ["v", "c"]]  # x unknown: dropped, then session 8 too short
    assert data.meta["raw"]["test"] == {"events": 7, "sessions": 3}
    keys = {name: data.session_keys(name).tolist() for name in ("train", "valid", "train_full", "test")}
    assert keys == {"train": [1, 2, 3], "valid": [1], "train_full": [1, 2, 3, 1, 2], "test": [7, 9]}


def test_session_keys_of_string_and_mixed_files(tmp_path: Path) -> None:
    """String keys are decoded per file (codes differ between files); any string key makes all strings."""
    train = write_log(tmp_path / "train.tsv", [("u-2", "a", 0), ("u-2", "b", 1), ("u-10", "b", 2), ("u-10", "a", 3)])
    test = write_log(tmp_path / "test.tsv", [(5, "a", 9), (5, "b", 10), (4, "b", 11), (4, "a", 12)])
    assert run("--train", train, "--test", test, "--out", tmp_path / "out") == 0
    data = PreparedData.load(tmp_path / "out")
    assert data.session_keys("train").tolist() == ["u-2", "u-10"]  # by first time
    assert data.session_keys("test").tolist() == ["5", "4"]


def test_filters_only_when_asked(tmp_path: Path) -> None:
    rows = [(1, "a", 0), (1, "b", 1), (1, "a", 2), (2, "a", 3), (2, "a", 4)]
    train = write_log(tmp_path / "train.tsv", rows)
    test = write_log(tmp_path / "test.tsv", [(3, "a", 5), (3, "b", 6)])
    assert run("--train", train, "--test", test, "--out", tmp_path / "asis") == 0
    assert PreparedData.load(tmp_path / "asis").split("train").n_events == 5
    opts = ["--min-item-support", 2, "--dedup"]
    with pytest.raises(DataError, match="test is empty once restricted"):
        run("--train", train, "--test", test, "--out", tmp_path / "filtered", *opts)  # b: 1 event, s2 -> [a]
    assert not (tmp_path / "filtered").exists()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["log.tsv", "--train", "a.tsv", "--test", "b.tsv"], "--train: give either an event log INPUT"),
        (["--train", "a.tsv"], "--train: pre-split files need both --train and --test"),
        (["--valid", "a.tsv", "--test", "b.tsv"], "--test: pre-split files need both"),
        ([], "give an event log INPUT, or pre-split files"),
        (["--train", "a.tsv", "--test", "b.tsv", "--test-days", 3], "--test-days: splits a raw log"),
        (["--train", "a.tsv", "--test", "b.tsv", "--engine", "pandas"], "--engine pandas"),
    ],
)
def test_option_combinations(tmp_path: Path, argv: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run(*argv, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()
