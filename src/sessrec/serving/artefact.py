"""The exported model folder: what `sessrec export` writes and `Recommender.load` reads.

Layout of an export folder (format version 1)::

    manifest.json    format, versions (sessrec, torch), n_items, the net's config (class paths and
                     init args, feature paths rewritten to features/...), file list
    weights.pt       the net's state_dict: tensors only (`torch.load(weights_only=True)` reads it)
    items.json       the original item ids (strings) in index order: item index i is row i
    features/        copies of the feature files the encoders read (with their `.ids.txt` sidecars)

Loading needs neither the training config nor the prepared data. The net is rebuilt from the class
paths in the manifest, so loading imports those modules: load only folders you trust, as for a config
(`docs/design.md`, "Safe loading"); the weights themselves are read without running pickled code.

Feature files are found as encoder init args named `path` or ending in `_path` (every built-in encoder
follows that convention; a plug-in encoder reading other files cannot be exported yet). They are copied
whole, rows of items outside the catalogue included.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sessrec.errors import ConfigError, DataError
from sessrec.features.catalogue import Catalogue
from sessrec.models.base import SessionNet

FORMAT, FORMAT_VERSION = "sessrec-export", 1
MANIFEST, WEIGHTS, ITEMS, FEATURES = "manifest.json", "weights.pt", "items.json", "features"
Spec = dict[str, Any]  # {"class_path": "pkg.mod.Class", "init_args": {...}}


# ---- net configs: class paths and init args -----------------------------------------------------
def _import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise DataError(f"class_path '{class_path}': cannot import ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise DataError(f"class_path '{class_path}': not a torch.nn.Module")
    return cls


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and "class_path" in value


def instantiate(spec: Spec) -> nn.Module:
    """The module a {"class_path", "init_args"} spec describes; nested specs become modules too."""
    def build(value: Any) -> Any:
        if _is_spec(value):
            return instantiate(value)
        if isinstance(value, dict):
            return {k: build(v) for k, v in value.items()}
        if isinstance(value, list):
            return [build(v) for v in value]
        return value

    cls = _import_class(spec["class_path"])
    return cls(**{k: build(v) for k, v in (spec.get("init_args") or {}).items()})


def _path_args(spec: Any) -> list[tuple[dict, str]]:
    """(init_args dict, key) of every file argument of a FeatureEncoder in `spec`, depth first."""
    from sessrec.encoders.base import FeatureEncoder

    found: list[tuple[dict, str]] = []
    if isinstance(spec, list):
        for v in spec:
            found += _path_args(v)
    elif isinstance(spec, dict):
        args = spec.get("init_args") if _is_spec(spec) else None
        if args and issubclass(_import_class(spec["class_path"]), FeatureEncoder):
            found += [(args, k) for k, v in args.items()
                      if isinstance(v, str) and (k == "path" or k.endswith("_path"))]
        for v in (args if args is not None else spec).values():
            found += _path_args(v)
    return found


def feature_files(spec: Spec, catalogue: Catalogue) -> list[Path]:
    """The feature files the encoders of `spec` read, resolved against the catalogue's data folder."""
    return sorted({catalogue.resolve(args[key]).resolve() for args, key in _path_args(spec)})


