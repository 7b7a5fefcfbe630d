"""The tune file: a base LightningCLI config, a search space over its dotted keys, the study settings.

    base: ../gru4rec/synthetic.yaml     # a LightningCLI config, or a list (merged as repeated --config)
    overrides:                          # optional: replaced in every trial's config (dotted keys)
      trainer.max_epochs: 5
    space:                              # dotted config keys -> distributions, sampled in this order
      model.init_args.lr: {float: [0.01, 0.5], log: true}
      model.init_args.net.init_args.layers.0: {int: [50, 200], step: 50}   # .0: a list's first entry
      model.init_args.loss: {categorical: [cross-entropy, bpr-max]}
      model.init_args.bpreg: {float: [0.0, 2.0], when: {model.init_args.loss: bpr-max}}
      model.init_args.net.init_args.layers.0: {int: [64, 512], step: 64}
      model.init_args.net.init_args.dim: {same_as: model.init_args.net.init_args.layers.0}   # tied
    objective: val_mrr@20               # a validation metric the module logs, maximised
    n_trials: 20                        # finished (complete or pruned) trials the study needs
    timeout: 3600                       # optional: seconds this process keeps starting trials
    seed: 42                            # optional: the TPE sampler's seed
    seeds: [0, 1, 2]                    # optional: train each trial once per seed, score the mean
    out: runs/tune-gru4rec              # best.yaml, trials.csv, plots, study.db, one folder per trial
    storage: sqlite:///runs/tune-gru4rec/study.db   # optional (this default); any Optuna RDB URL
    study_name: gru4rec-synthetic       # optional: the tune file's name
    pruner: true                        # optional: Optuna's MedianPruner on per-epoch validation
    refit: false                        # optional: train best.yaml on train_full and test it once
    wandb: {project: sessrec-tune}      # optional: one W&B run per trial (offline unless WANDB_MODE says)

`base` paths are relative to the tune file; `out`, `storage` and the paths inside the configs (data_dir)
are relative to the working directory. A key in `when` is an earlier space key; the conditional key is
sampled only in trials where that key took the given value. `same_as: KEY` ties a key to an earlier one:
it takes that key's value in every trial (no dimension of its own; e.g. an input embedding shared with the
output table must have the GRU's width). Categorical choices may be lists or mappings (e.g. `layers:
{categorical: [[100], [100, 100]]}`); Optuna sees them as their YAML text.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sessrec.errors import ConfigError
from sessrec.io import read_yaml

KINDS = ("float", "int", "categorical", "same_as")
OBJECTIVE_PREFIX = "val_"  # trials are scored on the valid split only
SET_BY_TUNE = (  # what trials and best.yaml own (see sessrec.tune.compose)
    "trainer.logger", "trainer.enable_checkpointing", "trainer.default_root_dir",
    "data.train_split", "data.val_split", "data.test_split", "data.predict_split",
)


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a dotted config key, its distribution and its condition."""

    key: str
    kind: str  # one of KINDS
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()  # categorical: the config values
    when: dict[str, Any] = field(default_factory=dict)
    same_as: Param | None = None  # kind "same_as": the earlier key whose value this one takes

    @property
    def labels(self) -> tuple[Any, ...]:
        """The categorical choices as Optuna stores them: scalars as they are, lists/mappings as YAML."""
        return tuple(label(c) for c in self.choices)

    def value(self, suggested: Any) -> Any:
        """The config value of what Optuna suggested (a categorical label back to its choice)."""
        if self.kind != "categorical":
            return suggested
        return copy.deepcopy(self.choices[self.labels.index(suggested)])

    def probes(self) -> list[Any]:
        """Values checked against the parser before the study: both ends, or every choice."""
        if self.same_as is not None:
            return self.same_as.probes()
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def allows(self, value: Any) -> bool:
        if self.same_as is not None:
            return self.same_as.allows(value)
        if self.kind == "categorical":
            return label(value) in self.labels
        return _number(value) and self.low <= value <= self.high


