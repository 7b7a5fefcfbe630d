"""Read an event log, filter it and split it by time into a prepared data folder (train/valid/test);
or import files that are already split (`--train A --test B [--valid C]`).

The work runs on polars (`--engine polars`, the default: `sessrec.data.columnar`); `--engine pandas`
keeps the original implementation (`sessrec.data.preprocess`), which writes the same folder."""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sessrec.checks import number_problem
from sessrec.data.columnar import Columnar, preprocess_columnar
from sessrec.data.prepared import SPLIT_NAMES, split_stats, write_prepared
from sessrec.data.preprocess import Preprocessed, preprocess
from sessrec.data.presplit import import_splits
from sessrec.data.readers import DEFAULT_SESSION_GAP, LONG_SESSION, PRESETS, read_preset
from sessrec.data.scan import read_columnar_preset
from sessrec.errors import ConfigError, DataError
from sessrec.io import claim_output

log = logging.getLogger(__name__)


def _number(kind: type, low: float, strict: bool) -> Callable[[str], float]:
    """An argparse type: a finite `kind` (int or float) >= `low` (> `low` when `strict`)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        what = f"a finite number {'>' if strict else '>='} {low:g}"
        problem = number_problem(value, low=low, low_open=strict, what=what)
        if problem is not None:  # argparse names the option: "argument --test-days: must be ..."
            raise argparse.ArgumentTypeError(f"{problem}, got {text!r}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `prepare` options on `parser`."""
    parser.add_argument(
        "input", type=Path, nargs="?", help="event log (.csv, .tsv, .dat, .parquet; may be compressed), or a folder of Parquet parts (a partitioned data set, read in path order)"
    )
    presplit = parser.add_argument_group("pre-split files (instead of INPUT; read with the same options)")
    presplit.add_argument("--train", type=Path, help="training events, imported as they are")
    presplit.add_argument("--test", type=Path, help="test events (restricted to the training items)")
    presplit.add_argument("--valid", type=Path, help="validation events (restricted to the --train items)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (written atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    parser.add_argument(
        "--engine",
        default="polars",
        choices=["polars", "pandas"],
        help="polars (default, columnar) or pandas (the original implementation; same output)",
    )
    parser.add_argument(
        "--format", default="gru4rec", choices=sorted(PRESETS), help="layout of the input (default: gru4rec)"
    )
    cols = parser.add_argument_group("columns (override the format's)")
    cols.add_argument("--session-col", help="session id column")
    cols.add_argument("--item-col", help="item id column")
    cols.add_argument("--time-col", help="time column (numbers or ISO date-times)")
    cols.add_argument(
        "--user-col", help="user column; without --session-col, sessions are cut per user by --session-gap"
    )
    cols.add_argument("--sep", help="field separator of a text file (use $'\\t' for tab)")
    cols.add_argument("--time-unit", choices=["s", "ms"], help="unit of numeric times")
    cols.add_argument(
        "--session-gap",
        type=_number(float, 0, strict=True),
        help=f"inactivity (seconds) that ends a session cut per user (default: {DEFAULT_SESSION_GAP:g})",
    )
    cols.add_argument(
        "--max-session-gap",
        type=_number(float, 0, strict=True),
        metavar="SECONDS",
        help="split a session id whose events are more than SECONDS apart into several sessions "
        "(default: off, as in the GRU4Rec reference preprocessing, so published datasets keep their "
        f"session counts; a warning names ids spanning more than {LONG_SESSION:g} s)",
    )
    cols.add_argument(
        "--all-events", action="store_true", help="retailrocket/rees46: keep every event type, not only views"
    )
    prep = parser.add_argument_group("preprocessing (pre-split files: none unless given)")
    prep.add_argument(
        "--test-days", type=_number(float, 0, strict=True), help="test period, days (default: 7)"
    )
    prep.add_argument(
        "--valid-days",
        type=_number(float, 0, strict=False),
        help="validation period before it, days; 0 disables (default: 7)",
    )
    count = _number(int, 1, strict=False)
    prep.add_argument("--min-item-support", type=count, help="min events per item (default: 5)")
    prep.add_argument("--min-session-length", type=count, help="min events per session (default: 2)")
    prep.add_argument(
        "--dedup",
        action=argparse.BooleanOptionalAction,
        help="drop consecutive repeats of the same item in a session (default: on; pre-split files: off)",
    )


def reader_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """`read_events` arguments given on the command line, on top of the --format preset."""
    overrides: dict[str, Any] = {}
    for name in ("session_col", "item_col", "time_col", "user_col", "sep", "time_unit", "session_gap"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "max_session_gap", None) is not None:
        if args.user_col is not None and args.session_col is None:
            raise ConfigError("--max-session-gap: splits session ids; per-user sessions use --session-gap")
        overrides["session_split_gap"] = args.max_session_gap
    if args.user_col is not None and args.session_col is None:
        overrides["session_col"] = None
    if args.all_events:
        overrides["keep"] = None
    return overrides


