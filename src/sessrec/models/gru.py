"""Recurrent building blocks shared by GRU4Rec and every p-RNN subnet.

The hidden state is a list with one (B, H_l) tensor per layer. It is carried across session-parallel
steps by the caller; `keep` (B, 1) zeroes the rows whose slot starts a new session.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sessrec.models.rows import gather_rows, mark_row_sparse


def uniform_init_(tensor: Tensor, fan_in: int, fan_out: int) -> Tensor:
    """The reference's init: uniform in +-sqrt(6 / (fan_in + fan_out))."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def init_gate_blocks_(weight: Tensor, n_in: int, hidden: int) -> None:
    """Init a (3H, n_in) GRUCell weight per (H, n_in) gate block, as the reference does."""
    for block in weight.detach().split(hidden, dim=0):
        uniform_init_(block, n_in, hidden)


def dropout_mask(x: Tensor, p: float) -> Tensor | None:
    """The mask `dropout` multiplies x by (one `torch.rand_like` draw), None when p == 0 (no draw)."""
    if p == 0.0:
        return None
    return torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # (B, H) 0 or 1 / (1 - p)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """`F.dropout` with the mask drawn by `torch.rand` (uniform >= p) instead of `bernoulli_`.

    The same distribution (keep with probability 1 - p, kept values scaled by 1 / (1 - p)) from the same
    global generator, at about half the cost on CPU; the masks themselves differ from `F.dropout`'s.
    """
    mask = dropout_mask(x, p) if training else None
    return x if mask is None else x * mask


class GRUStack(nn.Module):
    """Stacked GRU cells with dropout after each layer; the dropped-out output is the carried state."""

    def __init__(self, input_size: int, layers: list[int], dropout_hidden: float = 0.0) -> None:
        super().__init__()
        if not layers or any(h <= 0 for h in layers):
            raise ValueError(f"layers must be a non-empty list of positive sizes, got {layers}")
        if not 0.0 <= dropout_hidden < 1.0:
            raise ValueError(f"dropout_hidden must be in [0, 1), got {dropout_hidden}")
        sizes = [input_size, *layers]
        self.cells = nn.ModuleList(nn.GRUCell(sizes[i], sizes[i + 1]) for i in range(len(layers)))
        self.dropout_hidden = dropout_hidden
        self.layers = list(layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for cell in self.cells:
            init_gate_blocks_(cell.weight_ih, cell.input_size, cell.hidden_size)
            init_gate_blocks_(cell.weight_hh, cell.hidden_size, cell.hidden_size)
            nn.init.zeros_(cell.bias_ih)
            nn.init.zeros_(cell.bias_hh)

    def init_hidden(self, batch_size: int, device: torch.device | None = None) -> list[Tensor]:
        return [torch.zeros(batch_size, h, device=device) for h in self.layers]

    def forward(self, x: Tensor, hidden: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """x (B, I), hidden [(B, H_l)] -> output (B, H_last), new hidden (already dropped out)."""
        new_hidden = []
        for cell, h in zip(self.cells, hidden):
            x = cell(x, h)  # (B, H_l)
            x = dropout(x, self.dropout_hidden, self.training)
            new_hidden.append(x)
        return x, new_hidden


class OneHotGRULayer(nn.Module):
    """First GRU layer fed by a one-hot item vector: an (N, 3H) table feeds the gates directly.

    Equivalent to a GRU whose input is the one-hot item vector, without the (N, 3H) dense matmul.
    """

    def __init__(self, n_items: int, hidden: int, sparse: bool = True) -> None:
        super().__init__()
        self.hidden = hidden
        self.sparse = sparse
        weight_x = nn.Parameter(torch.empty(n_items, 3 * hidden))  # (N, 3H): [candidate, r, z]
        self.weight_x = mark_row_sparse(weight_x, sparse)
        self.weight_h = nn.Parameter(torch.empty(hidden, 3 * hidden))  # (H, 3H)
        self.bias = nn.Parameter(torch.zeros(3 * hidden))  # (3H,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for block in self.weight_x.detach().split(self.hidden, dim=1):
            uniform_init_(block, self.weight_x.shape[0], self.hidden)
        for block in self.weight_h.detach().split(self.hidden, dim=1):
            uniform_init_(block, self.hidden, self.hidden)
        nn.init.zeros_(self.bias)

    def forward(self, items: Tensor, h: Tensor) -> Tensor:
        """items (B,), h (B, H) -> new h (B, H)."""
        vx = gather_rows(self.weight_x, items, self.sparse) + self.bias  # (B, 3H)
        vh = h @ self.weight_h  # (B, 3H)
        vx_c, vx_r, vx_z = vx.chunk(3, dim=1)
        vh_c, vh_r, vh_z = vh.chunk(3, dim=1)
        r = torch.sigmoid(vx_r + vh_r)  # (B, H)
        z = torch.sigmoid(vx_z + vh_z)  # (B, H)
        candidate = torch.tanh(r * vh_c + vx_c)  # (B, H)
        return torch.lerp(h, candidate, z)  # (1 - z) * h + z * candidate
