"""`RankingModule`: the evaluation half every sessrec LightningModule shares.

Validation, test and predict rank each next-item target of a split against all items (or the
`eval_top_n` most popular ones) with one loop (`sessrec.evaluation.loop.evaluate_block`) and one set of
metrics. A subclass gives the scores: `score_step(inputs (B,), reset (B,)) -> (B, N)`, optionally a
factored `rank_step` (ranked without the (B, N) scores) and `reset_evaluation()` for its per-slot state.
`RecurrentRanking` adds the carried hidden state of a recurrent net: `SessionRecModule` (trained nets)
extends it, `BaselineModule` (POP, item-kNN, ...) extends `RankingModule`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from sessrec.data.batching import Block
from sessrec.evaluation.loop import evaluate_block
from sessrec.evaluation.metrics import RankingMetrics, TieMode, check_eval_options, top_n_items
from sessrec.evaluation.predict import PredictMixin
from sessrec.evaluation.screening import FactoredScores, ScreenedTable
from sessrec.models.base import SessionNet


class RankingModule(PredictMixin, L.LightningModule):
    """Args: cutoffs: k of Recall@k and MRR@k; tie_mode: how tied scores rank ("conservative", as in
    the papers); eval_top_n: rank only against the N most popular training items (None: all)."""

    def __init__(
        self,
        cutoffs: list[int],
        tie_mode: TieMode,
        eval_top_n: int | None,
    ) -> None:
        super().__init__()
        check_eval_options(cutoffs, tie_mode, eval_top_n)
        self.tie_mode = tie_mode
        self.eval_top_n = eval_top_n
        self.val_metrics = RankingMetrics(cutoffs, prefix="val_")
        self.test_metrics = RankingMetrics(cutoffs, prefix="test_")
        self.register_buffer("candidates", torch.zeros(0, dtype=torch.long), persistent=False)

    def score_step(self, inputs: Tensor, reset: Tensor) -> Tensor:
        """inputs (B,), reset (B,) -> scores (B, N) over all items."""
        raise NotImplementedError

    def rank_step(self, inputs: Tensor, reset: Tensor) -> Tensor | FactoredScores:
        """What the metrics rank: `score_step` unless a subclass has a factored form."""
        return self.score_step(inputs, reset)

    def reset_evaluation(self) -> None:
        """Clear per-slot evaluation state (called at each validation / test / predict epoch start)."""

    def set_candidates(self, train_counts: Tensor) -> None:
        """Item counts (N,) of the training split -> the `eval_top_n` candidate ids (when set)."""
        if self.eval_top_n:
            self.candidates = top_n_items(train_counts, self.eval_top_n).to(self.device)

    def on_validation_epoch_start(self) -> None:
        self.reset_evaluation()

    def on_test_epoch_start(self) -> None:
        self.reset_evaluation()

    def on_predict_epoch_start(self) -> None:
        self.reset_evaluation()

    def validation_step(self, block: Block, batch_idx: int) -> None:
        self._evaluate(block, self.val_metrics)

    def test_step(self, block: Block, batch_idx: int) -> None:
        self._evaluate(block, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute())
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def _evaluate(self, block: Block, metrics: RankingMetrics) -> None:
        candidates = self.candidates if self.candidates.numel() else None
        evaluate_block(self.rank_step, block, metrics, self.tie_mode, candidates)


class RecurrentRanking(RankingModule):
    """Evaluation of a recurrent `net` (`sessrec.models.SessionNet`) whose hidden state is carried between
    the steps of an evaluation and zeroed where a new session starts."""

    net: SessionNet

    def __init__(self, cutoffs: list[int], tie_mode: TieMode, eval_top_n: int | None) -> None:
        super().__init__(cutoffs, tie_mode, eval_top_n)
        self._eval_hidden: list[Tensor] | None = None  # (B, H_l) per layer
        self._eval_table: ScreenedTable | None = None  # the item table prepared for ranking, per evaluation

    def score_step(self, inputs: Tensor, reset: Tensor) -> Tensor:
        """inputs (B,), reset (B,) -> scores (B, N)."""
        scores, self._eval_hidden = self.net(inputs, self._eval_state(inputs, reset))  # (B, N)
        return scores

    def rank_step(self, inputs: Tensor, reset: Tensor) -> Tensor | FactoredScores:
        """As factors when the net has `ranking_table()` and `query(inputs, hidden)` (GRU4Rec, concat
        ParallelRNN): ranked by `sessrec.evaluation.screening` without the (B, N) scores."""
        table = self.net.ranking_table()  # (N, D+1) or None
        if table is None:
            return self.score_step(inputs, reset)
        query, self._eval_hidden = self.net.query(inputs, self._eval_state(inputs, reset))  # (B, D)
        if self._eval_table is None:
            self._eval_table = ScreenedTable(table)
        return FactoredScores(query, self._eval_table)

    def reset_evaluation(self) -> None:
        self._eval_hidden = None
        self._eval_table = None

    def _eval_state(self, inputs: Tensor, reset: Tensor) -> list[Tensor]:
        if self._eval_hidden is None or self._eval_hidden[0].shape[0] != inputs.shape[0]:
            self._eval_hidden = self.net.init_hidden(inputs.shape[0], self.device)
        keep = (~reset).unsqueeze(1).to(self._eval_hidden[0].dtype)  # (B, 1)
        return [h * keep for h in self._eval_hidden]
