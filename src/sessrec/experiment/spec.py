"""The experiment file: a list of named runs, each a LightningCLI config with a few replaced values.

    name: paper-synthetic            # W&B group, title of the table
    out_dir: runs/paper-synthetic    # one folder per run, results.md / results.csv
    reference: id100                 # optional: the table shows changes relative to this run
    wandb: {project: sessrec-paper}  # optional: log every run and the table to W&B (offline by default)
    base:                            # replaced in every run's config (dotted keys, as on the command line)
      data.data_dir: data/synthetic/prepared
      trainer.max_epochs: 4
    runs:
      - {name: iknn, label: item-kNN, config: configs/baselines/iknn.yaml}
      - name: id200
        label: ID only, 200
        config: [configs/trainer/default.yaml, configs/data/synthetic.yaml, configs/model/prnn.yaml]
        set: {model.init_args.net.init_args.layers: [200]}

Each `base` and `set` key is a dotted path into the run's config; its value REPLACES what is there
(a mapping is not merged), exactly as `--key=value` on the command line. `base` applies first, then
`set`. A run's `config` is one file or a list of layers, merged as repeated `--config` would merge them.
Config paths are relative to the working directory, like `--config` and `data_dir`.
The runner owns each run's outputs: `trainer.default_root_dir`, `trainer.logger` and the
ModelCheckpoint folder are set by `compose` (see sessrec.experiment.runner for the layout).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


from sessrec.errors import ConfigError
from sessrec.io import read_yaml

CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class WandbSpec:
    """W&B settings of an experiment: project, and whether checkpoints become artifacts."""

    project: str = "sessrec"
    log_model: bool | Literal["all"] = False


@dataclass(frozen=True)
class RunSpec:
    """One row of the table: a LightningCLI config (`config`: one file or a list of layers) with dotted-key
    replacements (`set`)."""

    name: str
    config: str | list[str]
    label: str = ""
    set: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def configs(self) -> list[str]:
        """The config files, in stacking order."""
        return [self.config] if isinstance(self.config, str) else list(self.config)


@dataclass(frozen=True)
class Experiment:
    """A named set of runs written under `out_dir` (see the module docstring)."""

    name: str
    out_dir: str
    runs: list[RunSpec]
    base: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    wandb: WandbSpec | None = None

    def run_dir(self, run: RunSpec) -> Path:
        return Path(self.out_dir) / run.name

    def select(self, names: list[str] | None) -> list[RunSpec]:
        """The runs named in `names` (all when None), in the file's order."""
        if names is None:
            return list(self.runs)
        known = [r.name for r in self.runs]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"--only: no run named {', '.join(unknown)} (runs: {', '.join(known)})")
        return [r for r in self.runs if r.name in names]


