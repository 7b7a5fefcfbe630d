"""LightningDataModule over a prepared data directory: session-parallel blocks for every stage."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, IterableDataset

from sessrec.checks import check_number
from sessrec.data.batching import Block, SessionParallelIterator, max_rank_sessions, with_sentinels
from sessrec.data.prepared import PreparedData, Split
from sessrec.errors import DataError
from sessrec.features.catalogue import Catalogue

SplitName = Literal["train_full", "train", "valid", "test"]
log = logging.getLogger("sessrec")
STAGE_SPLITS = {"fit": ("train",), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


class _BlockDataset(IterableDataset):
    """Wraps a SessionParallelIterator so a DataLoader (batch_size=None) passes blocks through.

    Counts the blocks it has yielded in the current epoch, so a checkpoint taken mid-epoch resumes at
    the next block (Lightning fetches no block ahead from a loader with a length).
    """

    def __init__(self, iterator: SessionParallelIterator) -> None:
        self.iterator = iterator
        self.position = 0  # blocks yielded in the current epoch
        self.start = 0  # block the next epoch iteration starts at (set by a resume)

    def __iter__(self) -> Iterator[Block]:
        start, self.start = self.start, 0
        self.position = start
        for block in self.iterator.blocks(start):
            self.position += 1
            yield block

    def __len__(self) -> int:
        return len(self.iterator)


class _BlockLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints (its `_Stateful` protocol)."""

    epoch_blocks: Callable[[], float] | None = None  # blocks the trainer runs per epoch (limit_train_batches)

    def state_dict(self) -> dict[str, int]:
        position, n = self.dataset.position, len(self.dataset)
        if self.epoch_blocks is not None:
            n = min(n, self.epoch_blocks())
        return {"blocks": position if position < n else 0}  # epoch finished: resume at the next one

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.dataset.start = int(state.get("blocks", 0))


class SessionDataModule(L.LightningDataModule):
    """Serves a prepared data directory (see `python -m sessrec prepare`).

    Args:
        data_dir: folder written by `prepare` (or `generate` + `prepare`).
        batch_size: sessions processed in parallel during training (the reference's batch size). Capped,
            with a warning, at the sessions of the training split (per device): the reference fails on a
            larger one, and the slots beyond would only hold padding (yet count in the loss's batch size).
        eval_batch_size: sessions in parallel during evaluation (larger is faster; same metrics). Capped,
            silently, at the sessions of the evaluated split (the metrics do not change).
        steps_per_block: session-parallel steps per `training_step` (amortises framework overhead).
        train_split: split to train on: "train" (model selection against "valid") or "train_full".
        val_split, test_split, predict_split: the splits evaluated by validate / test / predict.

    `setup` refuses (DataError naming the option and folder) a split the stage uses that has no session
    of >= 2 events: the training split, the validation split when `fit` validates, the evaluated one.
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        steps_per_block: int = 32,
        train_split: SplitName = "train",
        val_split: SplitName = "valid",
        test_split: SplitName = "test",
        predict_split: SplitName = "test",
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                            ("steps_per_block", steps_per_block)):
            check_number(name, value, low=1, integer=True, what="a positive integer")
        self.data_dir = Path(data_dir)
        self.data = PreparedData.load(self.data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.steps_per_block = steps_per_block
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": predict_split}

    @property
    def n_items(self) -> int:
        return self.data.n_items

    @property
    def item_ids(self) -> np.ndarray:
        return self.data.item_ids

    def catalogue(self) -> Catalogue:
        """The item catalogue feature encoders bind to (feature paths resolve against `data_dir`)."""
        return Catalogue(self.data.item_ids, self.data_dir, self.train_counts())

    def split(self, stage: str) -> Split:
        return self.data.split(self.splits[stage])

    def session_keys(self, stage: str) -> np.ndarray | None:
        """The input's session key of each session of the stage's split (None: not kept by `prepare`)."""
        return self.data.session_keys(self.splits[stage])

    def train_counts(self) -> np.ndarray:
        """(N,) event counts of the training split: popularity for sampling, logQ and top-N ranking."""
        return self.data.counts(self.splits["train"])

    def setup(self, stage: str) -> None:
        """Refuse an empty split the stage uses, before any training or evaluation."""
        for key in self._used_splits(stage):
            self._check_not_empty(key, stage)

    def _used_splits(self, stage: str) -> tuple[str, ...]:
        """The `splits` keys `stage` reads: `fit` reads "val" only when the trainer validates."""
        used = STAGE_SPLITS.get(stage, ())
        trainer = self.trainer
        if stage == "fit" and trainer is not None and trainer.limit_val_batches != 0 and is_overridden(
                "validation_step", trainer.lightning_module):
            used += ("val",)
        return used

    def _check_not_empty(self, key: str, stage: str) -> None:
        """DataError naming `data.<key>_split` and the folder when the split has nothing to predict."""
        split = self.split(key)
        if key == "predict" and split.n_sessions > 0:  # a one-event session is predicted after its event
            return
        if max_rank_sessions(split.offsets) > 0:
            return
        what = ("is empty (0 sessions)" if split.n_sessions == 0
                else f"has no session of 2 or more events ({split.n_sessions} sessions)")
        option = f"data.{key}_split"
        hint = f"choose another {option}"
        if stage == "fit" and key == "val":
            hint = f"set trainer.limit_val_batches 0 to train without validation, or {hint}"
        raise DataError(f"{option} '{self.splits[key]}' of {self.data_dir} {what}: {hint}")

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _capped(self, stage: str, batch_size: int, offsets: np.ndarray, rank: int, world: int) -> int:
        """`batch_size`, at most the most sessions a device iterates (at least 1); a warning for training."""
        n = max(max_rank_sessions(offsets, world), 1)
        if batch_size <= n:
            return batch_size
        if stage == "train" and rank == 0:
            log.warning("data.batch_size %d is larger than the %d sessions of data.train_split '%s'%s: "
                        "training with batch size %d", batch_size, n, self.splits["train"],
                        " per device" if world > 1 else "", n)
        return n

    def _loader(self, stage: str, batch_size: int, sentinels: bool = False) -> DataLoader:
        split = self.split(stage)
        items, offsets = with_sentinels(split) if sentinels else (split.items, split.offsets)
        rank, world = self._rank_world()
        batch_size = self._capped(stage, batch_size, offsets, rank, world)
        iterator = SessionParallelIterator(
            items, offsets, batch_size, self.steps_per_block, rank=rank, world_size=world
        )
        # A private generator: a DataLoader draws its base seed from the global RNG at every epoch start
        # otherwise, and a mid-epoch resume would then see another dropout stream than a run never stopped.
        generator = torch.Generator()
        return _BlockLoader(_BlockDataset(iterator), batch_size=None, num_workers=0, generator=generator)

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", self.batch_size)
        if self.trainer is not None:
            loader.epoch_blocks = lambda: self.trainer.num_training_batches
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        """`predict_split` with a sentinel after each session (see `sessrec.evaluation.predict`)."""
        return self._loader("predict", self.eval_batch_size, sentinels=True)
