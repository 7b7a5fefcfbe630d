"""Non-Lightning subcommands of `python -m sessrec`.

Each module here defines `add_arguments(parser: argparse.ArgumentParser) -> None`, `run(args) -> int`
and a one-line module docstring (used as the command's help). `sessrec.cli` dispatches to them.
"""
