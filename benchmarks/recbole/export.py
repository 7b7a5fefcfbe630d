"""Export a sessrec prepared folder as RecBole atomic benchmark files with sessrec's evaluation targets.

    python benchmarks/recbole/export.py data/movielens/prepared data/recbole/movielens \
        --properties data/movielens/features/properties.parquet --feature-columns genre

Runs in the sessrec venv (RecBole is not needed). Writes into OUT (the dataset name defaults to OUT's
basename; RecBole wants the files in a folder named like the dataset):

* ``NAME.{train,train_full,valid,test}.inter``: one row per position t >= 1 of every session of the
  split: ``session_id:token`` (split prefix + sessrec's session index), ``item_id_list:token_seq``
  (the session's items before t, oldest first, space-separated) and ``item_id:token`` (the item at t).
  These are exactly the (history, target) pairs sessrec evaluates (Recall@k / MRR@k over every
  next-item target of the test sessions), so a split has ``events - sessions`` rows (checked).
* ``NAME.item``: every item of the prepared item index (so RecBole's catalogue is sessrec's: all
  train_full items, ranked in full) plus optional categorical feature columns from a properties parquet
  keyed by ``item_id`` (e.g. MovieLens genre, Diginetica category) for GRU4RecF. Missing values are
  left empty (RecBole maps them to its padding token).
* ``NAME.export.json``: counts, the longest history per split (benchmarks/recbole/run.py sets
  MAX_ITEM_LIST_LENGTH from it), the history cut and how many targets it affects, feature fields.

Item tokens are the prepared item index (``items.parquet`` idx). Histories are NOT cut by default
(RecBole's own sequential protocol keeps 50 items); ``--max-history K`` keeps the last K items before
each target and reports how many rows per split lost part of their history.

Everything is built with numpy on byte buffers: no Python object per event or per row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sessrec.data.prepared import PreparedData, Split

SPLITS = ("train", "train_full", "valid", "test")
SESSION_PREFIX = {"train": b"tr", "train_full": b"tr", "valid": b"va", "test": b"te"}
INTER_HEADER = b"session_id:token\titem_id_list:token_seq\titem_id:token\n"


def int_tokens(values: np.ndarray, sep: int) -> tuple[np.ndarray, np.ndarray]:
    """ASCII decimal digits of non-negative ints, each followed by byte `sep`.

    Returns (buffer uint8 (total,), offsets int64 (n+1,)): token i with its separator is
    buffer[offsets[i]:offsets[i + 1]].
    """
    values = np.asarray(values, dtype=np.int64)
    if values.size and values.min() < 0:
        raise ValueError("int_tokens: negative value")
    n_digits = np.ones(values.shape, dtype=np.int64)  # (n,)
    v = values // 10
    while np.any(v > 0):
        n_digits += v > 0
        v //= 10
    width = int(n_digits.max()) if values.size else 1
    pow10 = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)  # (D,)
    digits = (values[:, None] // pow10[None, :]) % 10 + ord("0")  # (n, D)
    keep = np.arange(width)[None, :] >= (width - n_digits)[:, None]  # (n, D) drop leading zeros
    mat = np.concatenate([digits, np.full((len(values), 1), sep)], axis=1).astype(np.uint8)  # (n, D+1)
    mask = np.concatenate([keep, np.ones((len(values), 1), dtype=bool)], axis=1)  # (n, D+1)
    offsets = np.concatenate([[0], np.cumsum(n_digits + 1)]).astype(np.int64)
    return mat[mask], offsets


def gather_ranges(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of buffer[starts[i] : starts[i] + lengths[i]] for all i, vectorised (uint8)."""
    starts = starts.astype(np.int64).ravel()
    lengths = lengths.astype(np.int64).ravel()
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)  # (total,)
    return buffer[np.arange(total, dtype=np.int64) + shift]


