"""TF-IDF item text features: an items table's text columns -> sparse CSR float32 (`write_sparse` layout)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sessrec.data.readers import read_item_table
from sessrec.errors import ConfigError, DataError
from sessrec.extract import normalise_ids
from sessrec.features.store import write_sparse
from sessrec.io import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextResult:
    matrix: sp.csr_matrix  # (n_items, V) float32, rows L2-normalised
    item_ids: list[str]  # (n_items,)
    vocabulary: list[str]  # (V,) term of each column
    texts: list[str]  # (n_items,) the joined input text


def tfidf(
    texts: Sequence[str],
    ngram_range: tuple[int, int] = (1, 2),
    min_df: float = 1,
    max_df: float = 1.0,
    max_features: int | None = None,
    sublinear_tf: bool = False,
) -> tuple[sp.csr_matrix, list[str]]:
    """Fit TF-IDF on `texts` (n,); returns (CSR (n, V) float32, vocabulary (V,))."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if ngram_range[0] < 1 or ngram_range[1] < ngram_range[0]:
        raise ConfigError(f"--ngram: invalid range {ngram_range} (need 1 <= min <= max)")
    vec = TfidfVectorizer(
        ngram_range=ngram_range,
        min_df=min_df,
        max_df=max_df,
        max_features=max_features,
        sublinear_tf=sublinear_tf,
        dtype=np.float32,
    )
    try:
        matrix = vec.fit_transform(texts)
    except ValueError as err:  # "empty vocabulary", "max_df corresponds to < documents than min_df"
        raise DataError(f"TF-IDF: {err}") from None
    return sp.csr_matrix(matrix, dtype=np.float32), [str(t) for t in vec.get_feature_names_out()]


def read_item_texts(
    items: str | os.PathLike, id_col: str, text_cols: Sequence[str], numeric_ids: bool = False
) -> tuple[list[str], list[str]]:
    """Item ids (n,) and each item's `text_cols` joined with spaces (n,); duplicate ids are a DataError."""
    frame = read_item_table(items, [id_col, *text_cols])
    ids = normalise_ids(frame[id_col].tolist(), numeric_ids)
    if len(set(ids)) != len(ids):
        dup = frame[id_col][frame[id_col].duplicated()].iloc[0]
        raise DataError(f"{items}: column '{id_col}' holds duplicate item ids (first: '{dup}')")
    parts = [frame[c].astype("string").fillna("").to_numpy(dtype=object) for c in text_cols]  # c x (n,)
    return ids, [" ".join(p for p in row if p).strip() for row in zip(*parts)]


def extract_text(
    items: str | os.PathLike,
    out: str | os.PathLike,
    id_col: str,
    text_cols: Sequence[str],
    numeric_ids: bool = False,
    **tfidf_kwargs,
) -> TextResult:
    """Read `items`, join `text_cols` per row, fit TF-IDF, write ``out`` (.npz), its ids and vocabulary."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out {out}: text features are written as .npz")
    ids, texts = read_item_texts(items, id_col, text_cols, numeric_ids)
    matrix, vocab = tfidf(texts, **tfidf_kwargs)
    write_sparse(out, matrix, ids)
    with atomic_write(out.with_name(out.name[: -len(".npz")] + ".vocab.txt")) as tmp:
        tmp.write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    nnz = np.diff(matrix.indptr)
    log.info(
        "%s: %s items x %s terms, %.1f nnz/item (min %d, max %d), %s empty rows",
        out.name,
        f"{matrix.shape[0]:,}",
        f"{matrix.shape[1]:,}",
        nnz.mean() if len(nnz) else 0.0,
        nnz.min() if len(nnz) else 0,  # not min(initial=0): that is 0 whatever the rows hold
        nnz.max() if len(nnz) else 0,
        f"{int((nnz == 0).sum()):,}",
    )
    return TextResult(matrix, ids, vocab, texts)
