"""A small stand-in for ParallelRNN with its contract: named `subnets` owning all their parameters
(with weighted fusion, their own output tables), `shared_parameters()`, and the net interface."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sessrec.models.base import SessionNet
from sessrec.models.gru import GRUStack, uniform_init_
from sessrec.models.rows import gather_rows, mark_row_sparse


class FakeSubnet(nn.Module):
    def __init__(self, n_items: int, hidden: int, own_table: bool, sparse: bool) -> None:
        super().__init__()
        self.sparse = sparse
        embedding = nn.Parameter(uniform_init_(torch.empty(n_items, hidden), n_items, hidden))  # (N, H)
        self.embedding = mark_row_sparse(embedding, sparse)
        self.gru = GRUStack(hidden, [hidden])
        self.item_table = None
        if own_table:
            self.item_table = mark_row_sparse(nn.Parameter(torch.zeros(n_items, hidden + 1)), sparse)  # (N, H+1)
            uniform_init_(self.item_table.data[:, :-1], n_items, hidden)

    def forward(self, inputs: Tensor, hidden: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        return self.gru(gather_rows(self.embedding, inputs, self.sparse), hidden)  # (B, H)


class FakeParallelRNN(SessionNet):
    """GRU subnets; "weighted": per-subnet tables, scores summed with a shared learned scale;
    "concat": one shared table over the concatenated subnet outputs."""

    def __init__(self, n_items: int, names: tuple[str, ...] = ("id", "image"), hidden: int = 8,
                 fusion: str = "weighted", sparse_grad: bool = True) -> None:
        super().__init__()
        self.n_items, self.sparse, self.hidden, self.fusion = n_items, sparse_grad, hidden, fusion
        weighted = fusion == "weighted"
        self.subnets = nn.ModuleDict({k: FakeSubnet(n_items, hidden, weighted, sparse_grad) for k in names})
        self.shared = nn.Module()
        self.shared.scale = nn.Parameter(torch.ones(len(names)))  # (K,)
        if not weighted:
            width = hidden * len(names)
            self.shared.item_table = mark_row_sparse(nn.Parameter(torch.zeros(n_items, width + 1)), sparse_grad)
            uniform_init_(self.shared.item_table.data[:, :-1], n_items, width)

    def named_subnets(self) -> dict[str, nn.Module]:
        return dict(self.subnets)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.shared.parameters())

    def init_hidden(self, batch_size: int, device: torch.device | None = None) -> list[Tensor]:
        return [torch.zeros(batch_size, self.hidden, device=device) for _ in self.subnets]

    def _rows(self, table: Tensor, cols: Tensor | None) -> Tensor:
        return table if cols is None else gather_rows(table, cols, self.sparse)  # (C, H+1)

    def forward(self, inputs: Tensor, hidden: list[Tensor], cols: Tensor | None = None):
        outs, new_hidden = [], []
        for sub, h in zip(self.subnets.values(), hidden):
            out, (h,) = sub(inputs, [h])  # (B, H)
            outs.append(out)
            new_hidden.append(h)
        if self.fusion == "weighted":
            scores = sum(self.shared.scale[k] * F.pad(o, (0, 1), value=1.0) @ self._rows(s.item_table, cols).t()
                         for k, (o, s) in enumerate(zip(outs, self.subnets.values())))  # (B, C)
        else:
            fused = torch.cat([o * self.shared.scale[k] for k, o in enumerate(outs)], dim=1)  # (B, KH)
            scores = F.pad(fused, (0, 1), value=1.0) @ self._rows(self.shared.item_table, cols).t()  # (B, C)
        return scores, new_hidden