@dataclass(frozen=True)
class TuneSpec:
    """A validated tune file (see the module docstring). `base` holds paths resolved from the file."""

    base: list[str]
    space: list[Param]
    out: str
    overrides: dict[str, Any] = field(default_factory=dict)
    objective: str = "val_mrr@20"
    n_trials: int | None = None
    timeout: float | None = None
    seed: int | None = None
    seeds: tuple[int, ...] = ()  # training seeds of every trial (seed_everything); () = the base's
    storage: str | None = None
    study_name: str = ""
    pruner: bool = True
    refit: bool = False
    wandb: str | None = None  # the W&B project of the trial runs (file: `wandb: {project: NAME}`); None: off
    source: str = "tune file"

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out) / 'study.db'}"


def label(choice: Any) -> Any:
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    return yaml.safe_dump(choice, default_flow_style=True).strip()


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
        raise ConfigError(f"{where}: expected a mapping of dotted keys (e.g. trainer.max_epochs: 4)")
    return dict(data)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(key: str, kind: str, value: Any, where: str) -> tuple[Any, Any]:
    if not (isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)):
        raise ConfigError(f"{where}: {key}: {kind}: expected [low, high] numbers, got {value!r}")
    low, high = value
    if kind == "int" and not all(float(v).is_integer() for v in value):
        raise ConfigError(f"{where}: {key}: int: bounds must be integers, got {value!r}")
    if low >= high:
        raise ConfigError(f"{where}: {key}: {kind}: empty or inverted range [{low}, {high}] "
                          "(need low < high)")
    return (int(low), int(high)) if kind == "int" else (float(low), float(high))


def _param(key: str, data: Any, earlier: dict[str, Param], where: str) -> Param:
    """One space entry, checked by Optuna's own distribution classes (log and step rules)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {key}: expected a distribution like {{float: [lo, hi]}}, got {data!r}")
    kinds = [k for k in data if k in KINDS]
    unknown = sorted(set(data) - {*KINDS, "log", "step", "when"})
    if unknown or len(kinds) != 1:
        raise ConfigError(f"{where}: {key}: expected exactly one of {', '.join(KINDS)} (and log, step, when)"
                          + (f"; unknown key {', '.join(map(repr, unknown))}" if unknown else ""))
    kind = kinds[0]
    when = _mapping(data.get("when", {}), f"{where}: {key}: when")
    for parent, value in when.items():
        if parent not in earlier:
            raise ConfigError(f"{where}: {key}: when: {parent} is not an earlier key of the space")
        if not earlier[parent].allows(value):
            raise ConfigError(f"{where}: {key}: when: {parent} never takes the value {value!r}")
    if kind == "same_as":
        source = data["same_as"]
        if set(data) - {"same_as", "when"}:
            raise ConfigError(f"{where}: {key}: same_as takes no log or step")
        if source not in earlier:
            raise ConfigError(f"{where}: {key}: same_as: {source} is not an earlier key of the space")
        return Param(key, kind, when=when, same_as=earlier[source])
    if kind == "categorical":
        choices = data["categorical"]
        if set(data) - {"categorical", "when"}:
            raise ConfigError(f"{where}: {key}: categorical takes no log or step")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {key}: categorical: expected a non-empty list of choices")
        labels = [label(c) for c in choices]
        if len(set(map(repr, labels))) != len(labels):
            raise ConfigError(f"{where}: {key}: categorical: duplicate choices")
        return Param(key, kind, choices=tuple(choices), when=when)
    low, high = _bounds(key, kind, data[kind], where)
    log, step = data.get("log", False), data.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: {key}: log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: {key}: log range needs low > 0, got [{low}, {high}]")
    if step is not None and (not _number(step) or step <= 0 or (kind == "int" and step != int(step))):
        raise ConfigError(f"{where}: {key}: step: expected a positive {kind}, got {step!r}")
    param = Param(key, kind, low, high, step, log, when=when)
    try:
        distribution(param)
    except ValueError as err:  # Optuna's own rules, e.g. log and step together
        raise ConfigError(f"{where}: {key}: {' '.join(str(err).split())}") from None
    return param


def distribution(param: Param) -> Any:
    """The Optuna distribution of `param` (categorical: over its labels)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if param.kind == "categorical":
        return CategoricalDistribution(param.labels)
    cls = IntDistribution if param.kind == "int" else FloatDistribution
    step = None if param.step is None else (int(param.step) if param.kind == "int" else float(param.step))
    if param.kind == "int" and step is None:
        step = 1
    return cls(param.low, param.high, log=param.log, step=step)


def _reserved(key: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in SET_BY_TUNE)


