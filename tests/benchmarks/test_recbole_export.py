"""benchmarks/recbole/export.py and leaderboard.py: RecBole benchmark files with sessrec's targets, and the
leaderboard table. Tiny and offline; RecBole itself is not needed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"recbole_{name}", REPO / "benchmarks" / "recbole" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export = _load("export")
leaderboard = _load("leaderboard")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from sessrec.cli import main

    root = tmp_path_factory.mktemp("recbole_export")
    for args in (
        [
            "generate",
            "--out",
            str(root / "raw"),
            "--n-items",
            "100",
            "--n-sessions",
            "400",
            "--n-topics",
            "10",
        ],
        ["prepare", str(root / "raw" / "events.tsv"), "--out", str(root / "prepared")],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 0
    return root / "prepared"


def _read_inter(path: Path) -> list[tuple[str, list[str], str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "session_id:token\titem_id_list:token_seq\titem_id:token"
    rows = []
    for line in lines[1:]:
        session, hist, target = line.split("\t")
        rows.append((session, hist.split(" "), target))
    return rows


def _naive(
    prepared: Path, split: str, max_history: int | None = None
) -> dict[int, list[tuple[list[str], str]]]:
    """Per session: the (history, target) pairs by a plain loop over the split's parquet."""
    frame = pd.read_parquet(prepared / f"{split}.parquet")
    out = {}
    for session, group in frame.groupby("session", sort=True):
        items = [str(i) for i in group["item"].tolist()]
        pairs = []
        for t in range(1, len(items)):
            start = 0 if max_history is None else max(0, t - max_history)
            pairs.append((items[start:t], items[t]))
        out[int(session)] = pairs
    return out


