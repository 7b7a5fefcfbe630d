"""LightningCLI set-up: argument links from the data to the model, and project defaults."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn

from sessrec.training.checkpoints import check_ckpt_path, check_fits, load_checkpoint
from sessrec.data.datamodule import SessionDataModule
from sessrec.encoders.registry import suggest_encoder
from sessrec.errors import (
    ConfigError, DataError, SessrecError, did_you_mean, first_line, one_line_parser_error,
)
from sessrec.io import read_yaml
from sessrec.runtime import quiet_lightning_notices
from sessrec.training.loggers import WandbTables, run_folder

EVAL_OPTIONS = ("cutoffs", "tie_mode", "eval_top_n")  # never taken from a checkpoint's hyperparameters


class SessrecArgumentParser(LightningArgumentParser):
    """Parse errors as one `ConfigError` line (`sessrec: error: model.net: ...`), not usage + a report."""

    config_files: tuple[str, ...] = ()

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse's internal parsers: it catches these itself
            super().error(message, ex)
        line = one_line_parser_error(message, suggest_encoder)
        if message.startswith("unrecognized arguments:"):
            options = [o for o in self._option_string_actions if o.startswith("--")]
            given = [a.split("=", 1)[0] for a in message.split()[2:] if a.startswith("--")]
            close = [did_you_mean(a, options) for a in given]
            if any(close):
                line += f" (did you mean {', '.join(c for c in close if c)}?)"
        if self.config_files and message.startswith("Parser key") and not line.startswith("config:"):
            line += f" (config: {', '.join(self.config_files)})"
        raise ConfigError(line)


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Writes config.yaml to the log folder (as Lightning's) and gives every logger the full config.

    Once the run starts (`on_*_start`), not at `setup`: a run that stops at bad data or features (read
    at `setup` / `configure_model`) leaves nothing behind. `fit` writes config.yaml; `validate`, `test`
    and `predict` write config-<command>.yaml, so evaluating a run's checkpoint in its folder keeps the
    config it was trained with.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        pass

    def _start(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:  # fit's validation loops run with trainer.state.fn FITTING
            return
        fn = trainer.state.fn
        fitting = fn in (None, TrainerFn.FITTING)
        self.config_filename = "config.yaml" if fitting else f"config-{fn.value}.yaml"
        wandb = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb:
            super().setup(trainer, pl_module, stage)
            return
        # Lightning would write <save_dir>/config.yaml, shared by every run: the run's own folder instead
        if trainer.is_global_zero:
            folder = run_folder(wandb[0])
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(folder / self.config_filename), skip_none=False, overwrite=True,
                             multifile=self.multifile)
            for logger in wandb:  # a copy in the W&B run's files: synced and shown with the run
                files = Path(logger.experiment.dir)
                if files.is_dir():  # not with WANDB_MODE=disabled
                    shutil.copy(folder / self.config_filename, files / self.config_filename)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "fit")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "validate")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "predict")

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.loggers:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))  # plain types only
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class SessrecCLI(LightningCLI):
    """`fit`, `validate`, `test`, `predict` with `--config configs/<x>.yaml`.

    The model is any LightningModule (`class_path`), usually `sessrec.training.module.SessionRecModule` with a
    `net`, or `sessrec.baselines.BaselineModule`. The catalogue size flows from the data to the net.
    """

    def __init__(self, *args, **kwargs) -> None:
        if "OMP_NUM_THREADS" not in os.environ:
            # The session-parallel step is many small ops: one intra-op thread is as fast on an idle CPU
            # and 2-3x faster on a busy one (OpenMP spin-waits). Set OMP_NUM_THREADS to override.
            torch.set_num_threads(1)
        # Our block datasets are iterable AND sized on purpose (same length on every DDP rank).
        warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
        # ModelCheckpoint(every_n_train_steps) warns that a manual-optimisation checkpoint holds the
        # weights after the step: ours should, it goes with the loader position (resume is exact).
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        quiet_lightning_notices()  # tips (litlogger, litmodels) and GPU/TPU lines: at DEBUG only
        kwargs.setdefault("save_config_callback", LoggerSaveConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        kwargs.setdefault("parser_class", SessrecArgumentParser)
        argv = kwargs.get("args", args[0] if args else None)
        self._config_files = _config_files(sys.argv[1:] if argv is None else argv)
        self._ckpt_shapes: dict[str, tuple[int, ...]] | None = None
        super().__init__(LightningModule, SessionDataModule, *args, subclass_mode_model=True, **kwargs)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Lightning's, plus `WandbTables` when a W&B logger is configured and no WandbTables is."""
        loggers = config.get("logger")
        loggers = loggers if isinstance(loggers, list) else [loggers]
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if any(isinstance(lg, WandbLogger) for lg in loggers) and not any(
                isinstance(cb, WandbTables) for cb in [*given, *callbacks]):
            callbacks = [*callbacks, WandbTables()]
        return super()._instantiate_trainer(config, callbacks)

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.config_files = self._config_files
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then check `--ckpt_path` loads (one-line DataError for a missing or corrupt file).

        A config file that is not valid YAML is reported with its name, line and column first.
        """
        for path in self._config_files:
            _check_yaml(path)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._ckpt_shapes = check_ckpt_path(self.config[subcommand].get("ckpt_path"))

    def _parse_ckpt_path(self) -> None:
        """Lightning's: the model takes the checkpoint's hyperparameters, except `EVAL_OPTIONS` (the
        command line's and config's win, see `SessionRecModule`); a mismatch is a DataError naming it."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = dict(load_checkpoint(ckpt_path, mmap=True).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        for name in EVAL_OPTIONS:
            hparams.pop(name, None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except ConfigError as err:
            message = f"{ckpt_path}: its hyperparameters do not fit the configured model ({err})"
            raise DataError(message) from None

    def before_instantiate_classes(self) -> None:
        if self.subcommand is not None:
            trainer = self.config[self.subcommand].get("trainer")
            _check_trainer_options(trainer)
            if self.subcommand == "validate" and trainer is not None and trainer.get("limit_val_batches") == 0:
                raise ConfigError("trainer.limit_val_batches is 0 in this config (no validation while "
                                  "training), so `validate` would score nothing: add "
                                  "--trainer.limit_val_batches 1.0")

    def after_instantiate_classes(self) -> None:
        """Preflight: every folder the run writes to can be created, before any training."""
        if self.subcommand is not None and self.trainer is not None:
            _check_output_dirs(self.trainer, self.subcommand)

    def instantiate_classes(self) -> None:
        """Build the objects; a constructor rejecting its options becomes a one-line ConfigError.

        jsonargparse wraps such an error (ValueError or TypeError) in its own ValueError; the cause
        is the constructor's message, e.g. "layers must be a non-empty list of positive sizes", which
        `_constructor_error` makes name the option ("model.net.layers must be ...").
        The Trainer's MisconfigurationException becomes `trainer: <its first line>`.
        """
        try:
            super().instantiate_classes()
        except SessrecError as err:  # the data module's (jsonargparse does not wrap a group's errors)
            raise self._constructor_error(err) from None
        except MisconfigurationException as err:
            raise ConfigError(f"trainer: {' '.join(first_line(err).split())}") from err
        except (ValueError, TypeError) as err:
            cause = err
            while cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, SessrecError):
                raise self._constructor_error(cause) from None
            if cause is err:
                raise ConfigError(one_line_parser_error(str(err), suggest_encoder)) from err
            raise self._constructor_error(cause) from err
        if self._ckpt_shapes is not None and self.model is not None:
            check_fits(self.config[self.subcommand]["ckpt_path"], self._ckpt_shapes, self.model)

    def _constructor_error(self, cause: BaseException) -> SessrecError:
        """A constructor's error as one line. When its message starts with an argument of a configured
        object, that word becomes the option's path as parse errors write it ("lr must be > 0" ->
        "model.lr must be > 0"); else a SessrecError is kept as it is and any other error is prefixed
        with the raising class ("GRU4Rec: ...")."""
        message = " ".join(str(cause).split())
        config = self.config[self.subcommand] if self.subcommand else self.config
        configured = _configured_classes(config.as_dict(), self.datamodule_class)
        named = _name_option(cause, message, configured)
        if isinstance(cause, SessrecError):
            return cause if named is None else _retyped(cause, named)
        if named is None:
            owner = _raised_by(cause)
            named = message if message.startswith(owner) else owner + message
        return ConfigError(named)

    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning's, with two warnings of a checkpoint's callback states silenced outside `fit`.

        Restoring a checkpoint, Lightning warns when the Trainer lacks a callback the checkpoint holds a
        state for (e.g. `TrainingSchedule`, absent from configs/predict.yaml) and when a ModelCheckpoint's
        dirpath differs from the saved one (its best/last bookkeeping is not restored). Both states
        matter only to resume training: `validate`, `test` and `predict` never use them.
        """
        if subcommand == "fit":
            return super()._run_subcommand(subcommand)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used "
                                    "to create the checkpoint need to be provided")
            warnings.filterwarnings("ignore", message="The dirpath has changed from .* won't be reloaded")
            return super()._run_subcommand(subcommand)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.n_items", "model.init_args.net.init_args.n_items", apply_on="instantiate")
        parser.set_defaults({"trainer.num_sanity_val_steps": 0, "trainer.enable_model_summary": False})


def _config_files(argv: object) -> tuple[str, ...]:
    """The files given with -c/--config on a command line (named in parse errors)."""
    if not isinstance(argv, (list, tuple)):
        return ()  # args given as a dict (sessrec.evaluation.analysis)
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            files.append(str(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return tuple(files)


def _check_yaml(path: str) -> None:
    """ConfigError naming the file, line and column of a YAML syntax error (jsonargparse names neither)."""
    if Path(path).is_file():  # jsonargparse reports a missing file itself
        read_yaml(path)


def _check_trainer_options(trainer: Any) -> None:
    """ConfigError naming the option for Trainer settings Lightning would reject with a traceback."""
    if trainer is None:
        return
    accelerator = trainer.get("accelerator")
    if isinstance(accelerator, str) and accelerator.lower() in ("gpu", "cuda"):
        mps = accelerator.lower() == "gpu" and torch.backends.mps.is_available()
        if not torch.cuda.is_available() and not mps:
            raise ConfigError(
                f"trainer.accelerator: {accelerator!r} needs a GPU and torch finds none on this machine "
                "(torch.cuda.is_available() is False): use --trainer.accelerator cpu (or auto)"
            )
    for name in ("max_epochs", "max_steps"):
        value = trainer.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
            raise ConfigError(f"trainer.{name} must be an integer >= 0, or -1 for no limit (got {value!r})")


def _check_output_dirs(trainer: Trainer, subcommand: str) -> None:
    """ConfigError at once when a folder the run writes to lies under a file or cannot be written."""
    dirs = [("trainer.default_root_dir", trainer.default_root_dir)]
    dirs += [(f"{type(lg).__name__} save_dir", lg.save_dir) for lg in trainer.loggers
             if getattr(lg, "save_dir", None)]
    if subcommand == "fit":
        dirs += [("ModelCheckpoint dirpath", cb.dirpath) for cb in trainer.callbacks
                 if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    for option, folder in dirs:
        if "://" in str(folder):
            continue  # remote storage (fsspec): not checked here
        path = Path(folder).absolute()
        existing = next(p for p in (path, *path.parents) if os.path.exists(p))
        if not existing.is_dir():
            raise ConfigError(f"{option} {folder}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {folder}: cannot create or write it ({existing} is not writable)")


def _configured_classes(config: dict[str, Any], datamodule_class: type | None) -> list[tuple[str, type]]:
    """(option path, class) of every object the config builds: "model", "model.net", "data", ... (the
    paths parse errors name: no "init_args"); class paths that do not import are left out."""
    found = []
    data = config.get("data")
    if datamodule_class is not None and isinstance(data, dict) and "class_path" not in data:
        found.append(("data", datamodule_class))
    for path, class_path in _class_paths(config, ""):
        module, _, name = class_path.rpartition(".")
        try:
            found.append((path, getattr(importlib.import_module(module), name)))
        except (ImportError, AttributeError, ValueError):
            continue
    return found


def _class_paths(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(option path, class_path) of the `{class_path, init_args}` entries under `node`."""
    if isinstance(node, dict):
        class_path = node.get("class_path")
        if isinstance(class_path, str):
            yield path, class_path
            node = node.get("init_args") or {}
        for key, value in node.items():
            yield from _class_paths(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _class_paths(value, f"{path}[{i}]")


def _name_option(err: BaseException, message: str, configured: list[tuple[str, type]]) -> str | None:
    """`message` with its first word, an argument of the innermost configured object under construction
    in `err`'s traceback, replaced by that option's path ("model.net.layers must be ..."); or None."""
    word = re.match(r"([A-Za-z_]\w*)(?=[\s:\[])", message)
    if word is None:
        return None
    frames = _init_frames(err)
    for key in reversed(list(dict.fromkeys(id(f.f_locals["self"]) for f in frames))):  # innermost first
        inits = [f for f in frames if id(f.f_locals["self"]) == key]  # its class's and base classes' __init__
        paths = [path for path, cls in configured if type(inits[0].f_locals["self"]) is cls]
        if len(paths) != 1:  # not configured (built inside another object), or ambiguous
            continue
        code_args = {name for f in inits for name in _arguments(f)}
        return f"{paths[0]}.{message}" if word.group(1) in code_args else None
    return None


def _init_frames(err: BaseException) -> list[FrameType]:
    """The `__init__` frames of `err`'s traceback (outermost first)."""
    frames, tb = [], err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "__init__" and "self" in tb.tb_frame.f_locals:
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _arguments(frame: FrameType) -> tuple[str, ...]:
    """The argument names of a frame's function, `self` excepted."""
    code = frame.f_code
    return tuple(n for n in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] if n != "self")


def _retyped(err: SessrecError, message: str) -> SessrecError:
    """A SessrecError of `err`'s type with `message` (a ConfigError when that type takes other arguments)."""
    try:
        return type(err)(message)
    except TypeError:
        return ConfigError(message)


def _raised_by(err: BaseException) -> str:
    """'ClassName: ' of the innermost constructor in `err`'s traceback, or ''."""
    frames = _init_frames(err)
    return f"{type(frames[-1].f_locals['self']).__name__}: " if frames else ""