def _fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    """`data` as constructor arguments of dataclass `cls`; unknown or missing keys name `where`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        keys = ", ".join(map(repr, unknown))
        raise ConfigError(f"{where}: unknown key {keys} (expected {', '.join(names)})")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(map(repr, missing))}")
    return dict(data)


def _dotted(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
        raise ConfigError(f"{where}: expected a mapping of dotted keys (e.g. trainer.max_epochs: 4)")
    return dict(data)


def parse_experiment(data: Any, source: str = "experiment") -> Experiment:
    """Validate a loaded experiment mapping (see the module docstring) into an `Experiment`."""
    args = _fields(Experiment, data, source)
    runs = args["runs"]
    if not isinstance(runs, list) or not runs:
        raise ConfigError(f"{source}: runs: expected a non-empty list")
    specs = []
    for i, item in enumerate(runs):
        where = f"{source}: runs[{i}]"
        run = RunSpec(**_fields(RunSpec, item, where))
        if not isinstance(run.name, str) or not _NAME.match(run.name):
            raise ConfigError(f"{where}: name {run.name!r} must be letters, digits, '_', '.', '-' "
                              "(a folder name)")
        files = run.config if isinstance(run.config, list) else [run.config]
        if not files or not all(isinstance(f, str) and f for f in files):
            raise ConfigError(f"{where}: config must be a file or a non-empty list of files, got {run.config!r}")
        for file in files:
            if not Path(file).is_file():
                raise ConfigError(f"{where}: config {file} not found (paths are relative to the working "
                                  f"directory, {Path.cwd()})")
        specs.append(dataclasses.replace(run, set=_dotted(run.set, f"{where}: set")))
    names = [r.name for r in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: runs: duplicate name {', '.join(duplicates)}")
    args["runs"] = specs
    args["base"] = _dotted(args.get("base", {}), f"{source}: base")
    if args.get("reference") is not None and args["reference"] not in names:
        raise ConfigError(f"{source}: reference {args['reference']!r} is not a run name ({', '.join(names)})")
    if args.get("wandb") is not None:
        args["wandb"] = WandbSpec(**_fields(WandbSpec, args["wandb"], f"{source}: wandb"))
    if not isinstance(args["name"], str) or not _NAME.match(args["name"]):
        raise ConfigError(f"{source}: name {args['name']!r} must be letters, digits, '_', '.', '-'")
    return Experiment(**args)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    data = read_yaml(path, "experiment file")
    return parse_experiment(data, str(path))


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """config[a][b][c] = value for key "a.b.c", creating missing mappings; a non-mapping on the way fails."""
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {'.'.join(parts[:i + 1])} is not a mapping in the run's config")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _is_checkpoint(callback: Any) -> bool:
    if not isinstance(callback, dict):
        return False
    return str(callback.get("class_path", "")).split(".")[-1] == "ModelCheckpoint"


def loggers(experiment: Experiment, run: RunSpec) -> list[dict[str, Any]]:
    """CSVLogger to <out_dir>/<run>/metrics.csv, plus sessrec.training.loggers.WandbLogger when W&B is on."""
    run_dir = experiment.run_dir(run)
    out = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": experiment.out_dir, "name": run.name, "version": ""}}]
    if experiment.wandb is not None:
        out.append({"class_path": "sessrec.training.loggers.WandbLogger", "init_args": {
            "project": experiment.wandb.project, "name": run.name, "save_dir": str(run_dir),
            "group": experiment.name, "job_type": "train", "log_model": experiment.wandb.log_model}})
    return out


def compose(experiment: Experiment, run: RunSpec) -> dict[str, Any]:
    """The run's LightningCLI config: its file, `base` and `set` replaced, outputs under the run folder."""
    if len(run.configs) == 1:
        config = read_yaml(run.configs[0], "run's config")
        if not isinstance(config, dict):
            raise ConfigError(f"{run.configs[0]}: expected a LightningCLI config mapping")
    else:
        from sessrec.experiment.train import merge_configs  # imports Lightning: only for stacks

        overrides: dict[str, Any] = {}
        for key, value in [*experiment.base.items(), *run.set.items()]:
            set_dotted(overrides, key, value)
        config = merge_configs([Path(p) for p in run.configs], overrides)  # a required value may be here
    for key, value in [*experiment.base.items(), *run.set.items()]:
        set_dotted(config, key, value)
    run_dir = experiment.run_dir(run)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    trainer["logger"] = loggers(experiment, run)
    callbacks = trainer.get("callbacks") or []
    callbacks = copy.deepcopy(callbacks if isinstance(callbacks, list) else [callbacks])
    checkpoints = [c for c in callbacks if _is_checkpoint(c)]
    if not checkpoints:  # last.ckpt for every run: a W&B artifact, and `sessrec test --ckpt_path` later
        checkpoints = [{"class_path": CHECKPOINT,
                        "init_args": {"save_last": True, "save_top_k": 0, "enable_version_counter": False}}]
        callbacks.insert(0, checkpoints[0])
    for callback in checkpoints:
        callback.setdefault("init_args", {})["dirpath"] = str(run_dir / "checkpoints")
    trainer["callbacks"] = callbacks
    return config


def _paths_under(node: Any, key: str = "path") -> list[str]:
    """Every string value of a `key` entry in a nested config (encoder feature files)."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == key and isinstance(v, str)]
        return found + [p for v in node.values() for p in _paths_under(v, key)]
    if isinstance(node, list):
        return [p for v in node for p in _paths_under(v, key)]
    return []


def input_paths(experiment: Experiment) -> list[Path]:
    """What the runs read and `out_dir` must not hold: run configs, data_dir, feature files (vs data_dir)."""
    paths: list[Path] = []
    for run in experiment.runs:
        paths += [Path(p) for p in run.configs]
        config = compose(experiment, run)
        data = config.get("data")
        if not isinstance(data, dict):
            continue
        init = data.get("init_args")
        data_dir = data.get("data_dir", init.get("data_dir") if isinstance(init, dict) else None)
        if isinstance(data_dir, str):
            paths.append(Path(data_dir))
            paths += [Path(data_dir) / p for p in _paths_under(config.get("model"))]
    return list(dict.fromkeys(paths))
