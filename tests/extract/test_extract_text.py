"""`extract text` and `extract properties` on the real H&M articles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sessrec.cli import main
from sessrec.errors import ConfigError, DataError
from sessrec.extract import neighbour_rate
from sessrec.extract.properties import extract_properties, log_buckets
from sessrec.extract.text import extract_text
from sessrec.features.store import load_properties, load_sparse

pytestmark = pytest.mark.data


def test_tfidf_on_articles(hm, tmp_path):
    out = tmp_path / "text.npz"
    res = extract_text(
        hm / "articles_sample.parquet", out, "article_id", ["prod_name", "detail_desc"], min_df=2
    )
    articles = pd.read_parquet(hm / "articles_sample.parquet")
    assert res.item_ids == [str(v) for v in articles["article_id"]]  # ids aligned to the table's rows
    m = sp.load_npz(out)
    assert m.format == "csr" and m.dtype == np.float32 and m.shape == (len(articles), len(res.vocabulary))
    assert (out.parent / "text.ids.txt").read_text().splitlines() == res.item_ids
    assert (out.parent / "text.vocab.txt").read_text().splitlines() == res.vocabulary
    vocab = set(res.vocabulary)
    assert {"leggings", "dress", "trousers", "cotton", "jersey", "high waist"} <= vocab  # unigrams + bigrams
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    assert np.allclose(norms[np.diff(m.indptr) > 0], 1.0, atol=1e-5)
    assert m.nnz / m.shape[0] > 10  # sparse, but real descriptions have tens of terms
    assert m.nnz < 0.05 * m.shape[0] * m.shape[1]
    # row of "Pola seamless leggings" holds "leggings"
    row = res.item_ids.index(
        str(articles["article_id"][articles["prod_name"].str.contains("leggings")].iloc[0])
    )
    assert m[row, res.vocabulary.index("leggings")] > 0
    # the store reads it back aligned to a catalogue in another order
    catalogue = np.array(res.item_ids[::-1], dtype=object)
    loaded = load_sparse(out, catalogue)
    assert abs(loaded.csr - m[::-1]).max() == 0


def test_tfidf_options_and_errors(hm, tmp_path):
    items = hm / "articles_sample.parquet"
    res = extract_text(
        items, tmp_path / "t.npz", "article_id", ["prod_name"], ngram_range=(1, 1), max_features=50
    )
    assert len(res.vocabulary) == 50 and all(" " not in t for t in res.vocabulary)
    with pytest.raises(DataError, match="column 'nope' not found"):
        extract_text(items, tmp_path / "t.npz", "article_id", ["nope"])
    with pytest.raises(ConfigError, match=".npz"):
        extract_text(items, tmp_path / "t.npy", "article_id", ["prod_name"])


def test_text_cli_reports_neighbour_rate(hm, tmp_path, capsys):
    out = tmp_path / "text.npz"
    argv = [
        "extract",
        "text",
        str(hm / "articles_sample.parquet"),
        "--out",
        str(out),
        "--id-col",
        "article_id",
        "--text-cols",
        "prod_name",
        "detail_desc",
        "--eval-col",
        "product_type_name",
    ]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "vocabulary" in text and "nnz/item" in text and "nearest neighbours" in text
    with pytest.raises(SystemExit) as info:
        main(argv[:3] + ["--out", str(out), "--id-col", "nope", "--text-cols", "prod_name"])
    assert info.value.code == 2
    assert "column 'nope' not found" in capsys.readouterr().err


def test_neighbour_rate_small():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    rate, chance = neighbour_rate(x, ["a", "a", "b", "b"], k=1)
    assert rate == 1.0 and chance == 0.5
    rate, _ = neighbour_rate(sp.csr_matrix(x), ["a", "a", "b", "b"], k=1, exclude=[0, 0, 1, 1])
    assert rate == 0.0  # the only same-label neighbour is in the excluded group


def test_log_buckets():
    p = np.array([1.0, 10.0, 100.0, np.nan, 0.0, 40.0])
    codes = log_buckets(p, 4)
    assert codes[0] == 0 and codes[2] == 3 and np.isnan(codes[3]) and np.isnan(codes[4])
    assert codes[1] == 2 and codes[5] == 3  # log10 40 = 1.6 -> floor(1.6 / 2 * 4) = 3
    assert np.all(np.diff(log_buckets(np.sort(np.random.default_rng(0).lognormal(size=50)), 5)) >= 0)


def test_properties_with_transaction_prices(hm, tmp_path):
    out = tmp_path / "props.parquet"
    table = extract_properties(
        hm / "articles_sample.parquet",
        out,
        "article_id",
        categorical=["product_type_name", "colour_group_name"],
        numeric=["product_type_no"],
        price_col="price",
        prices=hm / "transactions_sample.parquet",
        price_buckets=8,
    )
    assert list(table.columns) == [
        "item_id",
        "product_type_no",
        "product_type_name",
        "colour_group_name",
        "price",
        "price_bucket",
    ]
    tx = pd.read_parquet(hm / "transactions_sample.parquet")
    median = tx.groupby("article_id")["price"].median()
    some = str(median.index[0])
    assert table.set_index("item_id").loc[some, "price"] == pytest.approx(median.iloc[0])
    assert table["price"].notna().sum() == table["price_bucket"].notna().sum() > 0
    ids = table["item_id"].to_numpy(dtype=object)
    props = load_properties(
        out, ids, numeric=["price", "product_type_no"], categorical=["product_type_name", "price_bucket"]
    )
    assert props.mask.all()
    assert props.cardinalities[1] <= 9  # 8 buckets + missing
    # a higher bucket never has a lower price
    frame = table.dropna(subset=["price"])
    by_bucket = frame.groupby("price_bucket")["price"].agg(["min", "max"]).sort_index()
    assert (by_bucket["min"].to_numpy()[1:] >= by_bucket["max"].to_numpy()[:-1]).all()


def test_csv_items_keep_string_ids(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text(
        "id,title,desc\n007,red summer dress,light cotton\n010,blue dress,\n011,red shoes,leather\n"
    )
    res = extract_text(items, tmp_path / "t.npz", "id", ["title", "desc"], min_df=1, ngram_range=(1, 1))
    assert res.item_ids == ["007", "010", "011"] and res.texts[1] == "blue dress"
    assert {"red", "dress", "cotton", "leather"} <= set(res.vocabulary)
    assert extract_text(items, tmp_path / "u.npz", "id", ["title"], numeric_ids=True).item_ids == [
        "7",
        "10",
        "11",
    ]


def test_tfidf_log_reports_the_real_min_and_max_terms_per_item(tmp_path, caplog, monkeypatch):
    """The summary line once said "min 0" for every table (`nnz.min(initial=0)`)."""
    import logging

    sessrec_log = logging.getLogger("sessrec")  # through caplog, whichever test set up the CLI's handler
    monkeypatch.setattr(sessrec_log, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(sessrec_log, "propagate", True)
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\na,red cotton dress\nb,blue cotton dress with pockets\nc,red wool hat\n")
    with caplog.at_level(logging.INFO, logger="sessrec.extract.text"):
        res = extract_text(items, tmp_path / "t.npz", "item_id", ["text"], ngram_range=(1, 1), min_df=1)
    nnz = np.diff(res.matrix.indptr)
    assert nnz.tolist() == [3, 5, 3]
    assert "3.7 nnz/item (min 3, max 5), 0 empty rows" in caplog.text
