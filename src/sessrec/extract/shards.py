"""Image sources: a folder of <item_id>.jpg|.png or webdataset tar shards, read as `Ref`s in `Shard`s;
`ImageDataset` decodes and normalises them for a CNN; `write_shards` packs a folder into tar shards."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sessrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet normalisation


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
