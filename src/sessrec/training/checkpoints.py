"""Loading checkpoints without running their pickles, and one-line errors for a bad `--ckpt_path`.

`torch.load(weights_only=True)` unpickles only tensors and plain containers (dict, list, str, numbers):
a checkpoint cannot make sessrec import or run code. What a checkpoint holds is data; what a config
holds is not: its `class_path` entries import modules (see docs/design.md, "Safe loading").
Also the global RNG state a checkpoint saves for an exact mid-epoch resume (`rng_state`), and the item
map it was trained on (`item_map`: a checkpoint is refused on data whose ids differ, even at the same count).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sessrec.errors import DataError

LIGHTNING_KEYWORDS = ("best", "last", "hpc")  # `--ckpt_path` values Lightning resolves itself


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, loaded with weights_only=True; DataError naming the file.

    `mmap` maps the tensors instead of reading them (cheap when only shapes are needed).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception:
            if not mmap:
                raise
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)  # e.g. legacy format
    except Exception as err:  # zip errors (truncated), UnpicklingError (not plain data), EOFError...
        first = " ".join((str(err).strip() or type(err).__name__).splitlines()[0].split()).split(". ")[0]
        raise DataError(f"{path}: cannot load as a checkpoint ({first})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise DataError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """The global RNG states that dropout draws from: CPU, and the CUDA device's when training there."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    """Restores what `rng_state` saved (the CUDA state only when training on a CUDA device)."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def check_ckpt_path(ckpt_path: str | os.PathLike | None) -> dict[str, tuple[int, ...]] | None:
    """The parameter shapes of `--ckpt_path`, after checking it loads; None for no path or a keyword."""
    if ckpt_path is None or str(ckpt_path) in LIGHTNING_KEYWORDS or str(ckpt_path).startswith("registry"):
        return None
    if "://" in str(ckpt_path):
        return None  # remote: Lightning fetches it
    state = load_checkpoint(ckpt_path, mmap=True)["state_dict"]
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def check_fits(
    ckpt_path: str | os.PathLike, shapes: dict[str, tuple[int, ...]], model: torch.nn.Module
) -> None:
    """DataError naming the file when the checkpoint's parameters do not fit `model`'s.

    Runs before Lightning loads anything (its size-mismatch or missing-keys traceback): a parameter with
    another shape (a checkpoint of other data: another item count), a parameter the checkpoint lacks, or
    one the model lacks (another architecture). Parameters built later (a ParallelRNN's encoders, at
    `configure_model`) are not there yet: until then checkpoint keys the model lacks are not reported
    (`SessionRecModule.on_load_checkpoint` runs `check_state_keys` once they exist).
    """
    own = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    _check_keys(ckpt_path, shapes, own, complete=_is_complete(model), strict=_strict(model))


def check_state_keys(
    ckpt_path: str | os.PathLike | None, state_dict: dict[str, Any], model: torch.nn.Module
) -> None:
    """`check_fits` against a loaded checkpoint's `state_dict`, once every parameter of `model` exists."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    own = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    _check_keys(ckpt_path or "checkpoint", shapes, own, complete=True, strict=_strict(model))


def _check_keys(
    path: str | os.PathLike, saved: dict[str, tuple[int, ...]], own: dict[str, tuple[int, ...]],
    complete: bool, strict: bool,
) -> None:
    for name, shape in own.items():
        want = saved.get(name)
        if want is not None and want != shape:
            raise DataError(
                f"{path}: '{name}' has shape {list(want)} in the checkpoint but {list(shape)} "
                "in the model (a checkpoint of other data or another config?)"
            )
    if not strict:
        return
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own)) if complete else []
    if missing or unexpected:
        found = ((missing, "model parameters missing"), (unexpected, "unexpected keys"))
        parts = [f"{len(keys)} {what} (e.g. '{keys[0]}')" for keys, what in found if keys]
        raise DataError(
            f"{path}: the checkpoint does not fit the model: {', '.join(parts)} "
            "(a checkpoint of another architecture or config?)"
        )


def _is_complete(model: torch.nn.Module) -> bool:
    """False while a submodule waits for `configure_model` to build its parameters (`is_bound` False)."""
    return not any(getattr(m, "is_bound", True) is False for m in model.modules())


def _strict(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "strict_loading", True))


# ---- the item map a checkpoint was trained on ----------------------------------------------------
ITEM_MAP_KEY = "sessrec_item_map"  # {"n_items": N, "digest": hex}: item index i <-> original id


def item_map(item_ids: Sequence[object]) -> dict[str, Any]:
    """What ties weights to their items: the count and a hash of the ids in index order."""
    digest = hashlib.blake2b(digest_size=16)
    for start in range(0, len(item_ids), 65_536):  # bounded memory at ~1M items
        digest.update("\n".join(str(i) for i in item_ids[start:start + 65_536]).encode() + b"\n")
    return {"n_items": len(item_ids), "digest": digest.hexdigest()}


def check_item_map(
    path: str | os.PathLike | None, checkpoint: dict[str, Any], current: dict[str, Any], data_dir: Any
) -> None:
    """DataError when `checkpoint` was trained on another item map than `current` (`item_map` of the data
    folder in use): row i of its item tables would score another item. Checkpoints without one pass."""
    saved = checkpoint.get(ITEM_MAP_KEY)
    if not isinstance(saved, dict) or saved.get("digest") == current["digest"]:
        return
    raise DataError(
        f"{path or 'checkpoint'}: trained on another item map ({saved.get('n_items')} items) than "
        f"{data_dir} ({current['n_items']} items, other ids or order): its scores would name the wrong "
        "items; use the data folder the model was trained on"
    )
