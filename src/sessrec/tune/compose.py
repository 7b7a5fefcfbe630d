"""Trial and best configs from a tune file, and their check against the real LightningCLI parser.

A trial's config is the base with `overrides` and the trial's values replaced, then what tuning owns:

    data.train_split: train     data.val_split: valid     data.test_split / predict_split: valid
    trainer: logger off (with the tune file's `wandb`: one offline-safe W&B run per trial and seed,
             group = the study), checkpointing off, no progress bar, validation every epoch
             (limit_val_batches 0 in the base becomes 1.0), default_root_dir <out>/trials/<number>[/seed-<s>]
    seed_everything: each of the tune file's `seeds` in turn (when it has them)

so a trial can never read the test split, even through a stray `trainer.test`. best.yaml is the base
with `overrides` and the best values, trained on train_full and tested on test, its outputs (default
root, checkpoints) under <out>/refit; everything else (logger, validation, callbacks) as in the base.
"""

from __future__ import annotations

import argparse
import copy
import contextlib
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from sessrec.encoders.registry import suggest_encoder
from sessrec.errors import ConfigError, one_line_parser_error
from sessrec.io import read_yaml
from sessrec.tune.spec import Param, TuneSpec

_METRIC = re.compile(r"val_\w+@(\d+)")


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """config[a][b][c] = value for "a.b.c"; a number indexes an existing list entry ("layers.0")."""
    node: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{key}: no entry {part} in {'.'.join(parts[:i])}, a list of {len(node)}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"{key}: {'.'.join(parts[:i])} is not a mapping or list in the config")
        if last:
            node[part] = copy.deepcopy(value)
        else:
            if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]


