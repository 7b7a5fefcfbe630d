"""List the item feature encoders: built-ins, the project's encoders/ folder, installed entry points."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, default=None, help="project folder with encoders/ (default: working directory)"
    )


def _doc(cls: type) -> str:
    lines = (cls.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def run(args: argparse.Namespace) -> int:
    from sessrec.encoders.registry import REGISTRY, class_path  # imports torch: not for --help

    REGISTRY.discover(args.root)
    entries = REGISTRY.available()
    width = max(len(name) for name in entries)
    for name, (cls, source) in entries.items():
        print(f"{name:<{width}}  {class_path(cls)}  [{source}]")
        print(f"{'':<{width}}  {_doc(cls)}")
    print("\nIn a config: class_path: <class name or import path>, init_args: {<constructor arguments>}")
    return 0
