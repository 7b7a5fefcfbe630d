"""Analysis of trained runs: per-event target ranks, metrics by item-popularity bucket, example lists.

Used by `notebooks/analysis.ipynb`; every function also works on its own.

- `find_run(path)` / `discover_runs(root)`: the config, checkpoint and CSV logs of a run folder (a
  config's `trainer.default_root_dir`, or one run of an experiment output folder).
- `load_run(config, checkpoint)`: the module and data module a config describes, weights restored.
- `event_ranks(module, split)`: one row per (input, target) pair of a split with the target's rank,
  computed by the same session-parallel loop and `target_ranks` as `python -m sessrec test`, so the
  means of the per-event hits equal the logged Recall@k / MRR@k.
- `bucket_metrics(events, counts)`: Recall@k / MRR@k per popularity bucket of the target item.

Popularity buckets: items are sorted by their number of training events (the split the model trained
on), most popular first, ties by item index. With `shares=(0.2,)` the "head" is the first
ceil(0.2 * N) items of that order (N = all items of the index, including items without training
events) and the "tail" is every other item; more shares give more buckets (`shares=(0.2, 0.5)`: top
20%, next 30%, last 50%). A test event belongs to the bucket of its target item. The head usually covers
most training events; `bucket_metrics` reports that share next to each bucket's metrics.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from sessrec.data.batching import SessionParallelIterator, max_rank_sessions
from sessrec.data.prepared import Split
from sessrec.errors import ConfigError
from sessrec.evaluation.loop import block_scores
from sessrec.evaluation.metrics import target_ranks, top_n_items
from sessrec.evaluation.predict import recommend  # noqa: F401 (the notebook's analysis.recommend)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


# ---- run folders ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """What a run folder holds: its resolved config, a checkpoint (none for baselines), CSV logs."""

    name: str
    config: Path | None
    checkpoint: Path | None = None
    metrics: list[Path] = field(default_factory=list)  # CSVLogger metrics.csv files, oldest first


def _newest(paths: Sequence[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime, default=None)


def _files(root: Path, name: str) -> list[Path]:
    """Files called `name` under `root`, outside W&B folders (whose files/config.yaml is W&B's own)."""
    return sorted(p for p in root.rglob(name) if "wandb" not in p.relative_to(root).parts)


def find_run(path: str | os.PathLike, name: str | None = None) -> Run:
    """The run in folder `path`: its `config.yaml` (LightningCLI saves the resolved config in the log
    folder: `path` itself, else the newest one below it), `checkpoints/best.ckpt` (the validated
    overlay's best epoch), else `checkpoints/last.ckpt`, else the newest `*.ckpt`, and every
    `metrics.csv`. Missing parts are None / empty."""
    root = Path(path)
    if not root.is_dir():
        return Run(name or root.name, None)
    config = root / "config.yaml"
    if not config.is_file():
        config = _newest(_files(root, "config.yaml"))
    best, last = root / "checkpoints" / "best.ckpt", root / "checkpoints" / "last.ckpt"
    checkpoint = next((p for p in (best, last) if p.is_file()), None) or _newest(_files(root, "*.ckpt"))
    metrics = sorted(_files(root, "metrics.csv"), key=lambda p: p.stat().st_mtime)
    return Run(name or root.name, config, checkpoint, metrics)


def discover_runs(root: str | os.PathLike) -> dict[str, Run]:
    """Every subfolder of `root` holding a run config (e.g. an experiment's output folder), by name."""
    root = Path(root)
    if not root.is_dir():
        return {}
    subs = [sub for sub in sorted(root.iterdir()) if sub.is_dir() and sub.name != "wandb"]
    runs = {sub.name: find_run(sub) for sub in subs}
    return {name: run for name, run in runs.items() if run.config is not None}


def as_run(name: str, spec: str | os.PathLike | dict[str, Any]) -> Run:
    """A run from a folder (`find_run`) or from `{"config": ..., "checkpoint": ..., "dir": ...}`
    (checkpoint None or absent: a baseline; `dir`, optional, is searched for CSV logs)."""
    if not isinstance(spec, dict):
        return find_run(spec, name)
    unknown = set(spec) - {"config", "checkpoint", "dir"}
    if unknown or "config" not in spec:
        raise ConfigError(f"run '{name}': expected keys config, checkpoint, dir (got {', '.join(spec)})")
    logs = find_run(spec["dir"]).metrics if spec.get("dir") else []
    checkpoint = spec.get("checkpoint")
    return Run(name, Path(spec["config"]), Path(checkpoint) if checkpoint else None, logs)


def read_metrics(run: Run) -> pd.DataFrame:
    """The newest CSVLogger `metrics.csv` of `run` that has training rows; empty if none.

    Lightning writes one row per logging call: training-loss rows per logged step, `val_*` rows per
    epoch. The per-step loss is returned as `train_loss` whether it was logged as `train_loss` or, with
    `on_epoch=True`, as `train_loss_step` (next to `train_loss_epoch`).
    """
    for path in reversed(run.metrics):
        frame = pd.read_csv(path)
        if "train_loss" not in frame.columns and "train_loss_step" in frame.columns:
            frame = frame.rename(columns={"train_loss_step": "train_loss"})
        if "train_loss" in frame.columns:
            return frame
    return pd.DataFrame()


def load_run(
    config: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """(module, data module) built from the `model` and `data` sections of a config (a file in
    configs/ or the `config.yaml` a run saved), with the checkpoint's weights.

    Relative paths in the config resolve against the working directory, as for the CLI. A baseline
    (`BaselineModule`, no checkpoint) is fitted on the data module's training split instead.
    """
    from sessrec.baselines.module import BaselineModule
    from sessrec.training.checkpoints import check_item_map, item_map, load_checkpoint
    from sessrec.encoders.registry import discover
    from sessrec.lightning_cli import SessrecCLI
    from sessrec.models.base import SessionNet

    cfg = yaml.safe_load(Path(config).read_text()) or {}
    if "model" not in cfg or "data" not in cfg:
        raise ConfigError(f"{config}: needs 'model' and 'data' sections")
    data = dict(cfg["data"])
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    trainer = {"logger": False, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
               "enable_checkpointing": False}
    args = {"seed_everything": cfg.get("seed_everything", True), "model": cfg["model"], "data": data,
            "trainer": trainer}
    discover()  # plug-in encoders named by class name
    with warnings.catch_warnings():  # inside Jupyter, sys.argv holds the kernel's own arguments
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
        cli = SessrecCLI(args=args, run=False, save_config_callback=None)
    module, datamodule = cli.model, cli.datamodule
    if isinstance(module.net, SessionNet) and not module.net.is_bound:  # a ParallelRNN reads its features now
        module.net.bind(datamodule.catalogue())
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint)  # weights_only: runs no pickled code
        check_item_map(checkpoint, loaded, item_map(datamodule.item_ids), datamodule.data_dir)
        module.load_state_dict(loaded["state_dict"])
    elif isinstance(module, BaselineModule):
        train = datamodule.split("train")
        module.net.fit(train.items, train.offsets, datamodule.n_items)
    else:
        name = type(module).__name__
        raise ConfigError(f"{config}: {name} needs a checkpoint (only baselines are fitted on load)")
    return module.to(device).eval(), datamodule


# ---- per-event ranks -------------------------------------------------------------------------------
@torch.no_grad()
def event_ranks(
    module: Any,
    split: Split,
    tie_mode: str = "conservative",
    candidates: torch.Tensor | None = None,
    batch_size: int = 512,
) -> pd.DataFrame:
    """Rank of every target of `split` under `module` (anything with `score_step(inputs, reset)`).

    Returns one row per (input, target) pair, sorted by session and position, with columns `session`
    (index in the split), `position` (index of the target event within its session, >= 1), `input`,
    `target` (item indices) and `rank` (float, see `sessrec.evaluation.metrics.target_ranks`).
    """
    batch_size = min(batch_size, max(max_rank_sessions(split.offsets), 1))  # more slots: padding only
    # A second iterator over the event indices has exactly the same slot layout (it depends only on
    # the offsets), so its targets say which event each active row predicts.
    where = SessionParallelIterator(np.arange(split.n_events), split.offsets, batch_size, 64)
    blocks = SessionParallelIterator(split.items, split.offsets, batch_size, 64)
    module.on_test_epoch_start()  # clears the evaluation state (hidden state, session history)
    device = module.device
    cands = None if candidates is None else candidates.to(device)
    found, ranks = [], []
    for block, index in zip(blocks, where):
        block = block.to(device)
        for t, scores in block_scores(module.score_step, block):  # (B, N)
            step_ranks = target_ranks(scores, block.targets[t], tie_mode, cands).cpu()  # (B,)
            found.append(index.targets[t][index.active[t]])  # (b,) event index of each target
            ranks.append(step_ranks[index.active[t]])  # (b,)
    event = torch.cat(found).numpy() if found else np.zeros(0, np.int64)  # (M,)
    rank = torch.cat(ranks).numpy() if ranks else np.zeros(0, np.float32)  # (M,)
    session = np.searchsorted(split.offsets, event, side="right") - 1  # (M,)
    frame = pd.DataFrame({
        "session": session,
        "position": event - split.offsets[session],
        "input": split.items[event - 1],
        "target": split.items[event],
        "rank": rank.astype(np.float64),
    })
    return frame.sort_values(["session", "position"], ignore_index=True)


def eval_candidates(module: Any, datamodule: Any) -> torch.Tensor | None:
    """The items (C,) a module ranks against (`eval_top_n` most popular), or None for all items."""
    top_n = module.hparams.get("eval_top_n")
    return top_n_items(torch.as_tensor(datamodule.train_counts()), top_n) if top_n else None


def evaluate(
    module: Any, datamodule: Any, split: str = "test", batch_size: int | None = None
) -> pd.DataFrame:
    """`event_ranks` of a loaded run on the data module's `split` ("test" = its test split), with the
    module's tie mode and candidate set (`eval_top_n`) and a `target_count` column (training events of
    the target, the popularity the buckets use)."""
    counts = datamodule.train_counts()  # (N,)
    events = event_ranks(
        module, datamodule.split(split), module.hparams.get("tie_mode", "conservative"),
        eval_candidates(module, datamodule), batch_size or datamodule.eval_batch_size,
    )
    events["target_count"] = counts[events["target"].to_numpy()]
    return events


def summary_metrics(ranks: np.ndarray, cutoffs: Sequence[int] = (20,)) -> dict[str, float]:
    """Recall@k and MRR@k (as `RankingMetrics` computes them) of ranks (M,); NaN when M == 0."""
    ranks = np.asarray(ranks, dtype=np.float64)  # (M,)
    out = {}
    for k in cutoffs:
        hit = ranks <= k  # (M,)
        out[f"recall@{k}"] = float(hit.mean()) if ranks.size else math.nan
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean()) if ranks.size else math.nan
    return out


