"""Evaluate-only LightningModule for the non-neural baselines (POP, session-POP, item-kNN).

`python -m sessrec test --config configs/baselines/<name>.yaml` fits the baseline's statistics on the
training split at set-up and evaluates it with the same loop and metrics as the recurrent models
(`sessrec.evaluation.module.RankingModule`).
"""

from __future__ import annotations

from torch import Tensor, nn

from sessrec.errors import ConfigError
from sessrec.evaluation.metrics import TieMode
from sessrec.evaluation.module import RankingModule


class BaselineModule(RankingModule):
    """Args: net: a baseline (`sessrec.baselines.Pop`, `SessionPop`, `ItemKNN`); cutoffs, tie_mode and
    eval_top_n as in `RankingModule`."""

    def __init__(
        self,
        net: nn.Module,
        cutoffs: list[int] = [1, 5, 10, 20],  # noqa: B006
        tie_mode: TieMode = "conservative",
        eval_top_n: int | None = None,
    ) -> None:
        super().__init__(cutoffs, tie_mode, eval_top_n)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
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
        self.set_candidates(dm.train_counts())

    def score_step(self, inputs: Tensor, reset: Tensor) -> Tensor:
        """inputs (B,), reset (B,) -> scores (B, N); per-slot state is cleared at each epoch start."""
        if not self._begun:
            self.net.begin(inputs.shape[0], self.device)
            self._begun = True
        return self.net(inputs, reset)  # (B, N)

    def reset_evaluation(self) -> None:
        self._begun = False
