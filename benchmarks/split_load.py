"""Loading a prepared split: memory-mapped arrays (`sessrec.data.arrays`) against the Parquet read.

    OMP_NUM_THREADS=1 python benchmarks/split_load.py PREPARED [--split train_full] [--repeats 3]

Each run is a fresh subprocess that loads the split one way, then walks it once as training would (the
item counts and one pass over the items of every session boundary), and reports: wall seconds of the
load, of the walk, peak RSS (`ru_maxrss`), and RSS after the walk split into anonymous memory (the
process's own copies) and file-backed pages (the mapped files: shared with other processes mapping
them, dropped under memory pressure). Runs alternate between the two ways; the table gives medians.
A folder prepared before the arrays existed gets them first (written from its Parquet files, as
`prepare` writes them), unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from sessrec.data.prepared import PreparedData, Split, _load_split
root, split, way = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
start = time.perf_counter()
data = PreparedData.load(root)
s = data.split(split) if way == "mapped" else _load_split(root / f"{split}.parquet", data.n_items)
assert isinstance(s.items, np.memmap) == (way == "mapped")
loaded = time.perf_counter()
counts = np.bincount(s.items, minlength=data.n_items)  # what the sampler and the popularity need
firsts = int(s.items[s.offsets[:-1]].sum())  # a pass over the session starts, as the batches read them
walked = time.perf_counter()
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
kib = lambda key: int(status[key].split()[0])
print(json.dumps({"load_s": loaded - start, "walk_s": walked - loaded, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "anon_mib": kib("RssAnon") / 1024, "file_mib": kib("RssFile") / 1024, "events": int(counts.sum()), "check": firsts}))
"""


def write_missing_arrays(root: Path) -> None:
    """Give a folder prepared before `sessrec.data.arrays` its arrays (from its own Parquet files)."""
    import pyarrow.parquet as pq

    from sessrec.data.arrays import FOLDER, TOKEN_KEY, write_arrays
    from sessrec.data.prepared import SPLIT_NAMES, PreparedData, _load_split

    data = PreparedData.load(root)
    for name in SPLIT_NAMES:
        if (root / FOLDER / f"{name}.source.json").is_file():
            continue
        split = _load_split(root / f"{name}.parquet", data.n_items)
        session = np.repeat(np.arange(split.n_sessions), np.diff(split.offsets))
        split_token = (pq.read_schema(root / f"{name}.parquet").metadata or {}).get(TOKEN_KEY)
        if split_token is None:
            raise SystemExit(f"{root / name}.parquet predates the arrays: prepare the folder again")
        write_arrays(root, name, session, split.items, split.times, split_token.decode())
        print(f"wrote {root / FOLDER}/{name}.*.npy", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", type=Path)
    parser.add_argument("--split", default="train_full")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.no_write:
        write_missing_arrays(args.prepared)
    runs: dict[str, list[dict]] = {"parquet": [], "mapped": []}
    for repeat in range(args.repeats):
        for way in runs:
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.prepared), args.split, way],
                                 capture_output=True, text=True, check=True)
            runs[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = runs[way][-1]
            print(f"repeat {repeat} {way:8s} load {r['load_s']:.2f} s, walk {r['walk_s']:.2f} s, peak "
                  f"{r['peak_mib']:,.0f} MiB, after: anon {r['anon_mib']:,.0f} + file {r['file_mib']:,.0f} MiB",
                  flush=True)
    print("| way | load s | walk s | peak MiB | RSS after: anonymous MiB | RSS after: file-backed MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for way, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("load_s", "walk_s", "peak_mib", "anon_mib", "file_mib")}
        print(f"| {way} | {med['load_s']:.2f} | {med['walk_s']:.2f} | {med['peak_mib']:,.0f} | {med['anon_mib']:,.0f} "
              f"| {med['file_mib']:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
