"""The FeatureEncoder interface: item ids in, one feature vector per item out.

Two-phase construction, so a YAML config can describe an encoder before the catalogue is known:

1. ``__init__`` takes only the configuration; its signature IS the config schema (jsonargparse), e.g.
   ``DenseEncoder(path="image.npy", projection=100)``. Paths are relative to the data folder.
2. ``bind(catalogue)`` reads the feature files for the catalogue's item ids and builds every parameter
   and buffer; ``output_size`` is known from then on. The owning model (ParallelRNN) calls it in its
   own constructor, or at the latest in ``setup``, so parameters exist before the optimiser and the
   DDP wrap. ``bind`` runs once per encoder.

After ``bind``, ``forward(items (B,) int64) -> (B, output_size)``. Feature data read from files are
non-persistent buffers (re-read at ``bind``, not stored in checkpoints); learned weights are
parameters. Nothing here needs Lightning. A config names an encoder by class name or import path::

    encoders:
      image: {class_path: DenseEncoder, init_args: {path: ../image.npy, projection: 100}}
      text: {class_path: sessrec.encoders.SparseTextEncoder, init_args: {path: ../text.npz}}

Plug-ins outside the package: see `sessrec.encoders.registry`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from sessrec.features.catalogue import Catalogue


class FeatureEncoder(nn.Module):
    """Base class of item feature encoders (see the module docstring for the life cycle).

    Subclasses implement `build(catalogue) -> output_size` and `forward(items) -> (B, D)`, and may set
    a class attribute `name`, the short name the registry lists them under.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self._output_size: int | None = None
        self.n_items = 0

    @property
    def output_size(self) -> int:
        """Size D of the vectors `forward` returns; known after `bind`."""
        if self._output_size is None:
            raise RuntimeError(f"{type(self).__name__}: output_size is known only after bind(catalogue)")
        return self._output_size

    @property
    def is_bound(self) -> bool:
        """Whether `bind` has run."""
        return self._output_size is not None

    def bind(self, catalogue: Catalogue) -> None:
        """Read the features of `catalogue`'s items and build parameters and buffers (once)."""
        if self.is_bound:
            raise RuntimeError(f"{type(self).__name__}: bind() was already called")
        self.n_items = catalogue.n_items
        self._output_size = int(self.build(catalogue))

    def build(self, catalogue: Catalogue) -> int:
        """Create parameters and buffers for `catalogue`; return the output size."""
        raise NotImplementedError

    def extend(self, catalogue: Catalogue, new_ids: np.ndarray) -> Tensor:
        """For serving items outside the bound catalogue (`sessrec.serving.cold`): append the features
        of `new_ids` (M,) to the per-item buffers, so that indices N..N+M-1 encode those items with the
        bound catalogue's statistics and codes (what training saw). `catalogue` is the bound one (for
        its data folder). Returns (M,) bool: the new items this encoder has features for. An encoder
        that cannot raises NotImplementedError (then its model serves only catalogue items)."""
        raise NotImplementedError(f"{type(self).__name__} cannot encode items outside its catalogue")

    def check_bound(self) -> None:
        """RuntimeError unless `bind` has run (call at the start of `forward`)."""
        if not self.is_bound:
            raise RuntimeError(f"{type(self).__name__}: call bind(catalogue) before forward")

    def extra_repr(self) -> str:
        return f"n_items={self.n_items}, output_size={self._output_size}"


class MissingFill(nn.Module):
    """Replaces the vectors of items without features: a learned vector (zero-initialised) or zeros."""

    def __init__(self, dim: int, learned: bool) -> None:
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(dim)) if learned else None  # (D,)

    def forward(self, x: Tensor, present: Tensor) -> Tensor:
        """x (B, D), present (B,) bool -> (B, D) with absent rows replaced."""
        fill = self.vector if self.vector is not None else x.new_zeros(())
        return torch.where(present.unsqueeze(1), x, fill)  # (B, D)
