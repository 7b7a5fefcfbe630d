"""Collect result JSONs (RecBole peers and sessrec runs) into a markdown leaderboard, mean ± std over seeds.

    python benchmarks/recbole/leaderboard.py benchmarks/recbole/results runs/my-experiment --out table.md

Runs in the sessrec venv (standard library, plus PyYAML for sessrec's run.yaml). Reads every ``*.json``
under the given files/folders:

* the shared schema ``"schema": "sessrec-leaderboard/1"`` (what benchmarks/recbole/run.py writes; write
  the same for any other framework)::

      {"schema": "sessrec-leaderboard/1", "framework": "recbole" | "sessrec" | ...,
       "model": str, "dataset": str, "seed": int | null, "tie_mode": "conservative" | ...,
       "metrics": {"valid": {"recall@20": float, ...}, "test": {"recall@20": float, "mrr@20": float, ...}},
       "epochs": int | null, "train_seconds": float | null, "train_events_per_s": float | null,
       "params": {...}, "command": str, "created": str, "extra": {...}}

* sessrec's experiment ``result.json`` (``python -m sessrec experiment``: ``metrics`` with ``test_*``
  keys, ``config``, ``epochs``, ``fit_seconds``), converted on the fly (framework "sessrec"; dataset from
  ``--sessrec-dataset [DATA_DIR=]LABEL`` or the config's data_dir; seed from ``seed_everything``, read from the run's
  ``run.yaml`` beside the result when the record's config is a path).

Rows are grouped by (dataset, framework, model); each metric is shown as mean ± sample std over the
group's seeds (just the value for one seed). When the RecBole venv (``--recbole-venv``, default
.venv-recbole) is absent, RecBole results are skipped with a message (``--keep-recbole`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

SCHEMA = "sessrec-leaderboard/1"
METRICS = ("recall@20", "mrr@20", "recall@10", "mrr@10")
REPO = Path(__file__).resolve().parents[2]


def from_sessrec_result(record: dict, dataset: str | list[str] | None, path: Path | None = None) -> dict:
    """Convert a sessrec experiment result.json into the shared schema.

    The seed and data_dir come from the record's config when it is a dict, else from the composed
    ``run.yaml`` beside the result (what ``sessrec experiment`` writes).
    """
    config = record.get("config")
    if not isinstance(config, dict):
        config = {}
        run_yaml = path.parent / "run.yaml" if path is not None else None
        if run_yaml is not None and run_yaml.is_file():
            import yaml

            config = yaml.safe_load(run_yaml.read_text()) or {}
    data_dir = ((config.get("data") or {}).get("init_args") or config.get("data") or {}).get("data_dir")
    test = {k[len("test_") :]: v for k, v in record["metrics"].items() if k.startswith("test_")}
    data = config.get("data") or {}
    train_split = (data.get("init_args") or data).get("train_split", "train_full")
    pairs = _train_pairs(data_dir, train_split)
    epochs, fit_seconds = record.get("epochs"), record.get("fit_seconds")
    speed = pairs * epochs / fit_seconds if pairs and epochs and fit_seconds else None
    return {
        "schema": SCHEMA,
        "framework": "sessrec",
        "model": record.get("label") or record.get("name") or "?",
        "dataset": _dataset_label(dataset, data_dir),
        "seed": config.get("seed_everything"),
        "tie_mode": "conservative",
        "metrics": {"test": test},
        "epochs": record.get("epochs"),
        "train_seconds": fit_seconds,
        # approximate: sessrec's result has the whole fit time (Lightning setup included)
        "train_events_per_s": speed,
    }


def _dataset_label(labels: str | list[str] | None, data_dir: str | None) -> str:
    """--sessrec-dataset: 'LABEL' for every result, or 'DATA_DIR=LABEL' per prepared folder."""
    default = Path(data_dir).parent.name if data_dir else "?"
    for entry in [labels] if isinstance(labels, str) else labels or []:
        key, sep, label = entry.partition("=")
        if not sep:
            default = entry
        elif data_dir and Path(key).resolve() == Path(data_dir).resolve():
            return label
    return default


def _train_pairs(data_dir: str | None, split: str) -> int | None:
    """(input, target) pairs of a prepared split from its meta.json (events - sessions), if found."""
    if not data_dir:
        return None
    for root in (Path.cwd(), REPO):
        meta = root / data_dir / "meta.json"
        if meta.is_file():
            info = json.loads(meta.read_text()).get("splits", {}).get(split)
            return info["events"] - info["sessions"] if info else None
    return None


def load_results(paths: list[str], sessrec_dataset: str | list[str] | None = None) -> list[dict]:
    """Every recognised result under `paths` (files or folders, recursively), in the shared schema."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    out = []
    for path in files:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"skipped {path}: {err}", file=sys.stderr)
            continue
        if not isinstance(record, dict):
            continue
        if record.get("schema") == SCHEMA:
            out.append(record)
        elif isinstance(record.get("metrics"), dict) and any(
            k.startswith("test_") for k in record["metrics"]
        ):
            out.append(from_sessrec_result(record, sessrec_dataset, path))
    return out


