"""`python -m sessrec` / `sessrec`: LightningCLI for fit/validate/test/predict, plus data commands.

User errors (`SessrecError`) print one line, `sessrec: error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from sessrec.errors import ConfigError, SessrecError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = {  # name -> module with add_arguments(parser) and run(args)
    "prepare": "sessrec.commands.prepare",
    "generate": "sessrec.commands.generate",
    "encoders": "sessrec.commands.encoders",
    "extract": "sessrec.commands.extract",
    "experiment": "sessrec.commands.experiment",
    "tune": "sessrec.commands.tune",
    "export": "sessrec.commands.export",
    "serve": "sessrec.commands.serve",
    "notebook": "sessrec.commands.notebook",
}

log = logging.getLogger("sessrec")


def _usage() -> str:
    lines = ["usage: sessrec <command> [options]", "", "training and evaluation (LightningCLI):"]
    lines += [f"  {c:<10} see `sessrec {c} --help`" for c in LIGHTNING_COMMANDS]
    lines += ["", "data and tools:"]
    for name, mod in COMMANDS.items():
        lines.append(f"  {name:<10} {_first_doc_line(mod)}")
    return "\n".join(lines)


def _first_doc_line(module: str) -> str:
    """A module's docstring's first line, read from its source: importing would pull torch, Lightning..."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            doc = ast.get_docstring(ast.parse(fh.read()))
    except (AttributeError, TypeError, OSError, SyntaxError):  # not a plain source file: import it
        doc = importlib.import_module(module).__doc__
    return ((doc or "").strip().splitlines() or [""])[0]


class _ArgumentParser(argparse.ArgumentParser):
    """argparse errors as one `sessrec: error:` line (no usage block), like every other user error."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog.removeprefix('sessrec ')}: {message} (see `{self.prog} --help`)")


def _run_command(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(COMMANDS[name])
    doc = (module.__doc__ or "").strip()
    parser = _ArgumentParser(prog=f"sessrec {name}", description=doc)
    module.add_arguments(parser)
    args = parser.parse_args(list(argv))
    return int(module.run(args) or 0)


def _run_lightning(argv: Sequence[str] | None) -> int:
    from sessrec.encoders.registry import discover
    from sessrec.lightning_cli import SessrecCLI  # imports lightning: slow, only when needed

    discover()  # plug-in encoders (project encoders/ folder, entry points) become nameable in configs

    try:
        SessrecCLI(args=None if argv is None else list(argv))
    finally:
        _end_process_group()
    return 0


def _end_process_group() -> None:
    """Destroy the torch.distributed process group a DDP run made (if any) before the interpreter exits:
    left to exit, gloo's threads can be torn down out of order and abort the process (SIGABRT,
    "terminate called without an active exception") after the run itself succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> None:
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not log.handlers:  # our own messages only: Lightning configures its own loggers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(os.environ.get("SESSREC_LOG_LEVEL", "INFO"))
        log.propagate = False
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        raise SystemExit(0 if argv else 2)
    from sessrec.runtime import tune_gc, tune_malloc

    tune_malloc()
    tune_gc()
    try:
        if argv[0] in COMMANDS:
            code = _run_command(argv[0], argv[1:])
        else:
            code = _run_lightning(None if from_sys else argv)
    except SessrecError as err:
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(err))  # one line, no controls
        print(f"sessrec: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(code)
