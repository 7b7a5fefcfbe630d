"""`Recommender`: next-item recommendations for live sessions of raw item ids, from a checkpoint or an export.

    from sessrec.serving import Recommender

    rec = Recommender.load("exports/gru4rec")          # or Recommender.from_checkpoint("last.ckpt")
    rec.recommend(["214839", "214842"], k=5)            # [(item_id, score), ...] best first

    state = rec.step(None, "214839")                    # one click at a time (what the server does)
    state = rec.step(state, "214842")
    rec.top_k(state, k=5)                               # the same list as recommend(...) above

The scores are the model's evaluation scores after the session's last item: the same network step as
`python -m sessrec test` and `sessrec.analysis.recommend`, so the lists equal theirs (with
`exclude_seen=False`; with `exclude_seen=True`, the default, items already in the session are dropped
and the next ones move up).

A `SessionState` is immutable: `step` returns a new one, so a caller may keep or discard any of them.
It holds the hidden state after the last item (one (1, H_l) tensor per layer), the items seen so far
and the last step's output: for nets with a ranking table (GRU4Rec, concat p-RNN) the query vector
(1, D) whose product with the table gives the scores; for other nets (weighted p-RNN) the hidden state
before the last item, from which the scores are recomputed. A session costs a few KB, not N scores.

Unknown item ids: `UnknownItemError` (a `DataError`) naming the id. Items outside the trained catalogue
are not encoded from their features yet, even by a p-RNN whose encoders could (the encoders index
their feature arrays by item index); see docs/serving.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sessrec.errors import DataError


class UnknownItemError(DataError, KeyError):
    """An item id the model has no index for."""

    def __init__(self, item_id: object) -> None:
        super().__init__(f"unknown item id '{item_id}': not in the model's catalogue")
        self.item_id = item_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class SessionState:
    """One session after its last item (see the module docstring). Create it with `Recommender.step`."""

    hidden: tuple[Tensor, ...]  # [(1, H_l)] after the last item
    items: tuple[int, ...]  # item indices fed so far, in order
    query: Tensor | None = None  # (1, D) the last output, for nets with a ranking table
    previous: tuple[Tensor, ...] | None = None  # [(1, H_l)] before the last item, for other nets


class Recommender:
    """A trained session network with its item-id map, for one session at a time (CPU or one device).

    Args:
        net: a GRU4Rec or ParallelRNN (anything with `forward(inputs, hidden)`, `init_hidden`), bound.
        item_ids: (N,) original item ids; index i is the network's item i. Ids are compared as strings.
        device: where the network runs.
    """

    def __init__(self, net: nn.Module, item_ids: Sequence[object], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.item_ids = np.asarray([str(i) for i in item_ids], dtype=object)  # (N,)
        if len(self.item_ids) != net.n_items:
            raise DataError(f"{len(self.item_ids)} item ids for a model of {net.n_items} items")
        self.index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        table = net.ranking_table() if hasattr(net, "ranking_table") else None
        self._table = None if table is None else table.detach()  # (N, D+1) [W | b]
        self.manifest: dict | None = None

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, ckpt_path: str | os.PathLike, config: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None, device: str = "cpu",
    ) -> Recommender:
        """A Lightning checkpoint of `fit`, with the run's config (default: the `config.yaml` beside the
        checkpoint or one folder up). Needs the prepared data folder the config names (or `data_dir`)."""
        from sessrec.serving.artefact import from_checkpoint

        net, item_ids, _, _ = from_checkpoint(ckpt_path, config, data_dir)
        return cls(net, item_ids, device)

    @classmethod
    def load(cls, export_dir: str | os.PathLike, device: str = "cpu") -> Recommender:
        """A folder written by `python -m sessrec export` (nothing else needed)."""
        from sessrec.serving.artefact import read_export

        net, item_ids, manifest = read_export(export_dir)
        rec = cls(net, item_ids, device)
        rec.manifest = manifest
        return rec

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self, item_id: object) -> int:
        """The model's index of a raw item id; `UnknownItemError` naming it when there is none."""
        index = self.index.get(str(item_id))
        if index is None:
            raise UnknownItemError(item_id)
        return index

    # ---- one session ------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, state: SessionState | None, item_id: object) -> SessionState:
        """The session after one more item (`state` None: a new session starting with `item_id`)."""
        index = self.item_index(item_id)
        inputs = torch.tensor([index], device=self.device)  # (1,)
        hidden = list(state.hidden) if state is not None else self.net.init_hidden(1, self.device)
        seen = (*state.items, index) if state is not None else (index,)
        if self._table is not None:
            query, new_hidden = self.net.query(inputs, hidden)  # (1, D), [(1, H_l)]
            return SessionState(tuple(new_hidden), seen, query=query)
        _, new_hidden = self.net(inputs, hidden, torch.tensor([index], device=self.device))  # (1, 1)
        return SessionState(tuple(new_hidden), seen, previous=tuple(hidden))

    @torch.no_grad()
    def scores(self, state: SessionState) -> Tensor:
        """Scores (N,) of every item for the session's next item (the evaluation scores)."""
        if state.query is not None:
            from sessrec.models.prnn import score_rows

            return score_rows(state.query, self._table)[0]  # (N,)
        inputs = torch.tensor([state.items[-1]], device=self.device)  # (1,)
        return self.net(inputs, list(state.previous))[0][0]  # (N,)

    def top_k(self, state: SessionState, k: int = 20, exclude_seen: bool = True) -> list[tuple[str, float]]:
        """The k best (item_id, score) pairs for the session's next item, best first.

        `exclude_seen` drops the items already in the session; fewer than k pairs only when the
        catalogue has fewer items left. Ties are ordered as `torch.topk` orders them.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.scores(state)  # (N,)
        if exclude_seen:
            scores = scores.clone()
            scores[torch.tensor(state.items, device=scores.device)] = -torch.inf
        n_left = self.n_items - (len(set(state.items)) if exclude_seen else 0)
        top_scores, top = torch.topk(scores, min(k, n_left))  # (k,)
        return list(zip(self.item_ids[top.cpu().numpy()].tolist(), top_scores.float().cpu().tolist()))

    def session(self, items: Sequence[object]) -> SessionState:
        """The state after feeding `items` (raw ids, oldest first; at least one)."""
        if len(items) == 0:
            raise ValueError("the session has no items")
        indices = [self.item_index(i) for i in items]  # every id checked before any work
        state = None
        for index in indices:
            state = self.step(state, self.item_ids[index])
        return state

    def recommend(
        self, items: Sequence[object], k: int = 20, exclude_seen: bool = True
    ) -> list[tuple[str, float]]:
        """Top-k (item_id, score) after a session's `items` (raw ids, oldest first), best first."""
        return self.top_k(self.session(items), k, exclude_seen)