def run(args: argparse.Namespace) -> int:
    """Read, preprocess and write; print a table of events/sessions/items per split. Returns 0."""
    inputs = _inputs(args)
    out = Path(args.out)
    # before any work: refuses --out over an input or the working directory; locked throughout
    with claim_output(out, inputs, folder=True):
        if out.exists() and not args.overwrite:
            raise DataError(f"{out}: output exists (pass --overwrite to replace it)")
        overrides = reader_overrides(args)
        if args.train is not None:
            result, meta = _import(args, overrides)
        else:
            result, meta = _split(args, overrides)
        splits, item_ids = result.splits, result.item_ids
        write_prepared(out, splits, item_ids, meta, overwrite=args.overwrite, session_keys=result.session_keys)
    print(summary_table({name: split_stats(splits[name]) for name in SPLIT_NAMES}, len(item_ids)))
    print(f"wrote {out}")
    return 0


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The input files; ConfigError for INPUT with --train, or an incomplete pre-split set."""
    given = [f"--{n}" for n in ("train", "test", "valid") if getattr(args, n, None) is not None]
    if args.input is not None and given:
        raise ConfigError(
            f"{given[0]}: give either an event log INPUT or pre-split --train/--test files, not both"
        )
    if args.input is not None:
        return [args.input]
    if not given:
        raise ConfigError("prepare: give an event log INPUT, or pre-split files with --train and --test")
    if args.train is None or args.test is None:
        raise ConfigError(f"{given[0]}: pre-split files need both --train and --test")
    for name in ("test_days", "valid_days"):
        if getattr(args, name) is not None:
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option}: splits a raw log; --train/--test are already split")
    if args.engine == "pandas":
        raise ConfigError("--engine pandas: pre-split files are imported by the polars engine only")
    return [p for p in (args.train, args.test, args.valid) if p is not None]


def _split(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[Preprocessed | Columnar, dict]:
    """Read INPUT and preprocess it with the chosen engine: (splits, item ids and session keys; meta)."""
    options = dict(
        dedup_consecutive=args.dedup is not False,
        min_item_support=5 if args.min_item_support is None else args.min_item_support,
        min_session_length=2 if args.min_session_length is None else args.min_session_length,
        test_days=7.0 if args.test_days is None else args.test_days,
        valid_days=7.0 if args.valid_days is None else args.valid_days,
    )
    if args.engine == "pandas":
        events = read_preset(args.format, args.input, **overrides)
        raw = {"events": int(len(events)), "sessions": int(events["session"].nunique())}
        result = preprocess(events, source=str(args.input), **options)
        del events
    else:  # read inside, so that the frame is freed once sorted
        read = functools.partial(read_columnar_preset, args.format, args.input, **overrides)
        result = preprocess_columnar(read, source=str(args.input), **options)
        raw = result.raw
    meta = {
        "source": str(args.input),
        "format": args.format,
        "reader": {k: v for k, v in overrides.items()},
        "options": options,
        "raw": raw,
    }
    return result, meta


def _import(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[Columnar, dict]:
    """Read the pre-split files and import them: (splits, item ids and session keys; meta)."""
    files = {n: getattr(args, n) for n in ("train", "test", "valid") if getattr(args, n) is not None}
    frames = {n: read_columnar_preset(args.format, path, **overrides) for n, path in files.items()}
    options = dict(
        dedup_consecutive=bool(args.dedup),
        min_item_support=args.min_item_support,
        min_session_length=args.min_session_length,
    )
    result = import_splits(
        frames["train"], frames["test"], frames.get("valid"), source={n: str(p) for n, p in files.items()},
        **options
    )
    meta = {
        "source": {n: str(p) for n, p in files.items()},
        "format": args.format,
        "reader": {k: v for k, v in overrides.items()},
        "options": {**options, "presplit": True},
        "raw": {n: {"events": f.height, "sessions": f["session"].n_unique()} for n, f in frames.items()},
    }
    return result, meta


def summary_table(stats: dict[str, dict[str, int]], n_items: int) -> str:
    """A small fixed-width table: one row per split with events, sessions and items."""
    lines = [f"{'split':<11}{'events':>10}{'sessions':>10}{'items':>8}"]
    for name, row in stats.items():
        lines.append(f"{name:<11}{row['events']:>10,}{row['sessions']:>10,}{row['items']:>8,}")
    lines.append(f"item index: {n_items:,} items")
    return "\n".join(lines)
