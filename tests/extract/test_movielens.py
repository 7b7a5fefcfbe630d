"""MovieLens / Diginetica item features: TF-IDF text + genre/year properties in the feature-store layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sessrec.errors import DataError
from sessrec.features import load_properties, load_sparse
from sessrec.extract.movielens import parse_title, write_diginetica_categories, write_movielens_features

SHARED = Path(__file__).parents[2].parent / "shared" / "data"
ML_SMALL = SHARED / "movielens-latest-small" / "ml-latest-small"

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,Toy Story 2 (1999),Animation|Children|Comedy
3,"Dark Knight, The (2008)",Action|Crime|Drama
4,Untitled Project,(no genres listed)
"""
TAGS = """userId,movieId,tag,timestamp
1,1,pixar animation,1
2,2,pixar animation,2
3,3,dark hero,3
4,3,batman,4
"""


@pytest.fixture
def ml_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ml"
    root.mkdir()
    (root / "movies.csv").write_text(MOVIES)
    (root / "tags.csv").write_text(TAGS)
    return root


def test_parse_title():
    assert parse_title("Toy Story (1995)") == ("Toy Story", 1995.0)
    assert parse_title("Dark Knight, The (2008) ") == ("Dark Knight, The", 2008.0)
    title, year = parse_title("Untitled Project")
    assert title == "Untitled Project" and math.isnan(year)


def test_writes_feature_store_layout(ml_dir, tmp_path):
    out = tmp_path / "features"
    paths = write_movielens_features(ml_dir, out)
    assert paths["text"] == out / "text.npz" and (out / "text.ids.txt").is_file()
    assert (out / "text.ids.txt").read_text().split() == ["1", "2", "3", "4"]
    catalogue = np.array(["3", "1", "2", "9"], dtype=object)  # reordered, "9" unknown, "4" not in it
    text = load_sparse(paths["text"], catalogue)
    assert text.mask.tolist() == [True, True, True, False]
    # min_df 2: only terms in >= 2 movies survive ("toy", "story", "toy story", "pixar", "animation", ...)
    assert text.csr[0].nnz == 0  # "dark knight the", "dark hero", "batman" are each in one movie only
    assert text.csr[1].nnz > 0 and text.csr[2].nnz > 0
    np.testing.assert_allclose(text.csr[1].toarray(), text.csr[2].toarray(), rtol=1e-6)  # same terms
    props = load_properties(paths["properties"], catalogue, numeric=["year"], categorical=["genre"])
    assert props.vocabularies == (("Action", "Adventure", "Animation"),)
    assert props.categorical[:, 0].tolist() == [1, 2, 3, 0]
    assert props.numeric[:, 0].tolist() == [2008.0, 1995.0, 1999.0, 0.0]
    frame = pd.read_parquet(paths["properties"])
    row = frame.set_index("item_id").loc["4"]
    assert pd.isna(row["genre"]) and math.isnan(row["year"])  # "(no genres listed)", no year


def test_without_tags_uses_titles(ml_dir, tmp_path):
    (ml_dir / "tags.csv").unlink()
    paths = write_movielens_features(ml_dir, tmp_path / "f", min_df=1, ngram_max=1)
    text = load_sparse(paths["text"], np.array(["1", "2", "3", "4"], dtype=object))
    assert text.csr.shape[0] == 4 and (np.diff(text.csr.indptr) > 0).all()


def test_errors_name_the_file(ml_dir, tmp_path):
    (ml_dir / "movies.csv").write_text("movieId,name\n1,x\n")
    with pytest.raises(DataError, match="movies.csv: column 'title'"):
        write_movielens_features(ml_dir, tmp_path / "f")
    with pytest.raises(DataError, match="not found"):
        write_movielens_features(tmp_path / "nowhere", tmp_path / "f")


def test_diginetica_categories(tmp_path):
    csv = tmp_path / "product-categories.csv"
    csv.write_text("itemId;categoryId\n10;7\n11;7\n12;3\n")
    out = write_diginetica_categories(csv, tmp_path / "dg" / "properties.parquet")
    props = load_properties(out, np.array(["12", "10", "99"], dtype=object), categorical=["category"])
    assert props.vocabularies == (("3", "7"),)
    assert props.categorical[:, 0].tolist() == [1, 2, 0]


@pytest.mark.data
def test_real_movielens_sample(tmp_path):
    if not (ML_SMALL / "movies.csv").is_file():
        pytest.skip(f"{ML_SMALL} absent (real samples live outside the repository)")
    paths = write_movielens_features(ML_SMALL, tmp_path)
    ids = np.array((tmp_path / "text.ids.txt").read_text().split(), dtype=object)
    assert len(ids) == 9742  # every movie of latest-small
    text = load_sparse(paths["text"], ids)
    assert text.csr.shape[1] > 1000 and (np.diff(text.csr.indptr) > 0).mean() > 0.85  # ~90%: min_df 2
    props = load_properties(paths["properties"], ids, numeric=["year"], categorical=["genre"])
    assert len(props.vocabularies[0]) >= 15 and props.numeric_present[:, 0].float().mean() > 0.99
