"""`id`: a learned embedding per item (the ID subnet's input)."""

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
        sparse_grad: row-sparse gradients (for `sessrec.optim.AdagradMomentum`; False for Adam/AdamW).
    """

    name = "id"

    def __init__(self, dim: int = 100, sparse_grad: bool = True) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"ItemIdEncoder: dim must be positive, got {dim}")
        self.dim, self.sparse_grad = dim, sparse_grad
        self.weight: nn.Parameter | None = None

    def build(self, catalogue: Catalogue) -> int:
        weight = nn.Parameter(torch.empty(catalogue.n_items, self.dim))  # (N, dim)
        self.weight = mark_row_sparse(weight, self.sparse_grad)
        uniform_init_(self.weight, catalogue.n_items, self.dim)
        return self.dim

    def forward(self, items: Tensor) -> Tensor:
        """items (B,) -> (B, dim)."""
        self.check_bound()
        return gather_rows(self.weight, items, self.sparse_grad)  # (B, dim)
