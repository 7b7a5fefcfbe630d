"""`SessionNet`: what the training module, the evaluation, serving and the schedules need of a network.

A session network maps one session-parallel step (inputs (B,), hidden state) to scores and the next
hidden state. The defaults describe the simplest net (scores only, no item features, no subnets);
GRU4Rec and ParallelRNN override what they have:

- `hidden_sizes` (required): one width per recurrent layer; `init_hidden` builds zeros of them;
- `forward(inputs, hidden, cols=None)`: scores over `cols` (B, C), or over all items (B, N) when None;
- `ranking_table()` / `query(inputs, hidden)`: a factored form, scores = query @ table[:, :-1].T +
  table[:, -1], ranked without the (B, N) matrix (`sessrec.evaluation.screening`); None: no such form;
- `is_bound` / `bind(catalogue)` / `bind_to_data(datamodule)`: a net that reads item features is bound to a
  catalogue first;
- `named_subnets()` / `shared_table_readers`: the subnets a `TrainingSchedule` freezes and `lr_scale`
  scales (none here), and those that read their input from a shared table.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sessrec.errors import ConfigError
from sessrec.features.catalogue import Catalogue


class SessionNet(nn.Module):
    """Base class of sessrec's networks (see the module docstring); `n_items` is the catalogue size."""

    n_items: int

    @property
    def hidden_sizes(self) -> list[int]:
        raise NotImplementedError

    def init_hidden(self, batch_size: int, device: torch.device | None = None) -> list[Tensor]:
        """Zeros (B, H_l) for every recurrent layer."""
        return [torch.zeros(batch_size, h, device=device) for h in self.hidden_sizes]

    def forward(self, inputs: Tensor, hidden: list[Tensor], cols: Tensor | None = None
                ) -> tuple[Tensor, list[Tensor]]:
        raise NotImplementedError

    def ranking_table(self) -> Tensor | None:
        """[W | b] (N, D+1) of the factored scores, or None when the net has no factored form."""
        return None

    def query(self, inputs: Tensor, hidden: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The query (B, D) of the factored scores and the new hidden state (see `ranking_table`)."""
        raise NotImplementedError(f"{type(self).__name__} has no factored scores (ranking_table() is None)")

    def named_subnets(self) -> dict[str, nn.Module]:
        """Subnet name -> the module owning all its parameters (a ParallelRNN's); empty: no subnets."""
        return {}

    @property
    def shared_table_readers(self) -> list[str]:
        """Subnets whose input embedding is a parameter shared with other subnets."""
        return []

    @property
    def is_bound(self) -> bool:
        return True

    def bind(self, catalogue: Catalogue) -> None:
        """Bind to the item catalogue (nets that read item features); nothing to do here."""

    def bind_to_data(self, datamodule: object) -> None:
        """Bind to the catalogue of a data module (`catalogue()`) unless already bound; ConfigError when
        the net needs item features and the data module has none."""
        if self.is_bound:
            return
        if datamodule is None or not hasattr(datamodule, "catalogue"):
            raise ConfigError(f"{type(self).__name__} needs item features: use a data module with catalogue()")
        self.bind(datamodule.catalogue())
