"""Built-in encoders: output shapes and values, missing items, sparse gradients, config parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from jsonargparse import ArgumentParser

from sessrec.encoders import (
    Catalogue,
    DenseEncoder,
    FeatureEncoder,
    ItemIdEncoder,
    PropertyEncoder,
    SparseTextEncoder,
)
from sessrec.errors import DataError
from sessrec.features import write_dense, write_properties, write_sparse

N = 6  # catalogue items "0".."5"; item 5 has no features


@pytest.fixture()
def catalogue(tmp_path: Path) -> Catalogue:
    ids = [str(i) for i in range(N - 1)]
    rng = np.random.default_rng(0)
    write_dense(tmp_path / "image.npy", rng.standard_normal((N - 1, 4)).astype(np.float32) * 3, ids)
    words = rng.random((N - 1, 30)) * (rng.random((N - 1, 30)) < 0.2)  # (5, 30)
    words[0] = 0.0  # item 0 has an empty text: treated as missing by the encoder
    text = sp.csr_matrix(words, dtype=np.float32)
    write_sparse(tmp_path / "text.npz", text, ids)
    props = pd.DataFrame(
        {"item_id": ids, "price": [1.0, 10.0, 100.0, None, 5.0], "brand": ["x", "y", None, "x", "z"]}
    )
    write_properties(tmp_path / "props.parquet", props)
    return Catalogue(np.array([str(i) for i in range(N)], dtype=object), tmp_path)


def test_item_id_encoder_shape_and_sparse_gradient(catalogue: Catalogue) -> None:
    enc = ItemIdEncoder(dim=8)
    enc.bind(catalogue)
    out = enc(torch.tensor([1, 3, 1]))  # (3, 8)
    assert out.shape == (3, 8) and enc.output_size == 8
    out.sum().backward()
    grad = enc.weight.grad
    assert grad.is_sparse and grad.coalesce().indices()[0].tolist() == [1, 3]
    assert torch.equal(grad.to_dense()[1], torch.full((8,), 2.0))


def test_lifecycle_errors(catalogue: Catalogue) -> None:
    enc = ItemIdEncoder(dim=4)
    with pytest.raises(RuntimeError, match="bind"):
        _ = enc.output_size
    with pytest.raises(RuntimeError, match="bind"):
        enc(torch.tensor([0]))
    enc.bind(catalogue)
    with pytest.raises(RuntimeError, match="already"):
        enc.bind(catalogue)


def test_dense_encoder_values_missing_and_projection(catalogue: Catalogue) -> None:
    enc = DenseEncoder("image.npy", normalize=True)
    enc.bind(catalogue)
    out = enc(torch.tensor([0, 5, 2]))  # (3, 4)
    assert enc.output_size == 4 and out.shape == (3, 4)
    assert torch.allclose(out[[0, 2]].norm(dim=1), torch.ones(2))
    assert torch.equal(out[1], enc.fill.vector.detach())  # item 5 has no vector: the learned one
    out.sum().backward()
    assert torch.equal(enc.fill.vector.grad, torch.ones(4))  # only the missing row feeds it
    assert "values" not in enc.state_dict()  # features are re-read at bind, not checkpointed
    proj = DenseEncoder("image.npy", projection=3, missing="zeros")
    proj.bind(catalogue)
    assert proj.output_size == 3 and proj(torch.tensor([5, 1])).shape == (2, 3)
    assert proj.fill.vector is None
    assert torch.equal(proj(torch.tensor([5])), proj.proj.bias.detach().unsqueeze(0))  # zeros in


def test_dense_encoder_normalizes_huge_and_tiny_vectors(catalogue: Catalogue) -> None:
    """float32 squares overflow above ~1.8e19 (F.normalize alone gave zeros) and vanish below ~1e-23."""
    values = np.array([[3e19, 4e19], [3e37, -4e37], [3e-25, 4e-25], [0.0, 0.0], [3.0, 4.0]], np.float32)
    write_dense(catalogue.data_dir / "huge.npy", values, [str(i) for i in range(5)])
    enc = DenseEncoder("huge.npy", normalize=True)
    enc.bind(catalogue)
    out = enc.values[:5]  # (5, 2)
    want = torch.tensor([[0.6, 0.8], [0.6, -0.8], [0.6, 0.8], [0.0, 0.0], [0.6, 0.8]])
    assert torch.allclose(out, want, atol=1e-6), out


def test_dense_encoder_dimension_check(catalogue: Catalogue) -> None:
    with pytest.raises(DataError, match="image.npy: dimension 4 but 8 expected"):
        DenseEncoder("image.npy", dim=8).bind(catalogue)


def test_sparse_text_encoder_is_a_weighted_sum(catalogue: Catalogue) -> None:
    enc = SparseTextEncoder("text.npz", dim=5)
    enc.bind(catalogue)
    items = torch.tensor([3, 1, 0, 5, 1])
    out = enc(items)  # (5, 5)
    csr = sp.load_npz(catalogue.data_dir / "text.npz")
    dense = torch.from_numpy(csr.toarray())  # (5, 30) rows of items 0..4
    expected = dense[[3, 1]] @ enc.weight.detach()  # (2, 5)
    assert torch.allclose(out[[0, 1]], expected, atol=1e-6) and torch.equal(out[1], out[4])
    assert torch.equal(out[2], torch.zeros(5)) and torch.equal(out[3], torch.zeros(5))  # learned fill at 0
    out.sum().backward()
    grad = enc.weight.grad
    terms = set(csr[[3, 1]].indices.tolist())
    assert grad.is_sparse and set(grad.coalesce().indices()[0].tolist()) == terms
    assert torch.equal(enc.fill.vector.grad, torch.full((5,), 2.0))  # items 0 (empty) and 5 (absent)


def test_sparse_text_million_term_vocabulary_has_row_sparse_gradient(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, vocab, per_item, dim = 1000, 1_000_000, 5, 16
    cols = rng.integers(vocab, size=(n, per_item))  # (n, 5)
    rows = np.repeat(np.arange(n), per_item)
    csr = sp.csr_matrix((rng.random(n * per_item), (rows, cols.ravel())), shape=(n, vocab), dtype=np.float32)
    ids = [str(i) for i in range(n)]
    write_sparse(tmp_path / "big.npz", csr, ids)
    enc = SparseTextEncoder("big.npz", dim=dim)
    enc.bind(Catalogue(np.array(ids, dtype=object), tmp_path))
    batch = torch.tensor([3, 500, 999, 3])
    enc(batch).pow(2).sum().backward()
    grad = enc.weight.grad
    assert grad.is_sparse and grad.shape == (vocab, dim)
    nnz_rows = grad.coalesce().indices()[0]
    assert set(nnz_rows.tolist()) == set(cols[[3, 500, 999]].ravel().tolist())
    assert nnz_rows.numel() <= 3 * per_item and grad._values().numel() <= 3 * per_item * dim


def test_property_encoder_buckets_and_categories(catalogue: Catalogue) -> None:
    enc = PropertyEncoder("props.parquet", numeric=["price"], categorical=["brand"], n_buckets=2)
    enc.bind(catalogue)
    assert enc.output_size == 8 + 16
    assert enc.numeric_codes[:, 0].tolist() == [1, 2, 2, 0, 1, 0]  # median 7.5 splits 1, 5 | 10, 100
    assert enc.categorical_codes[:, 0].tolist() == [1, 2, 0, 1, 3, 0]
    out = enc(torch.tensor([3, 5]))  # (2, 24) both: price missing, item 5 entirely missing
    assert torch.equal(out[0, :8], out[1, :8])
    assert torch.equal(out[1, 8:], enc.categorical_embeddings[0].weight[0].detach())


def test_property_encoder_standardize_and_projection(catalogue: Catalogue) -> None:
    enc = PropertyEncoder("props.parquet", numeric=["price"], numeric_mode="standardize", projection=4)
    enc.bind(catalogue)
    z = enc.numeric_values[:, 0]
    present = torch.tensor([True, True, True, False, True, False])
    assert abs(float(z[present].mean())) < 1e-6 and torch.equal(z[~present], torch.zeros(2))
    assert enc.output_size == 4 and enc(torch.arange(N)).shape == (N, 4)
    with pytest.raises(ValueError, match="at least one"):
        PropertyEncoder("props.parquet")


def test_config_names_built_ins_by_class_name_or_import_path(catalogue: Catalogue) -> None:
    def model(encoders: dict[str, FeatureEncoder]) -> None: ...

    parser = ArgumentParser()
    parser.add_function_arguments(model, "model")
    cfg = parser.parse_object(
        {
            "model": {
                "encoders": {
                    "image": {
                        "class_path": "DenseEncoder",
                        "init_args": {"path": "image.npy", "projection": 3},
                    },
                    "text": {
                        "class_path": "sessrec.encoders.SparseTextEncoder",
                        "init_args": {"path": "text.npz"},
                    },
                    "id": {"class_path": "sessrec.encoders.item_id.ItemIdEncoder"},
                }
            }
        }
    )
    encoders = parser.instantiate(cfg).model.encoders
    assert isinstance(encoders["image"], DenseEncoder) and encoders["image"].projection == 3
    for enc in encoders.values():
        enc.bind(catalogue)
    assert [e.output_size for e in encoders.values()] == [3, 100, 100]