# ---- from a checkpoint --------------------------------------------------------------------------
def find_config(ckpt_path: str | os.PathLike) -> Path:
    """The `config.yaml` LightningCLI saved for a checkpoint: beside it or one folder up."""
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise DataError(f"{ckpt}: checkpoint not found")
    for folder in (ckpt.parent, ckpt.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise ConfigError(f"{ckpt}: no config.yaml beside it or one folder up; pass the run's config")


def from_checkpoint(
    ckpt_path: str | os.PathLike, config: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, np.ndarray, Spec, Catalogue]:
    """(net with the checkpoint's weights, item ids (N,), resolved net spec, catalogue) of a run.

    Parses `config` (default: `find_config`) as `sessrec.evaluation.analysis.load_run` does; the prepared data
    folder it names (or `data_dir`) must exist: it holds the item map and the feature files.
    """
    from sessrec.encoders.registry import discover
    from sessrec.io import read_yaml
    from sessrec.training.checkpoints import check_item_map, item_map, load_checkpoint
    from sessrec.lightning_cli import SessrecCLI

    config = Path(config) if config is not None else find_config(ckpt_path)
    cfg = read_yaml(config) or {}
    if not isinstance(cfg, dict) or "model" not in cfg or "data" not in cfg:
        raise ConfigError(f"{config}: needs 'model' and 'data' sections")
    checkpoint = load_checkpoint(ckpt_path)  # weights_only: runs no pickled code
    data = dict(cfg["data"], **({"data_dir": str(data_dir)} if data_dir is not None else {}))
    trainer = {"logger": False, "accelerator": "cpu", "devices": 1, "enable_checkpointing": False}
    discover()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
        cli = SessrecCLI(args={"seed_everything": cfg.get("seed_everything", True), "model": cfg["model"],
                               "data": data, "trainer": trainer}, run=False, save_config_callback=None)
    module, datamodule = cli.model, cli.datamodule
    if not isinstance(getattr(module, "net", None), SessionNet):
        raise ConfigError(f"{config}: {type(module).__name__} has no net to serve (GRU4Rec or ParallelRNN)")
    check_item_map(ckpt_path, checkpoint, item_map(datamodule.item_ids), datamodule.data_dir)
    catalogue = datamodule.catalogue()
    if not module.net.is_bound:
        module.net.bind(catalogue)
    module.load_state_dict(checkpoint["state_dict"])
    spec = cli.config["model"]["init_args"]["net"].as_dict()
    spec["init_args"]["n_items"] = int(module.net.n_items)  # linked from the data at instantiation
    spec["init_args"].pop("catalogue", None)
    return module.net.eval(), np.asarray(datamodule.item_ids, dtype=object), spec, catalogue


# ---- writing and reading the folder -------------------------------------------------------------
def write_export(
    tmp: Path, net: nn.Module, item_ids: np.ndarray, spec: Spec, catalogue: Catalogue
) -> dict[str, Any]:
    """Write the export files into `tmp`, the new, empty temporary folder of `atomic_dir`; returns the
    manifest."""
    import sessrec

    spec = json.loads(json.dumps(spec))  # a deep copy that is also checked to be plain JSON
    folders: dict[Path, str] = {}  # source folder -> features/<j>: file names and siblings stay as they were
    copied: set[str] = set()
    for args, key in _path_args(spec):
        source = catalogue.resolve(args[key]).resolve()
        sub = folders.setdefault(source.parent, f"{FEATURES}/{len(folders)}")
        copied |= _copy_feature(source, tmp / sub)
        args[key] = f"{sub}/{source.name}"
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save(weights, tmp / WEIGHTS)
    (tmp / ITEMS).write_text(json.dumps([str(i) for i in item_ids]), encoding="utf-8")
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "versions": {"sessrec": sessrec.__version__, "torch": torch.__version__},
        "n_items": len(item_ids), "net": spec,
        "files": {"weights": WEIGHTS, "items": ITEMS, "features": sorted(copied)},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _copy_feature(source: Path, target_dir: Path) -> set[str]:
    """Copy a feature file and what its loader reads beside it (`sessrec.features.store`): the
    `.ids.txt` sidecar, else the `items.parquet` that gives the rows' ids. Returns the copied paths."""
    from sessrec.features.store import ids_path

    target_dir.mkdir(parents=True, exist_ok=True)
    files = [source]
    if source.suffix in (".npy", ".npz"):
        sidecar = ids_path(source)
        files.append(sidecar if sidecar.is_file() else source.parent / "items.parquet")
    copied = set()
    for path in files:
        if path.is_file():
            shutil.copyfile(path, target_dir / path.name)
            copied.add(f"{target_dir.parent.name}/{target_dir.name}/{path.name}")
    return copied


def check_replaceable(folder: str | os.PathLike, option: str = "--out") -> None:
    """DataError unless `folder` is missing, empty or a previous export (its manifest names FORMAT): an
    export replaces its output folder, and must never delete a folder of something else."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    try:
        format_ = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        format_ = None
    if format_ != FORMAT:
        raise DataError(f"{option} {folder}: an existing folder that is not a sessrec export (no {MANIFEST} of "
                        f"format {FORMAT}): not replaced; choose a new folder or remove it yourself")


def read_export(folder: str | os.PathLike) -> tuple[nn.Module, np.ndarray, dict[str, Any]]:
    """(net in eval mode with the exported weights, item ids (N,), manifest) of an export folder."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder}: not a sessrec export (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        item_ids = np.asarray(json.loads((folder / ITEMS).read_text(encoding="utf-8")), dtype=object)
    except (OSError, ValueError) as err:
        raise DataError(f"{folder}: cannot read the export ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        found = f"{manifest.get('format')} {manifest.get('format_version')}"
        raise DataError(f"{path}: expected {FORMAT} version {FORMAT_VERSION}, found {found}")
    if len(item_ids) != manifest["n_items"]:
        raise DataError(f"{folder / ITEMS}: {len(item_ids)} ids but the manifest says {manifest['n_items']}")
    if len(set(item_ids.tolist())) != len(item_ids):
        raise DataError(f"{folder / ITEMS}: duplicate item ids (an item would be unreachable)")
    net = instantiate(manifest["net"])
    if not net.is_bound:
        net.bind(Catalogue(item_ids, folder))  # feature paths are relative to the folder
    try:
        weights = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
        net.load_state_dict(weights)
    except (OSError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{folder / WEIGHTS}: cannot load the weights ({first})") from None
    bad = [k for k, v in weights.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise DataError(f"{folder / WEIGHTS}: non-finite values (NaN or inf) in {', '.join(bad[:3])}: "
                        "would rank items by NaN scores")
    return net.eval(), item_ids, manifest
