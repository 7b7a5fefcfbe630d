"""Per-run result.json files, and the experiment's table as Markdown, CSV and a W&B table."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

from sessrec.experiment.spec import Experiment, RunSpec
from sessrec.io import atomic_write
from sessrec.training.loggers import log_table_once

log = logging.getLogger(__name__)

RESULT = "result.json"
MARKDOWN_METRICS = ("recall@20", "mrr@20")  # the paper's columns; the CSV has every cutoff
_EXTRA = ("test_events", "epochs", "fit_seconds", "test_seconds")


def result_path(experiment: Experiment, run: RunSpec) -> Path:
    return experiment.run_dir(run) / RESULT


def write_result(experiment: Experiment, run: RunSpec, result: dict[str, Any]) -> Path:
    """Write <run>/result.json atomically: its presence marks the run as finished."""
    path = result_path(experiment, run)
    record = {"name": run.name, "label": run.title, "config": run.config, **result}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_results(experiment: Experiment) -> list[dict[str, Any]]:
    """The result.json of every finished run, in the experiment's order (unfinished runs left out)."""
    rows = []
    for run in experiment.runs:
        path = result_path(experiment, run)
        if path.is_file():
            record = json.loads(path.read_text())
            record["label"] = run.title  # labels may be edited after the run
            rows.append(record)
    return rows


def _metric_key(name: str) -> tuple:
    """Order test metrics as recall@1, mrr@1, recall@5, ... (by cutoff, recall first)."""
    match = re.fullmatch(r"test_(\w+)@(\d+)", name)
    return (0, int(match.group(2)), match.group(1) != "recall", name) if match else (1, 0, False, name)


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the full table (every metric): name, label, test_*, events, epochs, times."""
    metrics = sorted({m for r in rows for m in r["metrics"]}, key=_metric_key)
    columns = ["name", "label", *metrics, *_EXTRA]
    data = [[r["name"], r["label"], *(r["metrics"].get(m) for m in metrics), *(r.get(k) for k in _EXTRA)]
            for r in rows]
    return columns, data


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns, data = table(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(data)
    return buffer.getvalue()


def _change(value: float | None, ref: float | None) -> str:
    if value is None or not ref:
        return ""
    return f"{100 * (value / ref - 1):+.1f}%"


def to_markdown(experiment: Experiment, rows: list[dict[str, Any]], command: str) -> str:
    """The paper-style table: Recall@20, MRR@20 (and the change vs `reference`), epochs, fit time."""
    ref = next((r for r in rows if r["name"] == experiment.reference), None)
    header = ["model", "run"]
    for m in MARKDOWN_METRICS:
        header += [m.replace("recall", "Recall").replace("mrr", "MRR")]
        if ref is not None:
            header += [f"vs {ref['name']}"]
    header += ["epochs", "fit (s)"]
    lines = [f"# {experiment.name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["label"], f"`{r['name']}`"]
        for m in MARKDOWN_METRICS:
            value = r["metrics"].get(f"test_{m}")
            cells.append("" if value is None else f"{value:.4f}")
            if ref is not None:
                cells.append(_change(value, ref["metrics"].get(f"test_{m}")))
        trained = bool(r.get("epochs"))  # a baseline is only tested
        cells += [str(r["epochs"]) if trained else "-", f"{r.get('fit_seconds', 0):.0f}" if trained else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    events = sorted({r.get("test_events") for r in rows})
    lines += ["", f"Test (input, target) pairs: {', '.join(f'{e:,}' for e in events if e is not None)}. "
              "Conservative ties, ranked against all items. Every metric: results.csv.",
              f"Command: `{command}`", ""]
    return "\n".join(lines)


def write_tables(experiment: Experiment, command: str) -> list[dict[str, Any]]:
    """Write <out_dir>/results.md and results.csv (atomically) from the finished runs; return the rows."""
    rows = read_results(experiment)
    out = Path(experiment.out_dir)
    with atomic_write(out / "results.csv") as tmp:
        tmp.write_text(to_csv(rows))
    with atomic_write(out / "results.md") as tmp:
        tmp.write_text(to_markdown(experiment, rows, command))
    return rows


def log_wandb_table(experiment: Experiment, rows: list[dict[str, Any]], init_timeout: float = 60.0) -> bool:
    """Log the table as a wandb.Table in a "results" run of the experiment's group, once per content.

    A hash of the logged table is kept in <out_dir>/.wandb-table, so a rerun that changed nothing does
    not log the same table again. Returns True when a table was logged.
    """
    if experiment.wandb is None or not rows:
        return False
    columns, data = table(rows)
    name = experiment.name
    return log_table_once(
        experiment.wandb.project, name, f"{name}-results", "results", experiment.out_dir, ".wandb-table",
        "results", columns, data, config={"experiment": name}, init_timeout=init_timeout)
