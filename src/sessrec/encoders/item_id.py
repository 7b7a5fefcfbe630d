"""`id`: a learned embedding per item (the ID subnet's input), its own table or the output item table."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sessrec.encoders.base import FeatureEncoder
from sessrec.features.catalogue import Catalogue
from sessrec.models.gru import uniform_init_
from sessrec.models.rows import gather_rows, mark_row_sparse


class ItemIdEncoder(FeatureEncoder):
    """An embedding table of `dim` values per item.

    Args:
        dim: embedding size.
        sparse_grad: row-sparse gradients (for `sessrec.training.optim.AdagradMomentum`; False for Adam/AdamW).
            Unused with `shared_with_output` (the table follows the model's `sparse_grad`).
        shared_with_output: no table of its own: the embedding of an item is its subnet's columns of
            the output item table (GRU4Rec's "constrained embedding"). Only as the encoder of a
            `ParallelRNN` subnet, which reads the rows and feeds them to the subnet; `dim` must equal
            that subnet's last layer size.
    """

    name = "id"

    def __init__(self, dim: int = 100, sparse_grad: bool = True, shared_with_output: bool = False) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"ItemIdEncoder: dim must be positive, got {dim}")
        self.dim, self.sparse_grad, self.shared_with_output = dim, sparse_grad, shared_with_output
        self.weight: nn.Parameter | None = None

    def build(self, catalogue: Catalogue) -> int:
        if self.shared_with_output:
            return self.dim  # the rows come from the model's output item table
        weight = nn.Parameter(torch.empty(catalogue.n_items, self.dim))  # (N, dim)
        self.weight = mark_row_sparse(weight, self.sparse_grad)
        uniform_init_(self.weight, catalogue.n_items, self.dim)
        return self.dim

    def extend(self, catalogue: Catalogue, new_ids: np.ndarray) -> Tensor:
        """New items have no learned embedding: zero rows (with `shared_with_output` the model extends
        the output table instead). They carry no features of their own: all False."""
        if self.weight is not None:
            zeros = self.weight.new_zeros(len(new_ids), self.dim)  # (M, dim)
            self.weight = mark_row_sparse(nn.Parameter(torch.cat([self.weight.detach(), zeros])), self.sparse_grad)
        return torch.zeros(len(new_ids), dtype=torch.bool)

    def forward(self, items: Tensor) -> Tensor:
        """items (B,) -> (B, dim)."""
        self.check_bound()
        if self.weight is None:
            raise RuntimeError("ItemIdEncoder(shared_with_output=True) has no table: its ParallelRNN reads "
                               "the output item table's rows for it")
        return gather_rows(self.weight, items, self.sparse_grad)  # (B, dim)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", shared_with_output=True" if self.shared_with_output else "")
