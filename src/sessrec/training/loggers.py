"""Weights & Biases logging that never hangs without network: offline unless WANDB_MODE says otherwise.

`WandbLogger` is Lightning's, with the W&B mode resolved by `wandb_mode` (explicit argument, else the
WANDB_MODE environment variable, else "offline") and a bounded `init_timeout`, so a machine without
network (or with an API key but no route to the server) writes a local run folder instead of waiting.
Upload an offline run later with `wandb sync <save_dir>/wandb/offline-run-*`.

In a LightningCLI config (see configs/logger/wandb.yaml):

    trainer:
      logger:
        class_path: sessrec.training.loggers.WandbLogger
        init_args: {project: sessrec, log_model: true}

The full LightningCLI config reaches the run's config through `sessrec.lightning_cli.SessrecCLI`
(key `config`); metrics are whatever the module and callbacks log (per step and per epoch).
"""

from __future__ import annotations

import os
from typing import Literal

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

from sessrec.errors import ConfigError

Mode = Literal["offline", "online", "disabled"]
_ALIASES = {"dryrun": "offline", "run": "online"}  # older WANDB_MODE spellings


def wandb_mode(mode: str | None = None) -> str:
    """The W&B mode to use: `mode` if given, else $WANDB_MODE, else "offline"."""
    value = mode or os.environ.get("WANDB_MODE") or "offline"
    value = _ALIASES.get(value, value)
    if value not in ("offline", "online", "disabled"):
        source = "mode" if mode else "WANDB_MODE"
        raise ConfigError(f"{source} must be offline, online or disabled, got {value!r}")
    return value


def wandb_settings(init_timeout: float) -> dict:
    """wandb.init `settings`: bounded start-up, no console capture (Lightning prints its own output)."""
    return {"init_timeout": init_timeout, "console": "off"}


class WandbLogger(_LightningWandbLogger):
    """Lightning's W&B logger, offline unless asked otherwise (see the module docstring).

    Args:
        project: W&B project.
        name: run name (default: W&B's random name).
        save_dir: folder that receives `wandb/` (the local run files).
        group: W&B group (e.g. the experiment), job_type: e.g. "train"; tags: run tags.
        log_model: upload checkpoints as artifacts: True at the end of training, "all" as they are
            written (needs a ModelCheckpoint callback); in offline mode they are stored for `wandb sync`.
        mode: "offline", "online" or "disabled"; None: $WANDB_MODE, else "offline".
        init_timeout: seconds wandb.init may take before it fails (online mode without network).
    """

    def __init__(
        self,
        project: str = "sessrec",
        name: str | None = None,
        save_dir: str = ".",
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        log_model: bool | Literal["all"] = False,
        mode: Mode | None = None,
        init_timeout: float = 60.0,
    ) -> None:
        os.makedirs(save_dir, exist_ok=True)  # wandb falls back to a temporary folder when it is missing
        super().__init__(
            name=name,
            save_dir=save_dir,
            project=project,
            log_model=log_model,
            group=group,
            job_type=job_type,
            tags=tags,
            mode=wandb_mode(mode),
            settings=wandb_settings(init_timeout),
        )

    def finish(self) -> None:
        """End the W&B run (the next WandbLogger in this process would otherwise reuse it)."""
        if self._experiment is not None:
            self._experiment.finish()
            self._experiment = None
