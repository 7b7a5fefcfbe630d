"""Item-kNN baseline of the GRU4Rec papers: items that co-occur with the current item in sessions.

s(i, j) = co(i, j) / ((supp_i + lambda)^alpha * (supp_j + lambda)^(1 - alpha)), where co(i, j) is the
number of training sessions containing both items and supp_i the number containing i (a session counts
once however often it repeats an item). alpha = 0.5 is a regularised cosine, alpha = 1 a confidence.
Each item keeps only its n_sims most similar other items (ties: smaller index first); the rest score 0.

Fit cost: co-occurrences come from X^T X with X the binary (S, N) session x item matrix, in blocks of
rows so that a block's co-occurrence matrix holds at most `block_nnz` entries (bounded by
sum_{s contains i} |s| per row i). Time is O(sum_s |s|^2) for the products plus O(nnz log nnz) for the
per-row top-n_sims sort; memory is O(E + block_nnz + N * n_sims); no dense N x N matrix is ever formed.
Long sessions dominate: sum_s |s|^2 is what to check before fitting 17M sessions over 700K items.
Buffers: (N, n_sims) int32 neighbour indices (padding: the item itself) and float32 similarities
(padding: 0), e.g. 700K x 100 items take 560 MB.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn


def session_item_matrix(items: np.ndarray, offsets: np.ndarray, n_items: int) -> sp.csr_matrix:
    """Binary (S, N) float64 CSR matrix: 1 where session s contains item j."""
    items = np.asarray(items, dtype=np.int64)
    lengths = np.diff(np.asarray(offsets, dtype=np.int64))  # (S,)
    rows = np.repeat(np.arange(len(lengths)), lengths)  # (E,)
    x = sp.csr_matrix((np.ones(len(items)), (rows, items)), shape=(len(lengths), n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _row_blocks(bound: np.ndarray, block_nnz: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose summed nnz bound stays under block_nnz (at least one row each)."""
    blocks, start, total = [], 0, 0
    for row, b in enumerate(bound.tolist()):
        if total + b > block_nnz and row > start:
            blocks.append((start, row))
            start, total = row, 0
        total += b
    blocks.append((start, len(bound)))
    return blocks


def _top_k_rows(
    co: sp.csr_matrix, first: int, supp_term: tuple[np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k similarities of rows first..first+R-1 given their (R, N) co-occurrence block."""
    left, right = supp_term  # (N,) (supp + lambda)^alpha, (supp + lambda)^(1 - alpha)
    co = co.tocoo()
    rows, cols = co.row.astype(np.int64), co.col.astype(np.int64)
    keep = (rows + first != cols) & (co.data > 0)  # self-similarity excluded
    rows, cols = rows[keep], cols[keep]
    sims = co.data[keep] / (left[rows + first] * right[cols])  # (nnz,)
    order = np.lexsort((cols, -sims, rows))  # by row, then similarity descending, then index
    rows, cols, sims = rows[order], cols[order], sims[order]
    starts = np.searchsorted(rows, rows, side="left")
    pos = np.arange(len(rows)) - starts  # rank within the row
    top = pos < k
    n_rows = co.shape[0]
    idx = np.repeat(np.arange(first, first + n_rows, dtype=np.int32)[:, None], k, axis=1)  # (R, k)
    val = np.zeros((n_rows, k), dtype=np.float32)
    idx[rows[top], pos[top]] = cols[top]
    val[rows[top], pos[top]] = sims[top]
    return idx, val


class ItemKNN(nn.Module):
    """Item-to-item kNN on session co-occurrence; scores depend on the current item only.

    Args: n_sims: neighbours kept per item; lambda_: support regulariser; alpha: exponent of the
    current item's support (0.5 cosine, 1.0 confidence); block_nnz: co-occurrence entries per fit block.
    """

    def __init__(
        self,
        n_sims: int = 100,
        lambda_: float = 20.0,
        alpha: float = 0.5,
        block_nnz: int = 10_000_000,
        n_items: int | None = None,
    ) -> None:
        super().__init__()
        self.expected_items = n_items  # linked from the data module by the CLI; checked at fit
        if n_sims < 1:
            raise ValueError(f"n_sims must be >= 1 (got {n_sims})")
        if lambda_ < 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"need lambda_ >= 0 and 0 <= alpha <= 1 (got {lambda_}, {alpha})")
        self.n_sims, self.lambda_, self.alpha, self.block_nnz = n_sims, lambda_, alpha, block_nnz
        self.register_buffer("sim_idx", torch.zeros(0, n_sims, dtype=torch.int32))  # (N, n_sims)
        self.register_buffer("sim_val", torch.zeros(0, n_sims))  # (N, n_sims)

    @property
    def n_items(self) -> int:
        return self.sim_idx.shape[0]

    def fit(self, items: np.ndarray, offsets: np.ndarray, n_items: int) -> None:
        """Compute every item's n_sims nearest neighbours from the training sessions."""
        x = session_item_matrix(items, offsets, n_items)  # (S, N)
        xt = x.T.tocsr()  # (N, S)
        supp = np.asarray(xt.sum(axis=1)).ravel() + self.lambda_  # (N,)
        if self.lambda_ == 0:
            supp[supp == 0] = 1.0  # unseen items have no co-occurrences anyway
        terms = (supp**self.alpha, supp ** (1.0 - self.alpha))
        bound = xt @ np.diff(x.indptr).astype(np.float64)  # (N,) >= nnz of each row of X^T X
        k = min(self.n_sims, max(n_items - 1, 1))
        idx = np.empty((n_items, self.n_sims), dtype=np.int32)
        val = np.zeros((n_items, self.n_sims), dtype=np.float32)
        idx[:] = np.arange(n_items, dtype=np.int32)[:, None]
        for first, last in _row_blocks(bound.astype(np.int64), self.block_nnz):
            co = xt[first:last] @ x  # (R, N) co-occurrence counts
            idx[first:last, :k], val[first:last, :k] = _top_k_rows(co, first, terms, k)
        device = self.sim_idx.device
        self.sim_idx, self.sim_val = torch.from_numpy(idx).to(device), torch.from_numpy(val).to(device)

    def begin(self, batch_size: int, device: torch.device | str | None = None) -> None:
        """Item-kNN keeps no per-session state."""

    def forward(self, inputs: Tensor, reset: Tensor) -> Tensor:
        valid = inputs >= 0  # (B,) a negative input (padding) scores nothing
        cur = inputs.clamp(min=0)
        idx = self.sim_idx[cur].long()  # (B, n_sims)
        val = self.sim_val[cur] * valid.unsqueeze(1)  # (B, n_sims)
        scores = torch.zeros(inputs.shape[0], self.n_items, device=inputs.device, dtype=val.dtype)
        return scores.scatter_(1, idx, val)  # (B, N)