@pytest.mark.parametrize("split", ["train", "train_full", "valid", "test"])
def test_rows_histories_and_targets_match_a_naive_loop(prepared, tmp_path, split):
    meta = export.export(prepared, tmp_path / "tiny", quiet=True)
    rows = _read_inter(tmp_path / "tiny" / f"tiny.{split}.inter")
    frame = pd.read_parquet(prepared / f"{split}.parquet")
    n_events, n_sessions = len(frame), frame["session"].nunique()
    assert n_sessions >= 3
    assert len(rows) == n_events - n_sessions == meta["splits"][split]["rows"]
    naive = _naive(prepared, split)
    prefix = export.SESSION_PREFIX[split].decode()
    by_session: dict[str, list] = {}
    for session, hist, target in rows:
        by_session.setdefault(session, []).append((hist, target))
    sessions = sorted(naive)
    for s in (sessions[0], sessions[len(sessions) // 2], sessions[-1]):
        assert by_session[f"{prefix}{s}"] == naive[s]
    assert meta["splits"][split]["max_history"] == max(len(p[0]) for pairs in naive.values() for p in pairs)
    assert meta["splits"][split]["rows_with_cut_history"] == 0


def test_max_history_keeps_the_most_recent_items_and_counts_cut_rows(prepared, tmp_path):
    k = 3
    meta = export.export(prepared, tmp_path / "cut", max_history=k, splits=("test",), quiet=True)
    rows = _read_inter(tmp_path / "cut" / "cut.test.inter")
    naive = _naive(prepared, "test", max_history=k)
    expected = [pair for s in sorted(naive) for pair in naive[s]]
    assert [(h, t) for _, h, t in rows] == expected
    full = _naive(prepared, "test")
    n_cut = sum(len(h) > k for pairs in full.values() for h, _ in pairs)
    assert n_cut > 0
    assert meta["splits"]["test"]["rows_with_cut_history"] == n_cut
    assert meta["max_history"] == k


def test_item_file_lists_every_item_with_features(prepared, tmp_path):
    items = pd.read_parquet(prepared / "items.parquet").sort_values("idx")
    props = pd.DataFrame(
        {
            "item_id": items["item_id"].astype(str).iloc[::2].to_numpy(),
            "category": [f"cat {i % 4}" for i in range(len(items.iloc[::2]))],
        }
    )
    props.to_parquet(tmp_path / "props.parquet")
    export.export(
        prepared,
        tmp_path / "feat",
        properties=str(tmp_path / "props.parquet"),
        feature_columns=["category"],
        splits=("test",),
        quiet=True,
    )
    item = pd.read_csv(tmp_path / "feat" / "feat.item", sep="\t", dtype=str, keep_default_na=False)
    assert list(item.columns) == ["item_id:token", "category:token"]
    assert item["item_id:token"].tolist() == [str(i) for i in range(len(items))]
    assert item["category:token"].iloc[0] == "cat_0"  # whitespace made token-safe
    assert item["category:token"].iloc[1] == ""  # missing -> RecBole's padding token


def test_int_tokens_and_gather_ranges():
    buf, off = export.int_tokens(np.array([0, 7, 10, 12345]), ord(" "))
    assert buf.tobytes() == b"0 7 10 12345 "
    assert off.tolist() == [0, 2, 4, 7, 13]
    out = export.gather_ranges(
        np.frombuffer(b"abcdefgh", dtype=np.uint8), np.array([1, 0, 5]), np.array([2, 0, 3])
    )
    assert out.tobytes() == b"bcfgh"


def _fake(framework: str, model: str, seed: int, recall: float, mrr: float) -> dict:
    return {
        "schema": leaderboard.SCHEMA,
        "framework": framework,
        "model": model,
        "dataset": "toy",
        "seed": seed,
        "tie_mode": "conservative",
        "epochs": 3,
        "train_seconds": 1.0,
        "train_events_per_s": 1000.0,
        "metrics": {"test": {"recall@20": recall, "mrr@20": mrr, "recall@10": recall / 2, "mrr@10": mrr / 2}},
    }


def test_leaderboard_mean_std_over_seeds(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_fake("recbole", "GRU4Rec", 0, 0.30, 0.10)))
    (tmp_path / "b.json").write_text(json.dumps(_fake("recbole", "GRU4Rec", 1, 0.40, 0.20)))
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    text = leaderboard.main(
        [str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--recbole-venv", str(tmp_path / "venv")]
    )
    lines = text.strip().splitlines()
    assert lines[0].startswith("| dataset | framework | model | seeds |")
    assert len(lines) == 3
    row = lines[2]
    assert "| toy | recbole | GRU4Rec | 2 (0, 1) | conservative |" in row
    assert "0.3500 ± 0.0707" in row and "0.1500 ± 0.0707" in row  # sample std of {0.3, 0.4} and {0.1, 0.2}


def test_leaderboard_reads_sessrec_results_and_skips_recbole_without_its_venv(tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps(_fake("recbole", "SASRec", 0, 0.2, 0.05)))
    sessrec_result = {
        "name": "gru",
        "label": "GRU4Rec (sessrec)",
        "config": "configs/gru4rec/x.yaml",
        "metrics": {"test_recall@20": 0.5, "test_mrr@20": 0.25},
        "test_events": 10,
        "epochs": 2,
        "fit_seconds": 3.0,
        "test_seconds": 0.1,
    }
    run_dir = tmp_path / "experiment" / "gru"  # what `sessrec experiment` writes: result.json + run.yaml
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(sessrec_result))
    (run_dir / "run.yaml").write_text("seed_everything: 42\ndata:\n  data_dir: data/toy/prepared\n")
    text = leaderboard.main(
        [str(tmp_path), "--recbole-venv", str(tmp_path / "absent"), "--sessrec-dataset", "toy"]
    )
    assert "RecBole part skipped" in capsys.readouterr().err
    assert "SASRec" not in text
    assert "| toy | sessrec | GRU4Rec (sessrec) | 1 (42) | conservative | 0.5000 | 0.2500 |" in text
    mapped = leaderboard.main([str(run_dir), "--sessrec-dataset", "data/toy/prepared=Toy data"])
    assert "| Toy data | sessrec | GRU4Rec (sessrec) |" in mapped
