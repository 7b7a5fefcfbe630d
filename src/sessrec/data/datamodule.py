"""LightningDataModule over a prepared data directory: session-parallel blocks for every stage."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from sessrec.checks import check_number
from sessrec.data.batching import Block, SessionParallelIterator, with_sentinels
from sessrec.data.prepared import PreparedData, Split
from sessrec.features.catalogue import Catalogue

SplitName = Literal["train_full", "train", "valid", "test"]


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
        batch_size: sessions processed in parallel during training (the reference's batch size).
        eval_batch_size: sessions in parallel during evaluation (larger is faster; same metrics).
        steps_per_block: session-parallel steps per `training_step` (amortises framework overhead).
        train_split: split to train on: "train" (model selection against "valid") or "train_full".
        val_split, test_split, predict_split: the splits evaluated by validate / test / predict.
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

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, stage: str, batch_size: int, sentinels: bool = False) -> DataLoader:
        split = self.split(stage)
        items, offsets = with_sentinels(split) if sentinels else (split.items, split.offsets)
        rank, world = self._rank_world()
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