def _apply(config: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for key, value in values.items():
        set_key(config, key, value)
    return config


def _is_checkpoint(callback: Any) -> bool:
    return isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("ModelCheckpoint")


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    section = config.setdefault(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{name}: expected a mapping in the base config")
    return section


def _callbacks(trainer: dict[str, Any]) -> list[Any]:
    callbacks = trainer.get("callbacks") or []
    return list(callbacks) if isinstance(callbacks, list) else [callbacks]


def _trial_logger(spec: TuneSpec, folder: Path, name: str) -> dict[str, Any] | bool:
    if spec.wandb is None:
        return False
    return {"class_path": "sessrec.training.loggers.WandbLogger", "init_args": {
        "project": spec.wandb, "name": f"{spec.study_name}-{name}", "save_dir": str(folder),
        "group": spec.study_name, "job_type": "trial", "tags": ["tune"]}}


def trial_config(spec: TuneSpec, base: dict[str, Any], params: Mapping[str, Any], folder: Path,
                 seed: int | None = None, name: str = "trial") -> dict:
    """The config a trial trains: train split, validation on valid every epoch, no outputs but `folder`;
    `seed` (one of the tune file's `seeds`) replaces the base's seed_everything; `name` (e.g. trial-3 or
    trial-3-seed-1) names its W&B run when the tune file has `wandb`."""
    config = _apply(_apply(base, spec.overrides), params)
    if seed is not None:
        config["seed_everything"] = seed
    trainer = _section(config, "trainer")
    trainer.update(logger=_trial_logger(spec, folder, name), enable_checkpointing=False,
                   enable_progress_bar=False, default_root_dir=str(folder))
    trainer["callbacks"] = [c for c in _callbacks(trainer) if not _is_checkpoint(c)]
    if trainer.get("limit_val_batches", 1.0) in (0, 0.0):
        trainer["limit_val_batches"] = 1.0
    _section(config, "data").update(train_split="train", val_split="valid", test_split="valid",
                                    predict_split="valid")
    return config


def best_config(spec: TuneSpec, base: dict[str, Any], params: Mapping[str, Any],
                seed: int | None = None) -> dict[str, Any]:
    """best.yaml: the base with the best values, trained on train_full, outputs under <out>/refit (with
    `seeds`: seed_everything is the first of them). `seed`: the refit of that seed, under
    <out>/refit/seed-<seed>."""
    config = _apply(_apply(base, spec.overrides), params)
    if spec.seeds:
        config["seed_everything"] = spec.seeds[0] if seed is None else seed
    refit = Path(spec.out) / "refit"
    if seed is not None:
        refit = refit / f"seed-{seed}"
    trainer = _section(config, "trainer")
    trainer["default_root_dir"] = str(refit)
    for callback in _callbacks(trainer):
        if _is_checkpoint(callback):
            callback.setdefault("init_args", {})["dirpath"] = str(refit / "checkpoints")
    _section(config, "data").update(train_split="train_full", test_split="test")
    return config


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Parsing seeds the RNGs (LightningCLI's seed_everything) and logs it: not once per probe."""
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Py.*")
            yield
    finally:
        seed_log.setLevel(level)


def parse(configs: list[Path]) -> tuple[Any, Any]:
    """(parser, namespace) of LightningCLI configs given as repeated --config; one-line ConfigError."""
    from sessrec.experiment.train import PARSER_KWARGS, _ParseOnlyCLI

    args = [a for path in configs for a in ("--config", str(path))]
    try:
        with _quiet():
            cli = _ParseOnlyCLI(args=args, run=False, parser_kwargs=PARSER_KWARGS)
    except argparse.ArgumentError as err:
        raise ConfigError(one_line_parser_error(str(err), suggest_encoder)) from None
    return cli.parser, cli.config


def _parse_dict(config: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory(prefix="sessrec-tune-") as folder:
        tmp_config = Path(folder) / "config.yaml"  # a private temporary folder: no atomicity needed
        tmp_config.write_text(yaml.safe_dump(config, sort_keys=False))
        return parse([tmp_config])[1]


def base_config(spec: TuneSpec) -> dict[str, Any]:
    """The base as one mapping: the file itself, or several merged by the real parser (fully resolved)."""
    if len(spec.base) == 1:
        config = read_yaml(spec.base[0], "base config")
        if not isinstance(config, dict):
            raise ConfigError(f"{spec.base[0]}: expected a LightningCLI config mapping")
        return config
    from sessrec.experiment.train import merge_configs

    try:
        return merge_configs([Path(p) for p in spec.base])
    except ConfigError as err:
        raise ConfigError(f"{spec.source}: base: {err}") from None


def _lookup(namespace: Any, key: str) -> bool:
    """Whether dotted `key` names a value of the parsed config (Namespaces, mappings, list entries)."""
    node = namespace
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif hasattr(node, "__dict__") and part in vars(node):
            node = vars(node)[part]
        else:
            return False
    return True


def _conditions(param: Param, space: dict[str, Param]) -> dict[str, Any]:
    """The values of the keys `param` depends on (and theirs), so the probe is a reachable config."""
    values: dict[str, Any] = {}
    for parent, value in param.when.items():
        values.update(_conditions(space[parent], space))
        values[parent] = value
    return values


def check(spec: TuneSpec, base: dict[str, Any]) -> Any:
    """Parse the trial and best configs, then each space key at its ends / choices; ConfigError names it.
    Returns the parsed trial config (base + overrides).

    Only parsing (types, keys, class paths): a combination a constructor rejects fails its trial.
    """
    folder = Path(spec.out) / "trials" / "check"
    configs = {"trial": trial_config(spec, base, {}, folder), "best": best_config(spec, base, {})}
    namespaces = {}
    for name, config in configs.items():
        try:
            namespaces[name] = _parse_dict(config)
        except ConfigError as err:
            raise ConfigError(f"{spec.source}: base and overrides ({name} config): {err}") from None
    space = {p.key: p for p in spec.space}
    for param in spec.space:
        for value in param.probes():
            values = {**_conditions(param, space), param.key: value}
            try:
                probed = _parse_dict(trial_config(spec, base, values, folder))
            except ConfigError as err:
                raise ConfigError(f"{spec.source}: space: {param.key}: {value!r} rejected: {err}") from None
            if not _lookup(probed, param.key) and not _in_best(spec, base, values, param.key):
                raise ConfigError(f"{spec.source}: space: {param.key}: not a key of the parsed config")
    _check_objective(spec, namespaces["trial"])
    return namespaces["trial"]


def _in_best(spec: TuneSpec, base: dict[str, Any], values: dict[str, Any], key: str) -> bool:
    """Whether `key` names a value of the parsed best.yaml: list indices count the base's entries, and
    trials drop the checkpoint callbacks (`trainer.callbacks.1` is the second callback of the base)."""
    try:
        return _lookup(_parse_dict(best_config(spec, base, values)), key)
    except ConfigError:
        return False


def _check_objective(spec: TuneSpec, namespace: Any) -> None:
    match = _METRIC.fullmatch(spec.objective)
    init = getattr(getattr(namespace, "model", None), "init_args", None)
    cutoffs = getattr(init, "cutoffs", None)
    if match and isinstance(cutoffs, list) and int(match.group(1)) not in cutoffs:
        raise ConfigError(f"{spec.source}: objective: {spec.objective} is not logged: the model's cutoffs "
                          f"are {cutoffs}")
