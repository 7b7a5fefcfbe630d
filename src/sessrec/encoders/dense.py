"""`dense`: precomputed item vectors (e.g. CNN image features), frozen, optionally projected."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sessrec.encoders.base import FeatureEncoder, MissingFill
from sessrec.features.catalogue import Catalogue
from sessrec.features.store import load_dense

MissingMode = Literal["learned", "zeros"]


def unit_rows(values: Tensor) -> Tensor:
    """(N, D) -> (N, D): each row over its L2 norm (zero rows stay zero), after dividing it by its largest
    |value|: float32 squares overflow above ~1.8e19 (F.normalize alone turns such rows into zeros) and
    vanish below ~1e-23."""
    if values.numel() == 0:
        return values
    scale = values.abs().amax(dim=1, keepdim=True)  # (N, 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # (N, 1) zero rows: unchanged
    return F.normalize(values / scale, dim=1)  # (N, D)


class DenseEncoder(FeatureEncoder):
    """Frozen dense vectors per item, looked up by item index.

    Args:
        path: a ``.npy`` feature file (see `sessrec.features.store`), relative to the data folder.
        projection: size of a trainable linear projection of the vectors; 0 keeps them as they are.
        normalize: L2-normalise each vector at load (the p-RNN paper normalises its image features).
        missing: what items without a vector get: a "learned" vector (zero-initialised) or "zeros".
        dim: expected vector dimension (a DataError when the file differs); 0 accepts any.
    """

    name = "dense"

    def __init__(
        self,
        path: str,
        projection: int = 0,
        normalize: bool = False,
        missing: MissingMode = "learned",
        dim: int = 0,
    ) -> None:
        super().__init__()
        if projection < 0 or dim < 0:
            raise ValueError("DenseEncoder: projection and dim must be >= 0")
        self.path, self.projection, self.normalize = path, projection, normalize
        self.missing_mode, self.dim = missing, dim
        self.fill: MissingFill | None = None
        self.proj: nn.Linear | None = None

    def build(self, catalogue: Catalogue) -> int:
        feats = load_dense(catalogue.resolve(self.path), catalogue.item_ids, self.dim or None)
        values = unit_rows(feats.values) if self.normalize else feats.values  # (N, D)
        self.register_buffer("values", values, persistent=False)  # (N, D)
        self.register_buffer("present", feats.mask, persistent=False)  # (N,)
        self.fill = MissingFill(feats.dim, self.missing_mode == "learned")
        if self.projection:
            self.proj = nn.Linear(feats.dim, self.projection)
        return self.projection or feats.dim

    def extend(self, catalogue: Catalogue, new_ids: np.ndarray) -> Tensor:
        feats = load_dense(catalogue.resolve(self.path), new_ids, self.values.shape[1])
        values = unit_rows(feats.values) if self.normalize else feats.values  # (M, D)
        self.values = torch.cat([self.values, values.to(self.values)])  # (N+M, D)
        self.present = torch.cat([self.present, feats.mask.to(self.present.device)])  # (N+M,)
        return feats.mask

    def forward(self, items: Tensor) -> Tensor:
        """items (B,) -> (B, projection or D)."""
        self.check_bound()
        x = self.fill(self.values[items], self.present[items])  # (B, D)
        return self.proj(x) if self.proj is not None else x  # (B, P)
