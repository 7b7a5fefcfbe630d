"""Item features of MovieLens (latest-small layout) and of Diginetica, in the feature-store layout.

MovieLens (``movies.csv``: movieId,title,genres; ``tags.csv``: userId,movieId,tag,timestamp):

- ``text.npz`` + ``text.ids.txt``: TF-IDF (scikit-learn ``TfidfVectorizer``, unigrams + bigrams,
  ``min_df`` 2, sublinear tf) over the title (year removed) followed by the movie's user tags;
- ``properties.parquet``: ``item_id`` (movieId), ``genre`` (the first listed genre, categorical;
  null for "(no genres listed)") and ``year`` (numeric, parsed from the "(1995)" suffix of the title;
  null when absent).

Diginetica (``product-categories.csv``: itemId;categoryId): ``properties.parquet`` with ``item_id``
and ``category`` (categorical, as a string).

    python -m sessrec extract movielens ../shared/data/movielens-latest-small/ml-latest-small \
        --out data/movielens/features
    python -m sessrec extract diginetica-categories ../shared/data/diginetica/product-categories.csv \
        --out data/diginetica-sample/features/properties.parquet
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from sessrec.data.fields import header_names, read_fields, text_options
from sessrec.errors import DataError, first_line
from sessrec.extract.text import tfidf
from sessrec.features.store import write_properties, write_sparse

PathLike = str | os.PathLike

_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")  # "Title (1995)", also "(2007-)" series
NO_GENRE = "(no genres listed)"


def _read_csv(path: Path, columns: list[str], sep: str = ",") -> pd.DataFrame:
    """Every column of a CSV file as text ("" for an empty field); DataError for a missing file or column,
    a row with more fields than the header, or an unreadable file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opts = text_options(sep, keep_default_na=False)
    try:
        found = header_names(path, **opts)
        missing = [c for c in columns if c not in found]
        if missing:
            raise DataError(f"{path}: column '{missing[0]}' not found (columns: {', '.join(found)})")
        return read_fields(path, found, found, True, dtype=str, **opts)
    except DataError:
        raise
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"{path}: cannot read as csv ({first_line(err)})") from None


def parse_title(title: str) -> tuple[str, float]:
    """(title without the year suffix, year or NaN): "Toy Story (1995)" -> ("Toy Story", 1995.0)."""
    title = title.strip()
    match = _YEAR.search(title)
    if not match:
        return title, float("nan")
    return title[: match.start()].strip(), float(match.group(1))


def movielens_texts(movies: pd.DataFrame, tags: pd.DataFrame) -> pd.Series:
    """Title (no year) + all user tags of each movie, one string per movie, indexed like `movies`."""
    tag_text = (
        tags.assign(tag=tags["tag"].astype(str).str.strip())
        .groupby("movieId", sort=False)["tag"]
        .agg(" ".join)
    )
    titles = movies["title"].map(lambda t: parse_title(t)[0])
    joined = movies["movieId"].map(tag_text).fillna("")
    return (titles + " " + joined).str.strip()


def movielens_properties(movies: pd.DataFrame) -> pd.DataFrame:
    """item_id, genre (first listed, categorical), year (numeric) per movie."""
    first = movies["genres"].str.split("|").str[0].str.strip()
    genre = first.where((first != NO_GENRE) & (first != ""), None)
    year = movies["title"].map(lambda t: parse_title(t)[1]).astype(np.float64)
    return pd.DataFrame({"item_id": movies["movieId"].astype(str), "genre": genre, "year": year})


def write_movielens_features(
    ml_dir: PathLike, out_dir: PathLike, min_df: int = 2, ngram_max: int = 2
) -> dict[str, Path]:
    """Write ``text.npz`` (+ ids) and ``properties.parquet`` for MovieLens into `out_dir`.

    Args:
        ml_dir: folder with ``movies.csv`` and ``tags.csv`` (``tags.csv`` optional: titles only).
        out_dir: feature folder (created).
        min_df: TfidfVectorizer min_df (terms in fewer movies are dropped).
        ngram_max: longest n-gram (1 = unigrams).

    Returns: {"text": path, "properties": path}.
    """
    ml_dir, out_dir = Path(ml_dir), Path(out_dir)
    movies = _read_csv(ml_dir / "movies.csv", ["movieId", "title", "genres"])
    if movies["movieId"].duplicated().any():
        raise DataError(f"{ml_dir / 'movies.csv'}: duplicate movieId values")
    tags_path = ml_dir / "tags.csv"
    tags = (
        _read_csv(tags_path, ["movieId", "tag"])
        if tags_path.is_file()
        else pd.DataFrame({"movieId": pd.Series(dtype=str), "tag": pd.Series(dtype=str)})
    )
    texts = movielens_texts(movies, tags)
    try:
        matrix, _ = tfidf(texts.tolist(), ngram_range=(1, ngram_max), min_df=min_df, sublinear_tf=True)  # (movies, V)
    except DataError as err:  # empty vocabulary after min_df
        raise DataError(f"{ml_dir}: no TF-IDF terms ({err})") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = movies["movieId"].astype(str).tolist()
    return {
        "text": write_sparse(out_dir / "text.npz", matrix, ids),
        "properties": write_properties(out_dir / "properties.parquet", movielens_properties(movies)),
    }


def write_diginetica_categories(categories_csv: PathLike, out_path: PathLike) -> Path:
    """Write ``item_id``, ``category`` (string) from Diginetica's product-categories.csv (itemId;categoryId).

    An item listed twice keeps its first category.
    """
    categories_csv = Path(categories_csv)
    frame = _read_csv(categories_csv, ["itemId", "categoryId"], sep=";")
    frame = frame.drop_duplicates("itemId", keep="first")
    out = pd.DataFrame({"item_id": frame["itemId"].str.strip(), "category": frame["categoryId"].str.strip()})
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    return write_properties(out_path, out)
