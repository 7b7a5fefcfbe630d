"""Prometheus metrics and the request-size limit of the server: two small ASGI wrappers.

`Metrics` (prometheus_client, one registry per app) exposes, in the text format of GET /metrics:

- `sessrec_requests_total{endpoint, status}`: answered requests by route and HTTP status;
- `sessrec_request_seconds{endpoint}`: latency histogram, from the request's start to its answer's
  first byte, as the server sees it (buckets 0.5 ms .. 2.5 s);
- `sessrec_batch_size`: clicks per network batch (`sessrec.serving.batcher`);
- `sessrec_sessions`: session states in the cache.

`BodyLimit` answers 413 to a body over `max_bytes` (by its Content-Length, or counted when chunked)
before the application reads it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROUTES = ("/recommend/batch", "/recommend", "/sessions", "/health", "/metrics")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def route_of(path: str) -> str:
    """The metric label of a path: its route, or "other" (so that labels stay few)."""
    return next((r for r in ROUTES if path == r or path.startswith(r + "/")), "other")


class Metrics:
    """The server's Prometheus metrics; `wrap(app)` counts and times every HTTP request of `app`."""

    def __init__(self, n_sessions: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sessrec_requests", "HTTP requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("sessrec_request_seconds", "HTTP request latency in the server (s)",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("sessrec_batch_size", "clicks per network batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        sessions = Gauge("sessrec_sessions", "session states in the cache", registry=self.registry)
        sessions.set_function(n_sessions)

    def response(self) -> Any:
        from fastapi import Response

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def wrap(self, app: Any) -> Callable:
        async def timed(scope: dict, receive: Callable, send: Callable) -> None:
            if scope["type"] != "http":
                return await app(scope, receive, send)
            start, route = time.perf_counter(), route_of(scope["path"])

            async def send_timed(message: dict) -> None:
                if message["type"] == "http.response.start":
                    self.latency.labels(route).observe(time.perf_counter() - start)
                    self.requests.labels(route, str(message["status"])).inc()
                await send(message)

            await app(scope, receive, send_timed)

        return timed


class BodyLimit:
    """ASGI wrapper: 413 for request bodies over `max_bytes`; everything else passes to `app`."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:  # the HTTP parser holds the body to its Content-Length
            if int(length) > self.max_bytes:
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        body, more = b"", True  # chunked (or no body): read it here, up to the limit
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, send: Callable) -> None:
        detail = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(detail)).encode())]})
        await send({"type": "http.response.body", "body": detail})
