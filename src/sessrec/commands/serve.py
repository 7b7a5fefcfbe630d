"""Serve an exported model over HTTP: POST /recommend with per-session hidden state (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", type=Path, help="folder written by `sessrec export`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--max_sessions", type=int, default=100_000,
                        help="sessions whose hidden state is kept (least recently used dropped first)")
    parser.add_argument("--max_cache_mb", type=float, default=None,
                        help="also drop least recently used sessions while their estimated memory exceeds this "
                             "many MiB (default: no byte cap)")
    parser.add_argument("--ttl", type=float, default=1800.0,
                        help="seconds a session's state is kept after its last request (default 1800)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads: torch's, and those screening a large catalogue's top k, one item "
                             "range each (default 1)")
    parser.add_argument("--api_key", default=None,
                        help="require this value in the X-API-Key header (default: $SESSREC_API_KEY; unset: none)")
    parser.add_argument("--max_batch", type=int, default=64, help="most clicks stepped as one batch (default 64)")
    parser.add_argument("--batch_wait_ms", type=float, default=0.0,
                        help="ms to wait for more clicks after a batch's first (default 0: a batch is what "
                             "queued while the previous one ran)")
    parser.add_argument("--max_body_bytes", type=int, default=1 << 20,
                        help="larger request bodies are answered 413 (default 1 MiB)")


def run(args: argparse.Namespace) -> int:
    from sessrec.errors import ConfigError
    from sessrec.serving.server import serve

    for option in ("max_sessions", "max_cache_mb", "ttl", "max_batch", "max_body_bytes", "threads"):
        value = getattr(args, option)
        if value is not None and not value > 0:
            raise ConfigError(f"--{option}: must be > 0, got {value}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: must be 0-65535, got {args.port}")
    if not args.batch_wait_ms >= 0:
        raise ConfigError(f"--batch_wait_ms: must be >= 0, got {args.batch_wait_ms}")
    max_bytes = None if args.max_cache_mb is None else max(1, int(args.max_cache_mb * 2**20))
    serve(args.export_dir, args.host, args.port, args.max_sessions, args.ttl, args.threads, args.api_key,
          args.max_batch, args.batch_wait_ms, args.max_body_bytes, max_bytes)
    return 0
