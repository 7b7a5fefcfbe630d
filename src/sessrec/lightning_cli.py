"""LightningCLI set-up: argument links from the data to the model, and project defaults."""

from __future__ import annotations

import os
import warnings

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from sessrec.data.datamodule import SessionDataModule


class SessrecCLI(LightningCLI):
    """`fit`, `validate`, `test`, `predict` with `--config configs/<x>.yaml`.

    The model is any LightningModule (`class_path`), usually `sessrec.module.SessionRecModule` with a
    `net`, or `sessrec.baselines.BaselineModule`. The catalogue size flows from the data to the net.
    """

    def __init__(self, *args, **kwargs) -> None:
        if "OMP_NUM_THREADS" not in os.environ:
            # The session-parallel step is many small ops: one intra-op thread is as fast on an idle CPU
            # and 2-3x faster on a busy one (OpenMP spin-waits). Set OMP_NUM_THREADS to override.
            torch.set_num_threads(1)
        # Our block datasets are iterable AND sized on purpose (same length on every DDP rank).
        warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(LightningModule, SessionDataModule, *args, subclass_mode_model=True, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.n_items", "model.init_args.net.init_args.n_items", apply_on="instantiate")
        parser.set_defaults({"trainer.num_sanity_val_steps": 0, "trainer.enable_model_summary": False})
