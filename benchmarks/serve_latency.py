"""Load test of `sessrec serve`: latency percentiles and throughput at 1, 16 and 64 concurrent sessions.

    python benchmarks/serve_latency.py --work /tmp/serve-bench            # builds the three models below
    python benchmarks/serve_latency.py --export mine=exports/gru4rec      # or serve existing exports

Without --export it builds, in --work: the bundled GRU4Rec (configs/gru4rec/synthetic.yaml) and p-RNN
(configs/prnn/prnn.yaml) each fitted for one epoch on generated data (`sessrec generate` + `prepare`),
exported with `sessrec export`; and a GRU4Rec of 100 units with RANDOM weights over 700,000 items,
written through the export format (`write_export`): latency does not depend on the weights' values.

For each model and server variant it starts `python -m sessrec serve DIR` in a subprocess on a free
port (OMP_NUM_THREADS=1, `--threads 1`), then drives it with C concurrent simulated sessions (asyncio,
one keep-alive HTTP/1.1 connection each, written by hand so that the client costs little CPU): a
session is a random walk of 3-15 clicks over the catalogue, each click a POST /recommend (k=20) sent
when the previous answer arrived, then a new session id. Latency is measured in the client (send to
last byte); each level runs `--seconds` after a 1 s warm-up, `--repeats` times; the table gives the
median of the repeats for every figure. Variants: `batched` (the default server: a batch is what
queued while the previous one ran), `batched-wait1ms` (`--batch_wait_ms 1`: also waits 1 ms for more)
and `unbatched` (`--max_batch 1`: one click at a time, as a lock per request would).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"batched": [], "batched-wait1ms": ["--batch_wait_ms", "1"], "unbatched": ["--max_batch", "1"],
            "batched-2threads": ["--threads", "2"]}


def sessrec(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "sessrec", *map(str, args)], check=True, cwd=ROOT)


def build_trained(work: Path, name: str, config: str, n_sessions: int) -> Path:
    """Fit `config` for one epoch on generated data in `work`; export it; the export folder."""
    raw, prepared, run = work / "raw", work / "prepared", work / f"run-{name}"
    if not (prepared / "meta.json").is_file():
        sessrec("generate", "--out", raw, "--n-sessions", n_sessions)
        sessrec("prepare", raw / "events.tsv", "--format", "gru4rec", "--out", prepared)
    cfg = yaml.safe_load((ROOT / config).read_text())
    cfg["trainer"].update(max_epochs=1, default_root_dir=str(run), accelerator="cpu", enable_progress_bar=False)
    cfg["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(run)
    cfg["data"]["data_dir"] = str(prepared)
    run.mkdir(parents=True, exist_ok=True)
    (run / "train.yaml").write_text(yaml.safe_dump(cfg))
    sessrec("fit", "--config", run / "train.yaml")
    out = work / f"export-{name}"
    sessrec("export", "--ckpt_path", run / "last.ckpt", "--config", run / "train.yaml", "--out", out)
    return out


def build_random(work: Path, n_items: int, hidden: int = 100) -> Path:
    """A GRU4Rec of `hidden` units with random weights over `n_items` items, as an export folder."""
    import torch

    from sessrec.models.gru4rec import GRU4Rec
    from sessrec.serving.artefact import write_export

    out = work / f"export-random-{n_items}"
    if not (out / "manifest.json").is_file():
        torch.manual_seed(0)
        net = GRU4Rec(n_items=n_items, layers=[hidden])
        spec = {"class_path": "sessrec.models.gru4rec.GRU4Rec", "init_args": {"n_items": n_items, "layers": [hidden]}}
        out.mkdir(parents=True)
        write_export(out, net, np.arange(n_items).astype(str), spec, catalogue=None)  # no feature files
    return out


# ---- the server and the client --------------------------------------------------------------------
def start_server(export: Path, options: list[str]) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "sessrec", "serve", str(export), "--port", str(port), *options],
                            env=env, cwd=ROOT)
    for _ in range(1200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server of {export} exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server of {export} did not start")


async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, body: bytes) -> bytes:
    writer.write(b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    answer = await reader.readexactly(length)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
    return answer


async def drive(port: int, ids: list[str], concurrency: int, seconds: float, warmup: float = 1.0) -> dict:
    """C sessions against the server for warmup + seconds; latency stats of the clicks after warm-up."""
    latencies: list[float] = []
    n_items = len(ids)
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def user(worker: int) -> None:
        rng = random.Random(worker)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        session = 0
        while time.perf_counter() < stop_at:
            session += 1
            item = rng.randrange(n_items)
            for _ in range(rng.randint(3, 15)):
                body = json.dumps({"session_id": f"w{worker}-{session}", "item_id": ids[item], "k": 20}).encode()
                sent = time.perf_counter()
                await post(reader, writer, port, body)
                done = time.perf_counter()
                if sent >= measure_from and done <= stop_at:
                    latencies.append(done - sent)
                item = (item + rng.randint(1, 50)) % n_items  # a walk: ids near each other
        writer.close()

    await asyncio.gather(*(user(w) for w in range(concurrency)))
    ms = np.asarray(latencies) * 1000
    if ms.size == 0:  # every answer took longer than the window
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "rps": 0.0, "n": 0}
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "rps": len(ms) / seconds, "n": len(ms)}


def item_ids_of(export: Path) -> list[str]:
    return json.loads((export / "items.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sessrec-serve-bench"))
    parser.add_argument("--export", action="append", default=[], help="NAME=DIR of an export (repeatable)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n_sessions", type=int, default=5000, help="generated sessions to train on")
    parser.add_argument("--big_items", type=int, default=700_000)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    if args.export:
        exports = {name: Path(path) for name, path in (e.split("=", 1) for e in args.export)}
    else:
        exports = {"gru4rec": build_trained(args.work, "gru4rec", "configs/gru4rec/synthetic.yaml", args.n_sessions),
                   "prnn": build_trained(args.work, "prnn", "configs/prnn/prnn.yaml", args.n_sessions),
                   f"gru4rec-random-{args.big_items}": build_random(args.work, args.big_items)}
    rows = []
    print("| model | items | server | sessions | p50 ms | p95 ms | p99 ms | req/s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, export in exports.items():
        ids = item_ids_of(export)
        n_items = len(ids)
        for variant in args.variants:
            proc, port = start_server(export, VARIANTS[variant])
            try:
                for concurrency in args.concurrency:
                    runs = [asyncio.run(drive(port, ids, concurrency, args.seconds)) for _ in range(args.repeats)]
                    med = {key: statistics.median(r[key] for r in runs) for key in ("p50", "p95", "p99", "rps")}
                    rows.append({"model": name, "n_items": n_items, "variant": variant, "concurrency": concurrency,
                                 **med, "runs": runs})
                    print(f"| {name} | {n_items:,} | {variant} | {concurrency} | {med['p50']:.1f} | {med['p95']:.1f} "
                          f"| {med['p99']:.1f} | {med['rps']:.0f} |", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
