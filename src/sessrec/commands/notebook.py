"""Run the analysis notebook (or another parameterised one) on your own runs: -p NAME VALUE, executed."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("sessrec")

DEFAULT = Path(__file__).resolve().parents[3] / "notebooks" / "analysis.ipynb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebook", type=Path, nargs="?", default=DEFAULT,
                        help="a notebook with a cell tagged 'parameters' (default: notebooks/analysis.ipynb)")
    parser.add_argument("--out", type=Path, required=True, help="the executed notebook to write (.ipynb)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a parameter; VALUE is YAML (a number, a string, [a, list], {a: map}); "
                             "repeat for several")
    parser.add_argument("--cwd", type=Path, default=Path.cwd(),
                        help="folder the notebook runs in: relative paths in values resolve against it "
                             "(default: the working directory)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")


def run(args: argparse.Namespace) -> int:
    import yaml

    from sessrec.errors import ConfigError
    from sessrec.io import check_output

    if not args.notebook.is_file():
        raise ConfigError(f"{args.notebook}: notebook not found")
    if args.out.suffix != ".ipynb":
        raise ConfigError(f"--out {args.out}: give a .ipynb file")
    check_output(args.out, [args.notebook])
    parameters = {}
    for name, value in args.parameter:
        if not name.isidentifier():
            raise ConfigError(f"-p {name}: not a parameter name")
        try:
            parameters[name] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"-p {name}: value is not YAML ({str(err).splitlines()[0]})") from None
    from sessrec.evaluation.notebook import run_notebook

    log.info("running %s with %d parameter(s)", args.notebook, len(parameters))
    run_notebook(args.notebook, args.out, parameters, args.cwd, args.timeout)
    log.info("wrote %s", args.out)
    return 0
