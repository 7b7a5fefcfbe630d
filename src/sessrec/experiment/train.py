"""One run in this process: build it through SessrecCLI (`run=False`), fit it when it trains, test it.

In-process rather than `python -m sessrec fit` + `test` subprocesses: one W&B run holds the training
curves and the test metrics, the test uses the weights just trained (no checkpoint round trip), and the
lightning import is paid once per experiment. Seeds come from each config's `seed_everything`, applied
by LightningCLI when the run is built, so a run's result does not depend on the runs before it.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities.model_helpers import is_overridden

from sessrec.encoders.registry import suggest_encoder
from sessrec.errors import ConfigError, one_line_parser_error
from sessrec.lightning_cli import SessrecCLI

# Parse errors raise (one-line ConfigError) instead of printing usage and exiting the process.
PARSER_KWARGS = {"default_env": False, "exit_on_error": False}


class _ParseOnlyCLI(SessrecCLI):
    """Parses and type-checks a config (class paths, arguments) without building data or models."""

    def instantiate_classes(self) -> None:
        pass


def merge_configs(paths: list[Path], last: dict[str, Any] | None = None) -> dict[str, Any]:
    """Configs stacked as repeated --config, merged by the real parser (class arguments key by key,
    `callbacks+` appended) and dumped as one plain mapping; one-line ConfigError. `last`: a config mapping
    stacked after the files (e.g. an experiment's `base`: a required value may come from there alone)."""
    import yaml

    args = [a for path in paths for a in ("--config", str(path))]
    if last:
        args += ["--config", yaml.safe_dump(last)]  # jsonargparse reads a --config that is no path as YAML
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")  # parsing seeds the RNGs and says so
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
            cli = _ParseOnlyCLI(args=args, run=False, parser_kwargs=PARSER_KWARGS)
    except argparse.ArgumentError as err:
        raise ConfigError(one_line_parser_error(str(err), suggest_encoder)) from None
    finally:
        seed_log.setLevel(level)
    return yaml.safe_load(cli.parser.dump(cli.config))


def _cli(cls: type[SessrecCLI], config: Path) -> SessrecCLI:
    # Expected here: LightningCLI is built from Python inside `sessrec experiment` (argv is not its own),
    # and the run folder already holds run.yaml when CSVLogger opens it.
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
    try:
        return cls(args=["--config", str(config)], run=False, parser_kwargs=PARSER_KWARGS)
    except argparse.ArgumentError as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"{config}: {message}") from None


def check_config(config: Path) -> None:
    """Raise ConfigError when `config` does not parse against the real signatures."""
    _cli(_ParseOnlyCLI, config)


def _finish_loggers(trainer: Any) -> None:
    for logger in trainer.loggers:
        finish = getattr(logger, "finish", None)  # sessrec.training.loggers.WandbLogger ends its W&B run
        if callable(finish):
            finish()


def train_and_test(config: Path) -> dict[str, Any]:
    """Fit (unless the model has no training step, e.g. a baseline) and test the run in `config`.

    Returns {"metrics": {test metric: value}, "test_events", "epochs", "fit_seconds", "test_seconds"}.
    """
    cli = _cli(SessrecCLI, config)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    try:
        fit_seconds = 0.0
        if is_overridden("training_step", model):
            start = time.perf_counter()
            trainer.fit(model, datamodule=data)
            fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        metrics = trainer.test(model, datamodule=data, verbose=False)[0]
        test_seconds = time.perf_counter() - start
    finally:
        _finish_loggers(trainer)
    split = data.split("test")
    return {
        "metrics": {name: float(value) for name, value in sorted(metrics.items())},
        "test_events": split.n_events - split.n_sessions,  # (input, target) pairs ranked
        "epochs": int(trainer.current_epoch),
        "fit_seconds": round(fit_seconds, 1),
        "test_seconds": round(test_seconds, 1),
    }
