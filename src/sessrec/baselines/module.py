"""Evaluate-only LightningModule for the non-neural baselines (POP, session-POP, item-kNN).

`python -m sessrec test --config configs/baselines/<name>.yaml` fits the baseline's statistics on the
training split at set-up and evaluates it with the same loop and metrics as the recurrent models.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn

from sessrec.data.batching import Block
from sessrec.errors import ConfigError
from sessrec.evaluation.loop import evaluate_block
from sessrec.evaluation.metrics import RankingMetrics, check_eval_options, top_n_items
from sessrec.evaluation.predict import PredictMixin


class BaselineModule(PredictMixin, L.LightningModule):
    """Args: net: a baseline (`sessrec.baselines.Pop`, `SessionPop`, `ItemKNN`); cutoffs, tie_mode and
    eval_top_n as in `SessionRecModule`."""

    def __init__(
        self,
        net: nn.Module,
        cutoffs: list[int] = [1, 5, 10, 20],  # noqa: B006
        tie_mode: Literal["standard", "conservative", "median"] = "conservative",
        eval_top_n: int | None = None,
    ) -> None:
        super().__init__()
        check_eval_options(cutoffs, tie_mode, eval_top_n)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.val_metrics = RankingMetrics(cutoffs, prefix="val_")
        self.test_metrics = RankingMetrics(cutoffs, prefix="test_")
        self.register_buffer("candidates", torch.zeros(0, dtype=torch.long), persistent=False)
        self._fitted = False
        self._begun = False

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        split = dm.split("train")
        expected = getattr(self.net, "expected_items", None)
        if expected is not None and expected != dm.n_items:
            raise ConfigError(f"{type(self.net).__name__} was built for {expected} items, the data has {dm.n_items}")
        if not self._fitted:
            self.net.fit(split.items, split.offsets, dm.n_items)
            self._fitted = True
        if self.hparams.eval_top_n:
            self.candidates = top_n_items(dm.train_counts(), self.hparams.eval_top_n)

    def score_step(self, inputs: Tensor, reset: Tensor) -> Tensor:
        """inputs (B,), reset (B,) -> scores (B, N); per-slot state is cleared at each epoch start."""
        if not self._begun:
            self.net.begin(inputs.shape[0], self.device)
            self._begun = True
        return self.net(inputs, reset)  # (B, N)

    def _eval(self, block: Block, metrics: RankingMetrics) -> None:
        cands = self.candidates if self.candidates.numel() else None
        evaluate_block(self.score_step, block, metrics, self.hparams.tie_mode, cands)

    def on_validation_epoch_start(self) -> None:
        self._begun = False

    on_test_epoch_start = on_predict_epoch_start = on_validation_epoch_start

    def validation_step(self, block: Block, batch_idx: int) -> None:
        self._eval(block, self.val_metrics)

    def test_step(self, block: Block, batch_idx: int) -> None:
        self._eval(block, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute())
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
