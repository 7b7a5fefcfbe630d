"""LightningCLI set-up: argument links from the data to the model, and project defaults."""

from __future__ import annotations

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from sessrec.data.datamodule import SessionDataModule


class SessrecCLI(LightningCLI):
    """`fit`, `validate`, `test`, `predict` with `--config configs/<x>.yaml`.

    The model is any LightningModule (`class_path`), usually `sessrec.module.SessionRecModule` with a
    `net`, or `sessrec.baselines.BaselineModule`. The catalogue size flows from the data to the net.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(LightningModule, SessionDataModule, *args, subclass_mode_model=True, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.n_items", "model.init_args.net.init_args.n_items", apply_on="instantiate")
        parser.set_defaults({"trainer.num_sanity_val_steps": 0, "trainer.enable_model_summary": False})
