"""A folder of Parquet parts (a partitioned data set) prepares exactly as the one file they came from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sessrec.cli import main


def _prepare(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", *args])
    assert exit_info.value.code == 0


@pytest.mark.parametrize("engine", ["polars", "pandas"])
def test_a_folder_of_parquet_parts_prepares_as_one_file(small: Path, tmp_path: Path, engine: str) -> None:
    events = pd.read_csv(small / "raw" / "events.tsv", sep="\t", dtype={"SessionId": "int64", "ItemId": str})
    whole = tmp_path / "events.parquet"
    events.to_parquet(whole)
    folder = tmp_path / "parts"
    thirds = [events.iloc[: len(events) // 3], events.iloc[len(events) // 3 : 2 * len(events) // 3],
              events.iloc[2 * len(events) // 3 :]]
    for i, part in enumerate(thirds):  # hive-style sub-folders, read in path order
        (folder / f"day={i}").mkdir(parents=True)
        part.to_parquet(folder / f"day={i}" / "part-0.parquet")
    _prepare([str(whole), "--engine", engine, "--out", str(tmp_path / "one")])
    _prepare([str(folder), "--engine", engine, "--out", str(tmp_path / "many")])
    for name in ("train", "train_full", "valid", "test", "items"):
        one = pd.read_parquet(tmp_path / "one" / f"{name}.parquet")
        many = pd.read_parquet(tmp_path / "many" / f"{name}.parquet")
        pd.testing.assert_frame_equal(one, many)


def test_a_folder_without_parquet_is_one_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.csv").write_text("x\n1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(tmp_path / "logs"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code != 0
    assert "logs: is a folder without .parquet files" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
