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
(key `config`) and is written as config.yaml into the run's own folder (`run_folder`: where its
checkpoints go) and into the W&B run's files (synced with it); metrics are whatever the module and
callbacks log (per step and per epoch). `WandbTables` (added by the CLI whenever a WandbLogger is
configured) logs two tables after `test`: the test metrics and example recommendations.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

from sessrec.errors import ConfigError
from sessrec.io import atomic_write

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

    @property
    def started(self) -> bool:
        """Whether the W&B run exists (reading `experiment` would start one)."""
        return self._experiment is not None

    def finish(self) -> None:
        """End the W&B run (the next WandbLogger in this process would otherwise reuse it)."""
        if self.started:
            self._experiment.finish()
            self._experiment = None


def log_table_once(
    project: str,
    group: str,
    name: str,
    job_type: str,
    out: str | Path,
    marker: str,
    key: str,
    columns: list[str],
    rows: list[list[Any]],
    config: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    init_timeout: float = 60.0,
) -> bool:
    """Log `rows` as the wandb.Table `key` of a run `name` (group, job type) saved under `out`, once per
    content: a hash of the table is kept in <out>/<marker>, so a rerun that changed nothing logs nothing.
    `summary` goes to the run's summary. Offline unless WANDB_MODE says otherwise; nothing is logged
    when it says "disabled". Returns True when the table was logged."""
    if wandb_mode() == "disabled":
        return False
    import wandb

    digest = hashlib.sha256(json.dumps([columns, rows], default=str).encode()).hexdigest()
    marker_path = Path(out) / marker
    if marker_path.is_file() and marker_path.read_text().strip() == digest:
        return False
    run = wandb.init(project=project, group=group, name=name, job_type=job_type, dir=str(out),
                     mode=wandb_mode(), settings=wandb_settings(init_timeout), config=config or {})
    try:
        run.log({key: wandb.Table(columns=columns, data=rows)})
        if summary:
            run.summary.update(summary)
    finally:
        run.finish()
    with atomic_write(marker_path) as tmp:
        tmp.write_text(digest + "\n")
    return True


def run_folder(logger: _LightningWandbLogger) -> Path:
    """The run's own folder, <save_dir>/<project>/<run id>: its checkpoints go there (Lightning's
    ModelCheckpoint without a dirpath), and so does its config.yaml."""
    return Path(logger.save_dir or ".") / str(logger.name) / str(logger.version)


class WandbTables(L.Callback):
    """After `test`, log to every W&B logger a "test_results" table (metric, value) and an "examples"
    table: `n_examples` test sessions (seeded choice among those with >= 2 events) with their items
    before the last one, the last item (the target), the top `k` recommendations after the history
    and the target's rank in them (0: not in the list). Item ids are the original ones.

    Args:
        n_examples: sessions in the examples table (0: no examples table).
        k: recommendations per example.
        seed: which sessions are chosen.
    """

    def __init__(self, n_examples: int = 10, k: int = 10, seed: int = 0) -> None:
        self.n_examples, self.k, self.seed = n_examples, k, seed

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, _LightningWandbLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        import wandb

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_")}
        tables: dict[str, Any] = {"test_results": wandb.Table(columns=["metric", "value"],
                                                              data=[[k, v] for k, v in sorted(metrics.items())])}
        rows = self.examples(trainer, pl_module)
        if rows:
            columns = ["session", "history", "target", f"top_{self.k}", "target_rank"]
            tables["examples"] = wandb.Table(columns=columns, data=rows)
        for logger in loggers:
            logger.experiment.log(tables)

    def examples(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[list[Any]]:
        """[session index, history ids, target id, top-k ids, target rank] rows (see the class docstring)."""
        from sessrec.evaluation.predict import recommend

        datamodule = trainer.datamodule
        if self.n_examples <= 0 or datamodule is None or not hasattr(pl_module, "score_step"):
            return []
        split = datamodule.split("test")  # the data module's test split
        lengths = np.diff(split.offsets)  # (S,)
        eligible = np.flatnonzero(lengths >= 2)
        chosen = np.random.default_rng(self.seed).choice(eligible, min(self.n_examples, eligible.size), replace=False)
        ids = datamodule.item_ids  # index -> original id
        candidates = pl_module.candidates if getattr(pl_module, "candidates", None) is not None else None
        candidates = candidates if candidates is not None and candidates.numel() else None
        rows = []
        for s in sorted(chosen.tolist()):
            items = split.items[split.offsets[s] : split.offsets[s + 1]]
            top, _ = recommend(pl_module, items[:-1], self.k, candidates)
            hits = np.flatnonzero(top == items[-1])
            rows.append([s, " ".join(ids[i] for i in items[:-1]), ids[items[-1]], " ".join(ids[i] for i in top),
                         int(hits[0]) + 1 if hits.size else 0])
        return rows