def history_rows(split: Split, max_history: int | None = None) -> dict[str, np.ndarray]:
    """The (history, target) rows of a split as index arrays (no per-row objects).

    Row r: target event ``target[r]`` (global event index), history events ``start[r]:target[r]``,
    session ``session[r]``; ``cut[r]`` is True where max_history dropped older items.
    """
    lengths = np.diff(split.offsets)  # (S,)
    session_of_event = np.repeat(np.arange(split.n_sessions, dtype=np.int64), lengths)  # (E,)
    first = np.repeat(split.offsets[:-1], lengths)  # (E,) session start of each event
    is_target = np.arange(split.n_events, dtype=np.int64) > first  # position t >= 1
    target = np.flatnonzero(is_target)  # (R,)
    start = first[target]
    cut = np.zeros(len(target), dtype=bool)
    if max_history is not None:
        limited = np.maximum(start, target - max_history)
        cut = limited > start
        start = limited
    return {"target": target, "start": start, "session": session_of_event[target], "cut": cut}


def inter_bytes(split: Split, prefix: bytes, max_history: int | None = None) -> tuple[bytes, dict]:
    """The .inter file content (header included) for one split and its row statistics."""
    rows = history_rows(split, max_history)
    n_rows = len(rows["target"])
    items_buf, item_off = int_tokens(split.items, ord(" "))  # "12 7 99 " per event
    sess_buf, sess_off = int_tokens(np.arange(split.n_sessions), ord("\t"))  # "17\t" per session
    const = np.frombuffer(prefix + b"\t\n", dtype=np.uint8)
    base_items = len(const)
    base_sess = base_items + len(items_buf)
    buffer = np.concatenate([const, items_buf, sess_buf])
    plen = len(prefix)
    t, a, s = rows["target"], rows["start"], rows["session"]
    # six pieces per row: prefix | session digits + '\t' | history (no trailing space) | '\t' | target | '\n'
    starts = np.stack(
        [
            np.zeros(n_rows, dtype=np.int64),
            base_sess + sess_off[s],
            base_items + item_off[a],
            np.full(n_rows, plen, dtype=np.int64),
            base_items + item_off[t],
            np.full(n_rows, plen + 1, dtype=np.int64),
        ],
        axis=1,
    )  # (R, 6)
    lengths = np.stack(
        [
            np.full(n_rows, plen, dtype=np.int64),
            sess_off[s + 1] - sess_off[s],
            item_off[t] - item_off[a] - 1,
            np.ones(n_rows, dtype=np.int64),
            item_off[t + 1] - item_off[t] - 1,
            np.ones(n_rows, dtype=np.int64),
        ],
        axis=1,
    )  # (R, 6)
    body = gather_ranges(buffer, starts, lengths)
    hist_len = t - a
    stats = {
        "events": split.n_events,
        "sessions": split.n_sessions,
        "rows": n_rows,
        "max_history": int(hist_len.max()) if n_rows else 0,
        "longest_session": int(np.diff(split.offsets).max()) if split.n_sessions else 0,
        "rows_with_cut_history": int(rows["cut"].sum()),
    }
    return INTER_HEADER + body.tobytes(), stats


def _clean_token(values: pd.Series) -> pd.Series:
    """Feature values as tokens: whitespace -> '_', missing -> '' (RecBole's padding token)."""
    text = values.astype("string").str.strip().str.replace(r"\s+", "_", regex=True)
    return text.fillna("")


def item_frame(data: PreparedData, properties: str | None, columns: list[str]) -> pd.DataFrame:
    """One row per item index: item_id token (the idx) + categorical feature columns."""
    frame = pd.DataFrame({"item_id:token": np.arange(data.n_items).astype(str)})
    if not columns:
        return frame
    if properties is None:
        raise SystemExit("--feature-columns needs --properties")
    props = pd.read_parquet(properties)
    missing = [c for c in ["item_id", *columns] if c not in props.columns]
    if missing:
        raise SystemExit(f"{properties}: column(s) {missing} not found (columns: {list(props.columns)})")
    props = props.assign(item_id=props["item_id"].astype(str)).drop_duplicates("item_id")
    props = props.set_index("item_id")
    for col in columns:
        values = props[col].reindex(pd.Index(data.item_ids.astype(str)))  # (N,) by item index
        frame[f"{col}:token"] = _clean_token(values).to_numpy()
    return frame


