"""Data preparation at scale (issue 17): `prepare --engine pandas` vs `--engine polars`, side by side.

Generates synthetic logs (`sessrec generate`, 71,282 items, ~4 events a session) at the requested sizes,
then runs each engine's `prepare` in a fresh subprocess `--repeats` times, interleaved, and reports the
median wall time and peak RSS (ru_maxrss of the child), the new/old ratios and the memory slope (MB per
extra million events between the smallest and largest log). The folders of the two engines are checked
to be identical on every log. Threads: OMP_NUM_THREADS=1 and POLARS_MAX_THREADS=--threads.

    python benchmarks/prepare_scale.py --events 1.7 6.9 --repeats 3 --threads 1 --work /tmp/prepare-scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

N_ITEMS = 71_282
EVENTS_PER_SESSION = 4.0  # --mean-session-length 4 gives ~3.96 events a session (1.74M sessions: 6.9M)
FILES = ("train_full", "train", "valid", "test", "items")


def child(cmd: list[str], env: dict[str, str], errors: Path) -> tuple[float, float]:
    """Run `cmd`; (wall seconds, peak RSS MB of that child from wait4's rusage)."""
    start = time.perf_counter()
    with errors.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{errors.read_text()}")
    return wall, usage.ru_maxrss / 1024


def generate(millions: float, work: Path, env: dict[str, str]) -> Path:
    out = work / f"log-{millions:g}M"
    if not (out / "events.tsv").exists():
        sessions = round(millions * 1e6 / EVENTS_PER_SESSION)
        cmd = [sys.executable, "-m", "sessrec", "generate", "--out", str(out), "--overwrite",
               "--n-items", str(N_ITEMS), "--n-sessions", str(sessions), "--mean-session-length", "4",
               "--days", "90", "--image-dim", "4", "--vocab-size", "30000"]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return out / "events.tsv"


def same(a: Path, b: Path) -> bool:
    tables = all(pq.read_table(a / f"{n}.parquet").equals(pq.read_table(b / f"{n}.parquet")) for n in FILES)
    return tables and json.loads((a / "meta.json").read_text()) == json.loads((b / "meta.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, nargs="+", default=[1.7, 6.9], help="log sizes, millions")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="POLARS_MAX_THREADS (default: 1)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/prepare-scale"))
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLARS_MAX_THREADS": str(args.threads),
           "SESSREC_LOG_LEVEL": "WARNING"}  # fmt: skip
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for millions in args.events:
        log = generate(millions, args.work, env)
        runs: dict[str, list[tuple[float, float]]] = {"pandas": [], "polars": []}
        for _ in range(args.repeats):
            for engine in runs:  # interleaved: a noisy neighbour hits both engines alike
                out = args.work / f"out-{millions:g}M-{engine}"
                cmd = [sys.executable, "-m", "sessrec", "prepare", str(log), "--out", str(out), "--overwrite",
                       "--engine", engine, "--test-days", "7", "--valid-days", "7"]  # fmt: skip
                runs[engine].append(child(cmd, env, args.work / "stderr.txt"))
        meta = json.loads((args.work / f"out-{millions:g}M-polars" / "meta.json").read_text())
        identical = same(args.work / f"out-{millions:g}M-pandas", args.work / f"out-{millions:g}M-polars")
        row = {"millions": millions, "events": meta["raw"]["events"], "sessions": meta["raw"]["sessions"],
               "identical": identical}  # fmt: skip
        for engine, measured in runs.items():
            row[engine] = {
                "wall_s": statistics.median(w for w, _ in measured),
                "rss_mb": statistics.median(r for _, r in measured),
                "runs": measured,
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n| events | sessions | old s | new s | speed-up | old peak MB | new peak MB | identical |"
          f"  (POLARS_MAX_THREADS={args.threads}, median of {args.repeats})")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        old, new = r["pandas"], r["polars"]
        speed = old["wall_s"] / new["wall_s"]
        print(f"| {r['events']:,} | {r['sessions']:,} | {old['wall_s']:.1f} | {new['wall_s']:.1f} | "
              f"{speed:.1f}x | {old['rss_mb']:.0f} | {new['rss_mb']:.0f} | {r['identical']} |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        span = (b["events"] - a["events"]) / 1e6
        slope = {e: (b[e]["rss_mb"] - a[e]["rss_mb"]) / span for e in ("pandas", "polars")}
        print(f"\nmemory slope, MB per extra million events: old {slope['pandas']:.0f}, "
              f"new {slope['polars']:.0f} (new/old {slope['polars'] / slope['pandas']:.2f})")
    print(f"peak RSS of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
