"""`concat`: several encoders' vectors side by side, one input for one GRU (the paper's "concat" baseline)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from sessrec.encoders.base import FeatureEncoder
from sessrec.features.catalogue import Catalogue


class ConcatEncoder(FeatureEncoder):
    """[enc_1(i); ...; enc_m(i)]: e.g. an `id` embedding next to image features, fed to one GRU.

    Args:
        parts: the encoders whose outputs are concatenated (bound together with this one).
    """

    name = "concat"

    def __init__(self, parts: list[FeatureEncoder]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("ConcatEncoder: parts must name at least one encoder")
        self.parts = nn.ModuleList(parts)

    def build(self, catalogue: Catalogue) -> int:
        for part in self.parts:
            if not part.is_bound:
                part.bind(catalogue)
        return sum(part.output_size for part in self.parts)

    @property
    def sparse_grad(self) -> bool:
        return any(getattr(part, "sparse_grad", False) for part in self.parts)

    def extend(self, catalogue: Catalogue, new_ids: np.ndarray) -> Tensor:
        masks = [part.extend(catalogue, new_ids) for part in self.parts]  # [(M,)]
        return torch.stack(masks).any(0)  # features from any part

    def forward(self, items: Tensor) -> Tensor:
        """items (B,) -> (B, sum of the parts' sizes)."""
        self.check_bound()
        return torch.cat([part(items) for part in self.parts], dim=1)  # (B, D)
