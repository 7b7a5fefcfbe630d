"""Bad item tables: ragged rows, float ids, infinite or huge prices, one extreme price among the buckets.

Every refusal is a one-line DataError naming the file, raised before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sessrec.errors import DataError
from sessrec.extract.movielens import write_movielens_features
from sessrec.extract.properties import extract_properties, log_buckets
from sessrec.extract.text import extract_text
from sessrec.features import load_properties

SHOP = "sku,title,price,brand,category\nSKU-0001,slim linen shirt,30.30,Northwind,shirts\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- ragged rows


def test_text_extraction_refuses_an_unquoted_separator(tmp_path: Path) -> None:
    items = write(tmp_path / "shop.csv", SHOP + "SKU-0002,mug, large,21.14,Kaffa,kitchen\n")
    out = tmp_path / "text.npz"
    with pytest.raises(DataError) as err:
        extract_text(items, out, "sku", ["title"], min_df=1)
    assert str(err.value) == (
        f"{items}: data row 2 has 6 fields, the header has 5 (an unquoted separator inside a value? quote it)"
    )
    assert not out.exists()


def test_text_extraction_reads_quoted_separators(tmp_path: Path) -> None:
    items = write(tmp_path / "shop.csv", SHOP + 'SKU-0002,"mug, large",21.14,Kaffa,kitchen\n')
    res = extract_text(items, tmp_path / "text.npz", "sku", ["title"], min_df=1, ngram_range=(1, 1))
    assert res.texts == ["slim linen shirt", "mug, large"]


def test_properties_refuse_an_unquoted_separator(tmp_path: Path) -> None:
    items = write(tmp_path / "shop.tsv", "sku\tbrand\nA\tNorthwind\nB\tKaffa\tkitchen\n")
    out = tmp_path / "props.parquet"
    with pytest.raises(DataError, match=rf"^{items}: data row 2 has 3 fields, the header has 2 "):
        extract_properties(items, out, "sku", categorical=["brand"])
    assert not out.exists()


def test_movielens_refuses_an_unquoted_separator(tmp_path: Path) -> None:
    root = tmp_path / "ml"
    root.mkdir()
    movies = write(root / "movies.csv", "movieId,title,genres\n1,Toy Story (1995),Animation\n"
                                        "2,Dark Knight, The (2008),Action\n")  # fmt: skip
    with pytest.raises(DataError, match=rf"^{movies}: data row 2 has 4 fields, the header has 3 "):
        write_movielens_features(root, tmp_path / "features")
    assert not (tmp_path / "features" / "text.npz").exists()


# ---------------------------------------------------------------- float ids


def test_float_item_ids_match_integer_ids(tmp_path: Path) -> None:
    """A parquet with item ids stored as floats (16.0) is keyed "16", as the prepared item map is."""
    items = tmp_path / "items.parquet"
    titles = ["red hat", "blue hat"]
    pd.DataFrame({"item": [16.0, 17.0], "title": titles, "price": [3.0, 4.0]}).to_parquet(items)
    res = extract_text(items, tmp_path / "text.npz", "item", ["title"], min_df=1)
    assert res.item_ids == ["16", "17"]
    table = extract_properties(items, tmp_path / "p.parquet", "item", price_col="price")
    assert table["item_id"].tolist() == ["16", "17"]
    feature = tmp_path / "f.parquet"
    pd.DataFrame({"item_id": [17.0, 16.0], "size": [2.0, 1.0]}).to_parquet(feature)
    props = load_properties(feature, np.array(["16", "17"], dtype=object), numeric=["size"])
    assert props.mask.all() and props.numeric[:, 0].tolist() == [1.0, 2.0]


def test_non_integral_float_item_ids_are_refused(tmp_path: Path) -> None:
    items = tmp_path / "items.parquet"
    pd.DataFrame({"item": [16.0, 16.5], "title": ["red hat", "blue hat"]}).to_parquet(items)
    with pytest.raises(DataError, match=rf"^{items}: column 'item' holds 1 non-integer id\(s\), e.g. 16.5"):
        extract_text(items, tmp_path / "text.npz", "item", ["title"], min_df=1)
    feature = tmp_path / "f.parquet"
    pd.DataFrame({"item_id": [16.0, 16.5], "size": [2.0, 1.0]}).to_parquet(feature)
    with pytest.raises(DataError, match=rf"^{feature}: column 'item_id' holds 1 non-integer id"):
        load_properties(feature, np.array(["16"], dtype=object), numeric=["size"])


# ---------------------------------------------------------------- prices


def priced(tmp_path: Path, bad: str, n: int = 100) -> Path:
    prices = np.random.default_rng(0).lognormal(3, 0.5, n).round(2).astype(str)
    prices[7] = bad
    path = tmp_path / "items.csv"
    pd.DataFrame({"sku": [f"S{i}" for i in range(n)], "price": prices}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("bad, shown", [("inf", "inf"), ("1e300", "1e+300")])
def test_infinite_or_huge_price_is_refused_before_writing(tmp_path: Path, bad: str, shown: str) -> None:
    items, out = priced(tmp_path, bad), tmp_path / "props.parquet"
    with pytest.raises(DataError) as err:
        extract_properties(items, out, "sku", price_col="price")
    assert str(err.value) == (
        f"{items}: column 'price' holds 1 value(s) that are infinite or beyond float32's range, "
        f"e.g. {shown} for item 'S7'"
    )
    assert not out.exists()


def test_infinite_price_in_a_separate_price_table(tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", "sku,brand\nA,x\nB,y\n")
    tx = write(tmp_path / "tx.csv", "sku,price\nA,3.5\nB,-inf\nB,4\n")
    with pytest.raises(DataError, match=rf"^{tx}: column 'price' holds 1 value\(s\) .* -inf for item 'B'$"):
        extract_properties(items, tmp_path / "p.parquet", "sku", price_col="price", prices=tx)


def test_infinite_numeric_column_is_refused(tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", "sku,weight\nA,1.5\nB,inf\n")
    with pytest.raises(DataError, match=rf"^{items}: column 'weight' holds 1 value\(s\) .* for item 'B'$"):
        extract_properties(items, tmp_path / "p.parquet", "sku", numeric=["weight"])


def test_one_extreme_price_does_not_collapse_the_buckets(tmp_path: Path) -> None:
    table = extract_properties(priced(tmp_path, "1e30"), tmp_path / "p.parquet", "sku", price_col="price")
    counts = table["price_bucket"].value_counts()
    assert len(counts) >= 8 and counts.max() < 50  # was: 99 of 100 items in bucket 0
    assert table.loc[7, "price_bucket"] == "9"  # the extreme price joins the last bucket


def test_log_buckets_warn_when_one_bucket_holds_nearly_all(caplog, monkeypatch) -> None:
    sessrec_log = logging.getLogger("sessrec")  # through caplog, whichever test set up the CLI's handler
    monkeypatch.setattr(sessrec_log, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(sessrec_log, "propagate", True)
    prices = np.r_[np.full(95, 10.0), np.linspace(30, 100, 5)]  # no far-out price, yet crowded
    with caplog.at_level(logging.WARNING, logger="sessrec.extract.properties"):
        codes = log_buckets(prices, 10)
    assert (codes == 0).sum() == 95 and codes[-1] == 9
    assert "bucket 0 holds 95 of 100 priced items" in caplog.text