# ---- popularity buckets ----------------------------------------------------------------------------
def bucket_names(shares: Sequence[float]) -> list[str]:
    """"head"/"tail" for one share, else "top 0-20%", "top 20-50%", ... (one more name than shares)."""
    if len(shares) == 1:
        return ["head", "tail"]
    edges = [0.0, *shares, 1.0]
    return [f"top {lo * 100:g}-{hi * 100:g}%" for lo, hi in zip(edges[:-1], edges[1:])]


def popularity_buckets(counts: np.ndarray, shares: Sequence[float] = (0.2,)) -> np.ndarray:
    """Bucket (N,) int of each item: 0 for the ceil(shares[0] * N) most popular items (ties by index),
    1 up to ceil(shares[1] * N), ..., len(shares) for the rest. See the module docstring."""
    shares = list(shares)
    if not shares or any(not 0 < s < 1 for s in shares) or shares != sorted(set(shares)):
        raise ConfigError(f"shares must be increasing fractions in (0, 1), got {shares}")
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind="stable")  # (N,) most popular first, ties by index
    ends = [math.ceil(s * counts.size) for s in shares]
    by_position = np.searchsorted(np.array(ends), np.arange(counts.size), side="right")  # (N,)
    buckets = np.empty(counts.size, dtype=np.int64)
    buckets[order] = by_position
    return buckets


