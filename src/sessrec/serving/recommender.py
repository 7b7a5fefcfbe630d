"""`Recommender`: next-item recommendations for live sessions of raw item ids, from a checkpoint or an export.

    from sessrec.serving import Recommender

    rec = Recommender.load("exports/gru4rec")          # or Recommender.from_checkpoint("last.ckpt")
    rec.recommend(["214839", "214842"], k=5)            # [(item_id, score), ...] best first

    state = rec.step(None, "214839")                    # one click at a time (what the server does)
    state = rec.step(state, "214842")
    rec.top_k(state, k=5)                               # the same list as recommend(...) above

The scores are the model's evaluation scores after the session's last item: the same network step as
`python -m sessrec test` and `sessrec.evaluation.predict.recommend`, so the lists equal theirs (with
`exclude_seen=False`; with `exclude_seen=True`, the default, items already in the session are dropped
and the next ones move up). Nets with a ranking table step through a TorchScript trace of `net.query`
checked against the eager step when it is built (`sessrec.serving.traced`; the same scores up to float
rounding; SESSREC_TRACE=0 keeps the eager model).

A `SessionState` is immutable: `step` returns a new one, so a caller may keep or discard any of them.
It holds the hidden state after the last item (one (1, H_l) tensor per layer), the items seen so far
and the last step's output: for nets with a ranking table (GRU4Rec, concat p-RNN) the query vector
(1, D) whose product with the table gives the scores; for other nets (weighted p-RNN) the hidden state
before the last item, from which the scores are recomputed. A session costs a few KB, not N scores.

Unknown item ids: `UnknownItemError` (a `DataError`) naming the id. A p-RNN built with its feature
files (`load`, `from_checkpoint`) also takes, as session inputs, items outside the trained catalogue that
those files have rows for (`sessrec.serving.cold`: encoded from their features, never recommended).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sessrec.errors import DataError
from sessrec.features.catalogue import Catalogue
from sessrec.serving.cold import cold_items
from sessrec.serving.traced import traced_query


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


SCREEN_MIN_ITEMS = 50_000  # from this catalogue size on, the top k comes from the screened table


class Recommender:
    """A trained session network with its item-id map, for one session at a time (CPU or one device).

    Args:
        net: a GRU4Rec or ParallelRNN (anything with `forward(inputs, hidden)`, `init_hidden`), bound.
        item_ids: (N,) original item ids; index i is the network's item i. Ids are compared as strings.
        device: where the network runs.
        spec, catalogue: the net's config ({"class_path", "init_args"}) and the catalogue its feature
            paths resolve against; with both, a p-RNN also takes items outside the catalogue that its
            feature files have rows for as inputs (`cold`; `load` and `from_checkpoint` pass them).
    """

    def __init__(
        self, net: nn.Module, item_ids: Sequence[object], device: str | torch.device = "cpu",
        spec: dict | None = None, catalogue: Catalogue | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.item_ids = np.asarray([str(i) for i in item_ids], dtype=object)  # (N,)
        if len(self.item_ids) != net.n_items:
            raise DataError(f"{len(self.item_ids)} item ids for a model of {net.n_items} items")
        self.index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        table = net.ranking_table()
        self._table = None if table is None else table.detach()  # (N, D+1) [W | b]
        # p-RNN with its feature files (spec: the net's config; catalogue: where its files are): items
        # outside the catalogue as inputs, indices N.. (the net's tables keep their first N rows scored)
        self.cold = cold_items(self.net, spec, catalogue, self.item_ids)  # new id -> input index
        self._screened = None  # large catalogues: the exact top k from int8 screening (sessrec.evaluation.screening)
        self.screen_workers = 1  # threads that screen a large catalogue's top k, one item range each
        if self._table is not None and self.device.type == "cpu" and len(self.item_ids) >= SCREEN_MIN_ITEMS:
            from sessrec.evaluation.screening import ScreenedTable

            screened = ScreenedTable(self._table)
            self._screened = screened if screened.screened else None
        self.manifest: dict | None = None
        self._query = None if self._table is None else traced_query(self.net, self.device)  # or eager

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, ckpt_path: str | os.PathLike, config: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None, device: str = "cpu",
    ) -> Recommender:
        """A Lightning checkpoint of `fit`, with the run's config (default: the `config.yaml` beside the
        checkpoint or one folder up). Needs the prepared data folder the config names (or `data_dir`)."""
        from sessrec.serving.artefact import from_checkpoint

        net, item_ids, spec, catalogue = from_checkpoint(ckpt_path, config, data_dir)
        return cls(net, item_ids, device, spec, catalogue)

    @classmethod
    def load(cls, export_dir: str | os.PathLike, device: str = "cpu") -> Recommender:
        """A folder written by `python -m sessrec export` (nothing else needed)."""
        from sessrec.serving.artefact import read_export

        net, item_ids, manifest = read_export(export_dir)
        rec = cls(net, item_ids, device, manifest["net"], Catalogue(item_ids, Path(export_dir)))
        rec.manifest = manifest
        return rec

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self, item_id: object, inputs: bool = True) -> int:
        """The model's index of a raw item id (with `inputs`, also of an item outside the catalogue that
        the net takes from its features: `cold`); `UnknownItemError` naming it when there is none."""
        index = self.index.get(str(item_id))
        if index is None and inputs:
            index = self.cold.get(str(item_id))
        if index is None:
            raise UnknownItemError(item_id)
        return index

    def item_indices(self, item_ids: Sequence[object]) -> list[int]:
        """Catalogue indices of raw ids (items that can be ranked), duplicates dropped (first kept);
        `UnknownItemError` naming the first unknown."""
        return list(dict.fromkeys(self.item_index(i, inputs=False) for i in item_ids))

    # ---- sessions, one or several at a time --------------------------------------------------
    def step(self, state: SessionState | None, item_id: object) -> SessionState:
        """The session after one more item (`state` None: a new session starting with `item_id`)."""
        return self.step_many([state], [item_id])[0]

    @torch.no_grad()
    def step_many(self, states: Sequence[SessionState | None], item_ids: Sequence[object]) -> list[SessionState]:
        """One more item for each of several sessions, stepped as one batch through the net.

        The sessions must be distinct (a session's clicks are steps in order). Every id is checked
        before any work: one unknown id raises `UnknownItemError` and no state changes.
        """
        indices = [self.item_index(i) for i in item_ids]
        inputs = torch.tensor(indices, device=self.device)  # (B,)
        hidden = self._stack_hidden(states)  # [(B, H_l)]
        seen = [(*s.items, i) if s is not None else (i,) for s, i in zip(states, indices)]
        if self._table is not None:
            query, new_hidden = (self._query or self.net.query)(inputs, hidden)  # (B, D), [(B, H_l)]
            return [SessionState(_row(new_hidden, b), seen[b], query=query[b : b + 1].clone())
                    for b in range(len(indices))]
        _, new_hidden = self.net(inputs, hidden, inputs[:0])  # (B, 0) scores: none needed
        return [SessionState(_row(new_hidden, b), seen[b], previous=_row(hidden, b)) for b in range(len(indices))]

    def _stack_hidden(self, states: Sequence[SessionState | None]) -> list[Tensor]:
        """[(B, H_l)] the hidden states of `states` (zeros for None)."""
        fresh = self.net.init_hidden(1, self.device)  # [(1, H_l)]
        return [torch.cat([s.hidden[layer] if s is not None else fresh[layer] for s in states])
                for layer in range(len(fresh))]

    @torch.no_grad()
    def scores(self, state: SessionState) -> Tensor:
        """Scores (N,) of every item for the session's next item (the evaluation scores)."""
        return self.scores_many([state])[0]

    @torch.no_grad()
    def scores_many(self, states: Sequence[SessionState]) -> Tensor:
        """Scores (B, N) of every item for each session's next item: one product with the item table."""
        if states[0].query is not None:
            from sessrec.models.prnn import score_rows

            return score_rows(torch.cat([s.query for s in states]), self._table)  # (B, N)
        inputs = torch.tensor([s.items[-1] for s in states], device=self.device)  # (B,)
        previous = [torch.cat([s.previous[layer] for s in states]) for layer in range(len(states[0].previous))]
        return self.net(inputs, previous)[0][:, : self.n_items]  # (B, N): catalogue items only

    def top_k(
        self, state: SessionState, k: int = 20, exclude_seen: bool = True,
        candidates: Sequence[object] | None = None,
    ) -> list[tuple[str, float]]:
        """The k best (item_id, score) pairs for the session's next item, best first.

        `exclude_seen` drops the items already in the session; `candidates` (raw ids) ranks only those
        items. Fewer than k pairs only when fewer items are left. Ties are ordered as `torch.topk` does.
        """
        cands = None if candidates is None else self.item_indices(candidates)
        return self.top_k_many([state], [k], [exclude_seen], [cands])[0]

    @torch.no_grad()
    def top_k_many(
        self, states: Sequence[SessionState], ks: Sequence[int], exclude_seen: Sequence[bool],
        candidates: Sequence[list[int] | None],
    ) -> list[list[tuple[str, float]]]:
        """`top_k` of several sessions from one (B, N) score product; `candidates` are item indices."""
        if any(k < 1 for k in ks):
            raise ValueError(f"k must be >= 1, got {min(ks)}")
        if self._screened is not None and all(c is None for c in candidates) and states[0].query is not None:
            return self._screened_top_k(states, ks, exclude_seen)
        scores = self.scores_many(states)  # (B, N)
        seen = self._seen(states, exclude_seen)  # [set of item indices] to leave out
        if any(seen):
            row_index = torch.tensor([b for b, c in enumerate(seen) for _ in c], dtype=torch.long,
                                     device=scores.device)  # (E,)
            col_index = torch.tensor([i for c in seen for i in c], dtype=torch.long, device=scores.device)  # (E,)
            scores = scores.clone()
            scores[row_index, col_index] = -torch.inf
        out: list[list[tuple[str, float]]] = [[] for _ in states]
        full = [b for b, c in enumerate(candidates) if c is None]
        if full:
            k_max = min(max(ks[b] for b in full), self.n_items)
            rows_full = scores if len(full) == len(states) else scores[full]  # (F, N)
            top_scores, top = torch.topk(rows_full, k_max, dim=1)  # (F, k)
            top_scores, top = top_scores.float().cpu().numpy(), top.cpu().numpy()
            for row, b in enumerate(full):
                n = min(ks[b], self.n_items - len(seen[b]))
                out[b] = list(zip(self.item_ids[top[row, :n]].tolist(), top_scores[row, :n].tolist()))
        for b, cands in enumerate(candidates):
            if cands is None:
                continue
            index = torch.tensor(cands, dtype=torch.long, device=scores.device)  # (C,)
            n = min(ks[b], len(cands) - len(seen[b].intersection(cands)))
            top_scores, top = torch.topk(scores[b, index], n)  # (n,)
            out[b] = list(zip(self.item_ids[index[top].cpu().numpy()].tolist(), top_scores.float().cpu().tolist()))
        return out

    def _seen(self, states: Sequence[SessionState], exclude_seen: Sequence[bool]) -> list[set[int]]:
        """Per session, the catalogue items it contains (items outside it, `cold`, are never ranked), or
        nothing where seen items are kept."""
        return [{i for i in s.items if i < self.n_items} if e else set() for s, e in zip(states, exclude_seen)]

    def _screened_top_k(
        self, states: Sequence[SessionState], ks: Sequence[int], exclude_seen: Sequence[bool],
    ) -> list[list[tuple[str, float]]]:
        """`top_k_many` without a (B, N) score matrix: the top (k + seen items) from the screened table,
        then the seen items left out (the same lists as the dense path, up to float rounding)."""
        seen = self._seen(states, exclude_seen)
        found = self._screened.top_k(torch.cat([s.query for s in states]), max(ks) + max(map(len, seen)),
                                     self.screen_workers)
        if found is None:  # not screenable after all (e.g. a non-finite query): the dense path
            self._screened = None
            return self.top_k_many(states, ks, exclude_seen, [None] * len(states))
        top_scores, top = found[0].numpy(), found[1].numpy()  # (B, K) each
        out = []
        for b, k in enumerate(ks):
            keep = [j for j, item in enumerate(top[b]) if item not in seen[b]][:k]
            out.append(list(zip(self.item_ids[top[b, keep]].tolist(), top_scores[b, keep].tolist())))
        return out

    def session(self, items: Sequence[object]) -> SessionState:
        """The state after feeding `items` (raw ids, oldest first; at least one)."""
        if len(items) == 0:
            raise ValueError("the session has no items")
        for item_id in items:  # every id checked before any work
            self.item_index(item_id)
        state = None
        for item_id in items:
            state = self.step(state, item_id)
        return state

    def recommend(
        self, items: Sequence[object], k: int = 20, exclude_seen: bool = True,
        candidates: Sequence[object] | None = None,
    ) -> list[tuple[str, float]]:
        """Top-k (item_id, score) after a session's `items` (raw ids, oldest first), best first;
        `candidates` (raw ids): rank only those items."""
        return self.top_k(self.session(items), k, exclude_seen, candidates)


def _row(hidden: Sequence[Tensor], b: int) -> tuple[Tensor, ...]:
    """Row b of each (B, H_l) tensor, as (1, H_l) copies (a state must not keep the batch alive)."""
    return tuple(h[b : b + 1].clone() for h in hidden)
