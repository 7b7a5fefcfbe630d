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
    entries = sorted(REGISTRY.available().items(), key=lambda kv: kv[1][0].__name__)
    width = max(len(cls.__name__) for _, (cls, _) in entries)
    for name, (cls, source) in entries:  # the class name first: it is what a config's class_path takes
        print(f"{cls.__name__:<{width}}  {class_path(cls)}  [{source}; short name {name}]")
        print(f"{'':<{width}}  {_doc(cls)}")
    print("\nIn a config: class_path: <class name (first column) or import path>, init_args: {<arguments>}; "
          "the short names are for sessrec.encoders.registry.get()")
    return 0