def export(
    prepared: str | Path,
    out: str | Path,
    name: str | None = None,
    max_history: int | None = None,
    properties: str | None = None,
    feature_columns: list[str] | None = None,
    splits: tuple[str, ...] = SPLITS,
    quiet: bool = False,
) -> dict:
    """Write NAME.<split>.inter, NAME.item and NAME.export.json into `out`; returns the export meta."""
    data = PreparedData.load(prepared)
    out = Path(out)
    name = name or out.name
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "prepared": str(Path(prepared).resolve()),
        "dataset": name,
        "n_items": data.n_items,
        "max_history_cut": max_history,
        "splits": {},
        "item_features": list(feature_columns or []),
    }
    for split_name in splits:
        split = data.split(split_name)
        content, stats = inter_bytes(split, SESSION_PREFIX[split_name], max_history)
        if stats["rows"] != split.n_events - split.n_sessions:
            raise AssertionError(f"{split_name}: {stats['rows']} rows != events - sessions")
        (out / f"{name}.{split_name}.inter").write_bytes(content)
        meta["splits"][split_name] = stats
        if not quiet:
            cut = stats["rows_with_cut_history"]
            print(
                f"{split_name:>10}: {stats['rows']:,} rows = {split.n_events:,} events - "
                f"{split.n_sessions:,} sessions (ok); longest history {stats['max_history']}"
                + (f"; {cut:,} rows with history cut to the last {max_history}" if max_history else "")
            )
    frame = item_frame(data, properties, list(feature_columns or []))
    frame.to_csv(out / f"{name}.item", sep="\t", index=False)
    for col in feature_columns or []:
        present = frame[f"{col}:token"].ne("")
        meta.setdefault("feature_stats", {})[col] = {
            "items_with_value": int(present.sum()),
            "distinct": int(frame.loc[present, f"{col}:token"].nunique()),
        }
    meta["max_history"] = max(s["max_history"] for s in meta["splits"].values())
    (out / f"{name}.export.json").write_text(json.dumps(meta, indent=2) + "\n")
    if not quiet:
        print(
            f"{out / (name + '.item')}: {data.n_items:,} items"
            + (f", features {feature_columns}" if feature_columns else "")
        )
        print(
            f"longest history over the exported splits: {meta['max_history']} "
            f"(run.py sets MAX_ITEM_LIST_LENGTH to it)"
        )
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prepared", help="sessrec prepared data folder")
    parser.add_argument("out", help="output folder (RecBole's data_path/NAME)")
    parser.add_argument("--name", default=None, help="dataset name (default: basename of OUT)")
    parser.add_argument(
        "--max-history",
        type=int,
        default=None,
        help="keep only the last K items of each history (default: no cut)",
    )
    parser.add_argument("--properties", default=None, help="properties parquet keyed by item_id")
    parser.add_argument(
        "--feature-columns",
        nargs="*",
        default=[],
        help="categorical columns of --properties to write into NAME.item",
    )
    parser.add_argument("--splits", nargs="*", default=list(SPLITS), choices=SPLITS)
    args = parser.parse_args(argv)
    if args.max_history is not None and args.max_history < 1:
        parser.error("--max-history must be >= 1")
    if Path(args.out).name != (args.name or Path(args.out).name):
        print("note: RecBole reads data_path/NAME: keep OUT's basename equal to --name", file=sys.stderr)
    export(
        args.prepared,
        args.out,
        args.name,
        args.max_history,
        args.properties,
        args.feature_columns,
        tuple(args.splits),
    )


if __name__ == "__main__":
    main()
