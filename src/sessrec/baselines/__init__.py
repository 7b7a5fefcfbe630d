"""Baselines of the GRU4Rec papers (POP, session-POP, item-kNN) behind the scorer interface.

Each is an `nn.Module` with `fit(items (E,), offsets (S+1,), n_items)` on the numpy training split,
`begin(batch_size, device)` to clear per-slot state, and `forward(inputs (B,), reset (B,)) -> (B, N)`.
"""

from sessrec.baselines.knn import ItemKNN
from sessrec.baselines.pop import Pop, SessionPop

__all__ = ["ItemKNN", "Pop", "SessionPop"]