def bucket_metrics(
    events: pd.DataFrame,
    counts: np.ndarray,
    cutoffs: Sequence[int] = (20,),
    shares: Sequence[float] = (0.2,),
) -> pd.DataFrame:
    """Recall@k / MRR@k by the popularity bucket of the target (rows: the buckets, then "all").

    `events` has columns `target` and `rank` (`event_ranks`); `counts` (N,) are the training events per
    item. Columns: `items` (items in the bucket), `train_share` (their share of the training events),
    `events` (test events whose target is in the bucket), `event_share`, then the metrics (NaN for a
    bucket without events).
    """
    counts = np.asarray(counts)
    buckets = popularity_buckets(counts, shares)  # (N,)
    names = bucket_names(shares)
    target_bucket = buckets[events["target"].to_numpy()]  # (M,)
    ranks = events["rank"].to_numpy()  # (M,)
    total_train, total_events = max(int(counts.sum()), 1), max(len(events), 1)
    rows = []
    for b, name in [*enumerate(names), (None, "all")]:
        in_items = np.ones_like(buckets, bool) if b is None else buckets == b  # (N,)
        in_events = np.ones_like(target_bucket, bool) if b is None else target_bucket == b  # (M,)
        rows.append({
            "bucket": name,
            "items": int(in_items.sum()),
            "train_share": counts[in_items].sum() / total_train,
            "events": int(in_events.sum()),
            "event_share": in_events.sum() / total_events,
            **summary_metrics(ranks[in_events], cutoffs),
        })
    return pd.DataFrame(rows).set_index("bucket")


# ---- example recommendations -----------------------------------------------------------------------
def item_labels(
    items_file: str | os.PathLike, id_column: str = "item_id", columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Descriptive columns of an items table (.parquet or .csv) indexed by item id as text: the first row
    of a duplicated id wins, missing values become "" and every value is text. ConfigError naming the
    file when `id_column` or one of `columns` is not in it."""
    path = Path(items_file)
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    missing = [c for c in [id_column, *columns] if c not in table.columns]
    if missing:
        raise ConfigError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(table.columns)})")
    ids = table[id_column].astype(str).str.strip()
    labels = table[list(columns)].astype("string").fillna("").astype(str).set_index(ids.rename("item_id"))
    return labels.loc[~labels.index.duplicated()]


def image_index(folder: str | os.PathLike) -> dict[str, Path]:
    """Item id -> image file of a folder of `<item_id>.jpg|.jpeg|.png|.webp`; all-digit names are also
    indexed without leading zeros (H&M's 0108775015.jpg is item 108775015)."""
    index: dict[str, Path] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return index
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            index.setdefault(path.stem, path)
            if path.stem.isdigit():
                index.setdefault(path.stem.lstrip("0") or "0", path)
    return index
