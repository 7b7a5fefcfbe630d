"""`sessrec extract movielens` and `extract diginetica-categories`: the feature files, the output checks, and
the files feeding the MovieLens config layers end to end (a tiny MovieLens-format log; the real samples
when ../shared/data has them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sessrec.cli import main

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
ML_SMALL = SHARED / "movielens-latest-small" / "ml-latest-small"
DIGINETICA_CATEGORIES = SHARED / "diginetica" / "product-categories.csv"
N_MOVIES = 12
GENRES = ["Comedy|Drama", "Action", "Animation|Children", "(no genres listed)"]


def write_movielens(root: Path) -> Path:
    """movies.csv, tags.csv and ratings.csv in the MovieLens layout: 12 movies, 40 users, sessions of 4
    ratings a minute apart, one session per user per day over 10 days."""
    root.mkdir(parents=True)
    movies = pd.DataFrame({
        "movieId": np.arange(1, N_MOVIES + 1),
        "title": [f"Movie {'Alpha Beta Gamma'.split()[i % 3]} {i} ({1990 + i})" for i in range(N_MOVIES)],
        "genres": [GENRES[i % len(GENRES)] for i in range(N_MOVIES)],
    })
    movies.loc[N_MOVIES - 1, "title"] = "Movie Without Year"
    movies.to_csv(root / "movies.csv", index=False)
    tags = pd.DataFrame({"userId": [1, 2, 3, 4], "movieId": [1, 2, 2, 5],
                         "tag": ["space opera", "space opera", "heist", "heist"], "timestamp": [1, 2, 3, 4]})
    tags.to_csv(root / "tags.csv", index=False)
    rng = np.random.default_rng(0)
    rows = []
    for user in range(1, 41):
        for day in range(10):
            start = 1_500_000_000 + day * 86_400 + user * 600
            for k, movie in enumerate(rng.choice(N_MOVIES, size=4, replace=False) + 1):
                rows.append((user, int(movie), 4.0, start + 60 * k))
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(root / "ratings.csv",
                                                                                     index=False)
    return root


def run(*argv: object) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code


def test_movielens_writes_the_feature_folder(tmp_path, capsys):
    ml = write_movielens(tmp_path / "ml")
    out = tmp_path / "features"
    assert run("extract", "movielens", ml, "--out", out, "--min-df", 1, "--ngram-max", 1) == 0
    printed = capsys.readouterr().out
    assert f"{N_MOVIES} movies x" in printed and "3 genres, year present for 11" in printed
    text = sp.load_npz(out / "text.npz")
    ids = (out / "text.ids.txt").read_text().splitlines()
    assert text.shape[0] == N_MOVIES and ids == [str(i) for i in range(1, N_MOVIES + 1)]
    props = pd.read_parquet(out / "properties.parquet")
    assert list(props.columns) == ["item_id", "genre", "year"]
    assert props["genre"].isna().sum() == 3  # "(no genres listed)"
    assert props.loc[props["item_id"] == "12", "year"].isna().all()
    (other := out / "notes.txt").write_text("kept")
    assert run("extract", "movielens", ml, "--out", out, "--min-df", 1) == 0  # a rerun replaces the three
    assert other.read_text() == "kept" and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "{ml}/features"], "lies inside the input"),
        (["--out", "{ml}/movies.csv"], "is a file, not an output folder"),
        (["--out", "{tmp}/f", "--min-df", "0"], "--min-df: expected a positive integer, got '0'"),
        (["--out", "{tmp}/f", "--min-df", "50"], "no TF-IDF terms"),
    ],
)
def test_movielens_refuses_with_one_line(tmp_path, capsys, args, message):
    ml = write_movielens(tmp_path / "ml")
    argv = [a.format(ml=ml, tmp=tmp_path) for a in args]
    assert run("extract", "movielens", ml, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sessrec: error: ") and message in err and "\n" not in err
    assert not (ml / "features").exists() and not (tmp_path / "f" / "text.npz").exists()


def test_movielens_without_movies_csv(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run("extract", "movielens", tmp_path / "empty", "--out", tmp_path / "f") == 2
    assert "movies.csv: file not found" in capsys.readouterr().err


def test_diginetica_categories(tmp_path, capsys):
    source = tmp_path / "product-categories.csv"
    source.write_text("itemId;categoryId\n1;10\n2;10\n3;7\n3;8\n")
    out = tmp_path / "features" / "properties.parquet"
    assert run("extract", "diginetica-categories", source, "--out", out) == 0
    assert "3 items, 2 categories" in capsys.readouterr().out
    props = pd.read_parquet(out)
    assert props.to_dict("list") == {"item_id": ["1", "2", "3"], "category": ["10", "10", "7"]}
    assert run("extract", "diginetica-categories", source, "--out", source) == 2
    assert "is the input" in capsys.readouterr().err
    assert source.read_text().startswith("itemId;categoryId")


def test_features_feed_the_movielens_layers(tmp_path, capsys, monkeypatch):
    """prepare + extract movielens give the layout configs/inputs/movielens/ reads (../features/ beside the
    prepared folder): the p-RNN stack trains a little and tests on it."""
    ml = write_movielens(tmp_path / "ml")
    assert run("prepare", ml / "ratings.csv", "--format", "movielens", "--min-item-support", 1,
               "--test-days", 2, "--valid-days", 2, "--out", tmp_path / "data" / "prepared") == 0
    assert run("extract", "movielens", ml, "--out", tmp_path / "data" / "features", "--min-df", 1) == 0
    monkeypatch.chdir(tmp_path)  # runs/ of the stack land here
    stack = [f"--config={REPO / 'configs' / layer}.yaml" for layer in
             ("trainer/default", "data/movielens", "model/prnn", "inputs/movielens/prnn")]
    common = [*stack, "--data.data_dir", tmp_path / "data" / "prepared", "--data.batch_size", 8,
              "--model.init_args.n_sample", 16, "--trainer.enable_progress_bar", "false"]
    assert run("fit", *common, "--trainer.max_epochs", 1, "--trainer.default_root_dir", "runs/ml") == 0
    ckpt = tmp_path / "runs" / "ml" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert run("test", *common, "--ckpt_path", ckpt) == 0
    assert "test_mrr@20" in capsys.readouterr().out


@pytest.mark.skipif(not ML_SMALL.is_dir(), reason=f"MovieLens latest-small not found at {ML_SMALL}")
def test_real_movielens_latest_small(tmp_path, capsys):
    assert run("extract", "movielens", ML_SMALL, "--out", tmp_path / "features") == 0
    assert "9,742 movies x" in capsys.readouterr().out
    props = pd.read_parquet(tmp_path / "features" / "properties.parquet")
    assert len(props) == 9742 and props["year"].notna().sum() == 9730


@pytest.mark.skipif(not DIGINETICA_CATEGORIES.is_file(),
                    reason=f"Diginetica product-categories.csv not found at {DIGINETICA_CATEGORIES}")
def test_real_diginetica_categories(tmp_path, capsys):
    out = tmp_path / "properties.parquet"
    assert run("extract", "diginetica-categories", DIGINETICA_CATEGORIES, "--out", out) == 0
    assert "184,047 items, 1,217 categories" in capsys.readouterr().out