def _positive(value: Any, name: str, where: str, kind: type) -> Any:
    if value is None:
        return None
    if not _number(value) or value <= 0 or (kind is int and not float(value).is_integer()):
        raise ConfigError(f"{where}: {name}: expected a positive {kind.__name__}, got {value!r}")
    return kind(value)


def _seeds(value: Any, source: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not (isinstance(value, list) and value
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise ConfigError(f"{source}: seeds: expected a non-empty list of non-negative integers, "
                          f"got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{source}: seeds: duplicate seeds in {value!r} (each would train the same run)")
    return tuple(value)


def _wandb(value: Any, source: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"project"}:
        raise ConfigError(f"{source}: wandb: expected {{project: NAME}} (trial runs are offline unless "
                          f"WANDB_MODE=online), got {value!r}")
    project = value.get("project", "sessrec")
    if not isinstance(project, str) or not project.strip():
        raise ConfigError(f"{source}: wandb: project: expected a non-empty string, got {project!r}")
    return project


def parse_tune(data: Any, source: str = "tune file", root: Path | None = None) -> TuneSpec:
    """Validate a loaded tune mapping; `root` is the folder `base` paths are relative to."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(TuneSpec) if f.name != "source"]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown key {', '.join(map(repr, unknown))} "
                          f"(expected {', '.join(names)})")
    missing = [n for n in ("base", "space", "out") if n not in data]
    if missing:
        raise ConfigError(f"{source}: missing {', '.join(map(repr, missing))}")
    args = dict(data)
    base = args["base"] if isinstance(args["base"], list) else [args["base"]]
    if not base or not all(isinstance(b, str) and b for b in base):
        raise ConfigError(f"{source}: base: expected a config path or a list of them")
    root = Path(".") if root is None else root
    args["base"] = [str(root / b) for b in base]
    for path in args["base"]:
        if not Path(path).is_file():
            raise ConfigError(f"{source}: base: {path} not found (base paths are relative to the tune file)")
    args["overrides"] = _mapping(args.get("overrides") or {}, f"{source}: overrides")
    space = _mapping(args["space"], f"{source}: space")
    if not space:
        raise ConfigError(f"{source}: space: expected at least one key")
    params: dict[str, Param] = {}
    for key, entry in space.items():
        params[key] = _param(key, entry, params, f"{source}: space")
    args["space"] = list(params.values())
    for key in [*args["overrides"], *params]:
        if _reserved(key):
            raise ConfigError(f"{source}: {key}: set by tune (trials train on train and validate on valid; "
                              "best.yaml trains on train_full)")
    objective = args.get("objective", "val_mrr@20")
    if not isinstance(objective, str) or not objective.startswith(OBJECTIVE_PREFIX):
        raise ConfigError(f"{source}: objective: expected a validation metric such as val_mrr@20 or "
                          f"val_recall@20, got {objective!r}")
    args["n_trials"] = _positive(args.get("n_trials"), "n_trials", source, int)
    args["timeout"] = _positive(args.get("timeout"), "timeout", source, float)
    if args["n_trials"] is None and args["timeout"] is None:
        raise ConfigError(f"{source}: set n_trials or timeout (or both)")
    seed = args.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ConfigError(f"{source}: seed: expected a non-negative integer, got {seed!r}")
    args["seeds"] = _seeds(args.get("seeds"), source)
    if args["seeds"] and "seed_everything" in [*args["overrides"], *params]:
        raise ConfigError(f"{source}: seed_everything: set by seeds (each trial trains once per seed)")
    for name in ("pruner", "refit"):
        if not isinstance(args.get(name, False), bool):
            raise ConfigError(f"{source}: {name}: expected true or false, got {args[name]!r}")
    for name in ("out", "storage", "study_name"):
        if name in args and not (isinstance(args[name], str) and args[name]):
            raise ConfigError(f"{source}: {name}: expected a non-empty string, got {args[name]!r}")
    args["wandb"] = _wandb(args.get("wandb"), source)
    args.setdefault("study_name", Path(source).stem)
    return TuneSpec(**args, source=source)


def load_tune(path: str | Path) -> TuneSpec:
    """Read and validate a tune YAML file (the parser checks come later: sessrec.tune.compose.check)."""
    path = Path(path)
    data = read_yaml(path, "tune file")
    return parse_tune(data, str(path), path.parent)
