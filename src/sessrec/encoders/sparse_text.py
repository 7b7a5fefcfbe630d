"""`sparse_text`: sparse (TF-IDF) item vectors as weighted sums of learned term embeddings.

The CSR matrix lives in three buffers (indptr, indices, data); a batch gathers only its items' terms,
and the term table is read with `gather_rows`, so its gradient is row-sparse over the batch's terms:
a 1M-term vocabulary never produces a dense 1M x dim gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from sessrec.encoders.base import FeatureEncoder, MissingFill
from sessrec.encoders.dense import MissingMode
from sessrec.errors import DataError
from sessrec.features.catalogue import Catalogue
from sessrec.features.store import load_sparse
from sessrec.models.rows import gather_rows, mark_row_sparse


def bag_terms(indptr: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """Flat CSR positions of the items' entries and the batch row of each: (M,), (M,)."""
    starts = indptr[items]  # (B,)
    lengths = indptr[items + 1] - starts  # (B,)
    bag = torch.repeat_interleave(torch.arange(items.shape[0], device=items.device), lengths)  # (M,)
    first = torch.cumsum(lengths, 0) - lengths  # (B,) offset of each bag in the flat list
    pos = torch.arange(bag.shape[0], device=items.device) - first[bag] + starts[bag]  # (M,)
    return pos, bag


class SparseTextEncoder(FeatureEncoder):
    """sum_j w_ij * E[j] over item i's non-zero terms j (an EmbeddingBag with per-term weights).

    Args:
        path: a ``.npz`` CSR feature file (see `sessrec.features.store`), relative to the data folder.
        dim: term embedding size = output size.
        sparse_grad: row-sparse gradient for the term table (False for Adam/AdamW).
        missing: what items without terms get: a "learned" vector (zero-initialised) or "zeros".
    """

    name = "sparse_text"

    def __init__(
        self, path: str, dim: int = 100, sparse_grad: bool = True, missing: MissingMode = "learned"
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"SparseTextEncoder: dim must be positive, got {dim}")
        self.path, self.dim, self.sparse_grad, self.missing_mode = path, dim, sparse_grad, missing
        self.weight: nn.Parameter | None = None
        self.fill: MissingFill | None = None

    def build(self, catalogue: Catalogue) -> int:
        feats = load_sparse(catalogue.resolve(self.path), catalogue.item_ids)
        csr = feats.csr
        self.register_buffer("indptr", torch.from_numpy(csr.indptr.astype(np.int64)), persistent=False)
        self.register_buffer("indices", torch.from_numpy(csr.indices.astype(np.int64)), persistent=False)
        self.register_buffer("term_weights", torch.from_numpy(csr.data.astype(np.float32)), persistent=False)
        present = feats.mask & torch.from_numpy(np.diff(csr.indptr) > 0)  # (N,) rows with terms
        self.register_buffer("present", present, persistent=False)
        weight = nn.Parameter(torch.randn(csr.shape[1], self.dim) * self.dim**-0.5)  # (V, dim)
        self.weight = mark_row_sparse(weight, self.sparse_grad)
        self.fill = MissingFill(self.dim, self.missing_mode == "learned")
        return self.dim

    def extend(self, catalogue: Catalogue, new_ids: np.ndarray) -> Tensor:
        path = catalogue.resolve(self.path)
        csr = load_sparse(path, new_ids).csr  # (M, V): the same file, so the same term columns
        if csr.shape[1] != self.weight.shape[0]:
            raise DataError(f"{path}: {csr.shape[1]:,} terms, but the model was trained on {self.weight.shape[0]:,}")
        self.indptr = torch.cat([self.indptr, torch.from_numpy(csr.indptr[1:].astype(np.int64)) + self.indptr[-1]])
        self.indices = torch.cat([self.indices, torch.from_numpy(csr.indices.astype(np.int64))])
        self.term_weights = torch.cat([self.term_weights, torch.from_numpy(csr.data.astype(np.float32))])
        present = torch.from_numpy(np.diff(csr.indptr) > 0)  # (M,) rows with terms
        self.present = torch.cat([self.present, present])
        return present

    def forward(self, items: Tensor) -> Tensor:
        """items (B,) -> (B, dim)."""
        self.check_bound()
        pos, bag = bag_terms(self.indptr, items)  # (M,), (M,)
        terms = gather_rows(self.weight, self.indices[pos], self.sparse_grad)  # (M, dim)
        weighted = terms * self.term_weights[pos].unsqueeze(1)  # (M, dim)
        out = weighted.new_zeros(items.shape[0], self.dim).index_add_(0, bag, weighted)  # (B, dim)
        return self.fill(out, self.present[items])  # (B, dim)
