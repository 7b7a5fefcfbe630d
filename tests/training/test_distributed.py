"""Which parameters are treated as row-sparse tables (left out of DDP, averaged by sessrec.training.distributed)."""

from __future__ import annotations

from torch import nn

from sessrec.models.gru4rec import GRU4Rec
from sessrec.models.rows import row_sparse_parameters


def test_gru4rec_tables_are_marked_only_with_sparse_grad():
    assert row_sparse_parameters(GRU4Rec(50, layers=[8])) == ["item_table"]
    assert row_sparse_parameters(GRU4Rec(50, layers=[8], sparse_grad=False)) == []
    onehot = GRU4Rec(50, layers=[8], input_mode="onehot")
    assert row_sparse_parameters(onehot) == ["item_table", "onehot.weight_x"]


def test_sparse_embeddings_are_included():
    net = nn.ModuleDict({"a": nn.Embedding(10, 4, sparse=True), "b": nn.Embedding(10, 4), "c": nn.Linear(4, 4)})
    assert row_sparse_parameters(net) == ["a.weight"]
