"""GRU4Rec: the ID-only session model of Hidasi et al., as the reference implementation defines it."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sessrec.models.base import SessionNet
from sessrec.models.gru import GRUStack, OneHotGRULayer, dropout, uniform_init_
from sessrec.models.rows import gather_row_sets, gather_rows, mark_row_sparse, score_rows

InputMode = Literal["shared", "embedding", "onehot"]


class GRU4Rec(SessionNet):
    """Item-ID GRU4Rec.

    Args:
        n_items: catalogue size N (linked from the data module).
        layers: hidden sizes of the GRU layers.
        input_mode: "shared" (the input embedding IS the output weight matrix Wy, the reference's
            "constrained embedding"), "embedding" (a separate table of size `embedding_size`) or
            "onehot" (an (N, 3H) table feeding the first layer's gates: a GRU on one-hot input).
        embedding_size: size of the separate embedding; only with input_mode="embedding".
        dropout_embed: dropout on the input embedding (on the first layer's output in onehot mode).
        dropout_hidden: dropout after each GRU layer; the dropped-out vector is the carried state.
        sparse_grad: row-sparse gradients for the item tables (needed by the reference's optimiser;
            set False for Adam/AdamW).
    """

    def __init__(
        self,
        n_items: int,
        layers: list[int] = [100],  # noqa: B006 - jsonargparse needs a literal default
        input_mode: InputMode = "shared",
        embedding_size: int = 0,
        dropout_embed: float = 0.0,
        dropout_hidden: float = 0.0,
        sparse_grad: bool = True,
    ) -> None:
        super().__init__()
        if n_items <= 0:
            raise ValueError(f"n_items must be positive, got {n_items}")
        if not layers or any(h <= 0 for h in layers):
            raise ValueError(f"layers must be a non-empty list of positive sizes, got {layers}")
        if input_mode == "embedding" and embedding_size <= 0:
            raise ValueError("input_mode='embedding' needs embedding_size > 0")
        if input_mode != "embedding" and embedding_size:
            raise ValueError(f"embedding_size is only used with input_mode='embedding' (got {input_mode!r})")
        if not 0.0 <= dropout_embed < 1.0:
            raise ValueError(f"dropout_embed must be in [0, 1), got {dropout_embed}")
        self.n_items, self.input_mode, self.sparse = n_items, input_mode, sparse_grad
        self.dropout_embed = dropout_embed
        self.layers = list(layers)
        hidden_out = self.layers[-1]
        # Output weights Wy and bias By in one table, so one lookup and one row-wise update serve both.
        item_table = nn.Parameter(torch.empty(n_items, hidden_out + 1))  # [Wy | By] (N, H+1)
        self.item_table = mark_row_sparse(item_table, sparse_grad)
        self.embedding: nn.Parameter | None = None
        self.onehot: OneHotGRULayer | None = None
        if input_mode == "shared":
            self.gru = GRUStack(hidden_out, self.layers, dropout_hidden)
        elif input_mode == "embedding":
            embedding = nn.Parameter(torch.empty(n_items, embedding_size))  # E (N, K)
            self.embedding = mark_row_sparse(embedding, sparse_grad)
            self.gru = GRUStack(embedding_size, self.layers, dropout_hidden)
        else:
            self.onehot = OneHotGRULayer(n_items, self.layers[0], sparse=sparse_grad)
            self.gru = GRUStack(self.layers[0], self.layers[1:], dropout_hidden) if len(self.layers) > 1 else None
        self.reset_parameters()

    @property
    def item_weight(self) -> Tensor:
        return self.item_table[:, :-1]  # Wy (N, H)

    @property
    def item_bias(self) -> Tensor:
        return self.item_table[:, -1]  # By (N,)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            uniform_init_(self.item_table[:, :-1], self.n_items, self.layers[-1])
            self.item_table[:, -1].zero_()
        if self.embedding is not None:
            uniform_init_(self.embedding, self.n_items, self.embedding.shape[1])

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.layers)

    def forward(
        self, inputs: Tensor, hidden: list[Tensor], cols: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """One session-parallel step.

        inputs (B,) item ids, hidden [(B, H_l)], cols (C,) item ids to score (None: all N items).
        Returns scores (B, C) or (B, N) and the new hidden state.
        """
        if cols is None:
            out_rows = self.item_table  # (N, H+1)
            out, new_hidden = self.query(inputs, hidden)  # (B, H)
        else:
            if self.input_mode == "shared":  # one lookup for the inputs and the scored columns, as the reference
                in_rows, out_rows = gather_row_sets(self.item_table, (inputs, cols), self.sparse)  # (B|C, H+1)
            else:
                in_rows, out_rows = None, gather_rows(self.item_table, cols, self.sparse)  # (C, H+1)
            out, new_hidden = self._recur(inputs, hidden, in_rows)  # (B, H)
        out = F.pad(out, (0, 1), value=1.0)  # (B, H+1): the last column multiplies the bias By
        scores = score_rows(out, out_rows)  # (B, C) or (B, N)
        return scores, new_hidden

    def ranking_table(self) -> Tensor:
        """[Wy | By] (N, H+1): the scores over all items are `query(...)` @ Wy.T + By."""
        return self.item_table

    def query(self, inputs: Tensor, hidden: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One step's output (B, H) whose scores over all items are `out @ item_weight.T + item_bias`.

        The same computation as `forward(inputs, hidden)` without the (B, N) product, for evaluation by
        `sessrec.evaluation.screening` (which ranks targets without materialising the scores).
        """
        shared = self.input_mode == "shared"
        in_rows = gather_rows(self.item_table, inputs, self.sparse) if shared else None  # (B, H+1)
        return self._recur(inputs, hidden, in_rows)

    def _recur(
        self, inputs: Tensor, hidden: list[Tensor], in_rows: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """The recurrent part: inputs (B,) (their table rows (B, H+1) in shared mode) -> out (B, H)."""
        if self.onehot is not None:
            first = self.onehot(inputs, hidden[0])  # (B, H_0)
            first = dropout(first, self.dropout_embed, self.training)
            out, rest = self.gru(first, hidden[1:]) if self.gru is not None else (first, [])
            return out, [first, *rest]
        shared = self.input_mode == "shared"
        x = in_rows[:, :-1] if shared else gather_rows(self.embedding, inputs, self.sparse)  # (B, K)
        x = dropout(x, self.dropout_embed, self.training)
        return self.gru(x, hidden)  # (B, H), [(B, H_l)]