def mean_std(values: list[float], digits: int = 4) -> str:
    """'m' for one value, 'm ± s' (sample std) for several, '' for none."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return ""
    m = sum(values) / len(values)
    if len(values) == 1:
        return str(values[0]) if isinstance(values[0], int) else f"{m:.{digits}f}"
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def table(results: list[dict]) -> str:
    """The markdown leaderboard: one row per (dataset, framework, model), ordered by dataset then MRR@20."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r.get("dataset", "?"), r.get("framework", "?"), r.get("model", "?"))].append(r)

    def test_values(rows: list[dict], metric: str) -> list[float]:
        return [r.get("metrics", {}).get("test", {}).get(metric) for r in rows]

    def sort_key(item):
        (dataset, _, _), rows = item
        vals = [v for v in test_values(rows, "mrr@20") if v is not None]
        return (dataset, -(sum(vals) / len(vals)) if vals else 0.0)

    names = {"recall": "Recall", "mrr": "MRR"}
    header = [
        "dataset",
        "framework",
        "model",
        "seeds",
        "ties",
        *(names[m.split("@")[0]] + "@" + m.split("@")[1] for m in METRICS),
        "epochs",
        "train events/s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, framework, model), rows in sorted(groups.items(), key=sort_key):
        seeds = sorted({str(r.get("seed")) for r in rows})
        ties = sorted({str(r.get("tie_mode", "?")) for r in rows})
        cells = [dataset, framework, model, f"{len(rows)} ({', '.join(seeds)})", "/".join(ties)]
        cells += [mean_std(test_values(rows, m)) for m in METRICS]
        cells.append(mean_std([r.get("epochs") for r in rows], 1))
        cells.append(mean_std([r.get("train_events_per_s") for r in rows], 0))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str) -> None:
    """Bar chart of test Recall@20 and MRR@20 per (dataset, framework, model): mean, error = sample std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r.get("dataset", "?"), r.get("framework", "?"), r.get("model", "?"))].append(r)
    rows = []
    for (dataset, framework, model), rs in groups.items():
        stats = []
        for metric in ("recall@20", "mrr@20"):
            vals = [r.get("metrics", {}).get("test", {}).get(metric) for r in rs]
            vals = [v for v in vals if v is not None]
            m = sum(vals) / len(vals) if vals else float("nan")
            sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            stats.append((m, sd))
        rows.append((f"{framework}: {model}\n({len(rs)} seeds)", dataset, *stats))
    rows.sort(key=lambda r: (r[1], -r[3][0]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(rows) + 1.6), sharey=True)
    y = list(range(len(rows)))
    for ax, idx, name in ((axes[0], 2, "Recall@20"), (axes[1], 3, "MRR@20")):
        means = [r[idx][0] for r in rows]
        sds = [r[idx][1] for r in rows]
        colors = ["tab:blue" if r[0].startswith("sessrec") else "tab:orange" for r in rows]
        ax.barh(y, means, xerr=sds, color=colors, capsize=3)
        for yi, (m, sd) in zip(y, zip(means, sds)):
            ax.text(m + sd + 0.005, yi, f"{m:.3f}", va="center", fontsize=8)
        ax.set_xlabel(f"test {name}")
        ax.set_xlim(0, max(m + sd for m, sd in zip(means, sds)) * 1.25 if means else 1)
    axes[0].set_yticks(y, [r[0] for r in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(", ".join(sorted({r[1] for r in rows})) + ": mean ± std over seeds, conservative ties")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", help="result JSON files or folders")
    parser.add_argument("--out", default=None, help="write the markdown table here (default: stdout)")
    parser.add_argument("--recbole-venv", default=str(REPO / ".venv-recbole"))
    parser.add_argument(
        "--keep-recbole",
        action="store_true",
        help="list RecBole results even when the RecBole venv is absent",
    )
    parser.add_argument(
        "--sessrec-dataset",
        action="append",
        default=[],
        metavar="[DATA_DIR=]LABEL",
        help="dataset label of sessrec result.json files: for all, or per prepared folder (repeatable)",
    )
    parser.add_argument("--plot", default=None, help="also write a PNG bar chart of the table (matplotlib)")
    args = parser.parse_args(argv)
    results = load_results(args.paths, args.sessrec_dataset)
    venv = Path(args.recbole_venv)
    if not (venv / "bin" / "python").exists() and not args.keep_recbole:
        n = sum(r.get("framework") == "recbole" for r in results)
        print(
            f"RecBole venv not found at {venv}: RecBole part skipped ({n} result(s) left out; "
            "create it with `bash benchmarks/recbole/setup_venv.sh`, or pass --keep-recbole)",
            file=sys.stderr,
        )
        results = [r for r in results if r.get("framework") != "recbole"]
    if not results:
        print("no results found", file=sys.stderr)
    text = table(results)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} ({len(results)} result(s))", file=sys.stderr)
    else:
        print(text, end="")
    if args.plot and results:
        plot(results, args.plot)
    return text


if __name__ == "__main__":
    main()
