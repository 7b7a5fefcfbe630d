"""HTTP server on FastAPI + uvicorn: one click in, the session's next items out (docs/serving.md).

- POST /recommend {session_id, item_id, k=20, exclude_seen=true, candidates=null} -> {session_id,
  items: [{item_id, score}], n_seen}: feeds `item_id` to the session's stored state (a new session
  when there is none) and answers its top k (`candidates`: rank only those ids): the same code and
  scores as the offline `Recommender.recommend`.
- POST /recommend/batch {requests: [...]} -> {results: [answer | {status, detail}]}, in order (clicks
  of one session applied in list order).
- DELETE /sessions/{session_id}: forget a session (a later click starts a new one).
- GET /health: {status, n_items, sessions}; GET /metrics: Prometheus text format.

Concurrent requests are stepped through the network together by a `MicroBatcher` (one worker thread).
Errors are JSON `{"detail": ...}`: 422 for a malformed body (FastAPI's validation), 404 naming an
unknown item id (the session's state is left as it was), 401 without the API key when one is set
(`X-API-Key` header; /health stays open), 413 for a body over `max_body_bytes`.

Session states live in a `SessionCache`: at most `max_sessions` (and, with `max_cache_mb`, at most that
much estimated memory), least recently used dropped first, and each dropped `ttl` seconds after its last
request.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import signal
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from sessrec.serving.batcher import Click, MicroBatcher
from sessrec.serving.metrics import BodyLimit, Metrics
from sessrec.serving.recommender import Recommender, SessionState, UnknownItemError

log = logging.getLogger("sessrec")
API_KEY_ENV = "SESSREC_API_KEY"


def state_bytes(state: SessionState) -> int:
    """Memory of one session state, estimated: its tensors' data plus ~256 bytes of object overhead
    each, 8 bytes a seen item, ~200 bytes for the state itself."""
    tensors = [*state.hidden, *(state.previous or ()), *(() if state.query is None else (state.query,))]
    return sum(t.nbytes + 256 for t in tensors) + 8 * len(state.items) + 200


class SessionCache:
    """Bounded LRU of session states with a time-to-live, safe across threads.

    Args:
        max_sessions: most states kept; the least recently used is dropped first.
        ttl: seconds a state is kept after its last `get` or `put`.
        max_bytes: also drop the least recently used states while their estimated memory
            (`state_bytes`) exceeds this; None: no byte cap.
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self, max_sessions: int = 100_000, ttl: float = 1800.0, max_bytes: int | None = None, clock=time.monotonic
    ) -> None:
        if max_sessions < 1 or ttl <= 0 or (max_bytes is not None and max_bytes < 1):
            raise ValueError(f"max_sessions and max_bytes must be >= 1 and ttl > 0, got {max_sessions}, "
                             f"{max_bytes}, {ttl}")
        self.max_sessions, self.ttl, self.max_bytes, self.clock = max_sessions, ttl, max_bytes, clock
        self._states: OrderedDict[str, tuple[float, SessionState]] = OrderedDict()
        self._bytes = 0  # estimated memory of the kept states
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Estimated memory of the kept states (`state_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._states)

    def get(self, session_id: str) -> SessionState | None:
        """The state of a session, None when unknown or expired."""
        with self._lock:
            self._expire()
            entry = self._states.get(session_id)
            if entry is None:
                return None
            self._states[session_id] = (self.clock(), entry[1])
            self._states.move_to_end(session_id)
            return entry[1]

    def put(self, session_id: str, state: SessionState) -> None:
        with self._lock:
            self._drop(session_id)
            self._states[session_id] = (self.clock(), state)
            self._bytes += state_bytes(state)
            over = (lambda: self._bytes > self.max_bytes) if self.max_bytes is not None else (lambda: False)
            while len(self._states) > self.max_sessions or (len(self._states) > 1 and over()):
                self._drop(next(iter(self._states)))  # the least recently used

    def pop(self, session_id: str) -> bool:
        """Forget a session; whether it was there."""
        with self._lock:
            return self._drop(session_id)

    def _drop(self, session_id: str) -> bool:
        entry = self._states.pop(session_id, None)
        if entry is not None:
            self._bytes -= state_bytes(entry[1])
        return entry is not None

    def _expire(self) -> None:
        limit = self.clock() - self.ttl
        while self._states:
            oldest, (seen, _) = next(iter(self._states.items()))
            if seen > limit:
                break
            self._drop(oldest)


class RecommendRequest(BaseModel):
    """The body of POST /recommend (and each entry of POST /recommend/batch)."""

    session_id: str = Field(min_length=1, max_length=256)
    item_id: str | int
    k: int = Field(20, ge=1, le=1000, strict=True)  # strict: 2.0, "2", true and Infinity are refused
    exclude_seen: bool = True
    candidates: list[str | int] | None = Field(None, min_length=1, max_length=100_000)

    def click(self) -> Click:
        cands = None if self.candidates is None else [str(c) for c in self.candidates]
        return Click(self.session_id, str(self.item_id), self.k, self.exclude_seen, cands)


class BatchRequest(BaseModel):
    """The body of POST /recommend/batch."""

    requests: list[RecommendRequest] = Field(min_length=1, max_length=1000)


def _error(err: Exception) -> tuple[int, Any]:
    """(status, detail) of a click that failed."""
    if isinstance(err, UnknownItemError):
        return 404, {"error": str(err), "item_id": str(err.item_id)}
    return 500, {"error": f"internal error ({type(err).__name__})"}


def _json_safe(value: Any) -> Any:
    """`value` (jsonable_encoder's output) with every non-finite float as its text ("inf", "nan"): a
    malformed body may hold any of them (Infinity, NaN, 1e400) and JSON has no such number."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


async def _invalid_request(request: Request, err: RequestValidationError) -> Any:
    """422 {"detail": [pydantic's errors]}, as FastAPI's own handler, whatever the body held."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": _json_safe(jsonable_encoder(err.errors()))}, status_code=422)


def _json(body: dict[str, Any]) -> Any:
    """A JSON response of plain str / float / int values, without FastAPI's per-value encoder walk."""
    from fastapi.responses import Response

    return Response(json.dumps(body), media_type="application/json")


def create_app(
    recommender: Recommender, cache: SessionCache | None = None, api_key: str | None = None,
    max_batch: int = 64, batch_wait: float = 0.0, max_body_bytes: int = 1 << 20,
) -> Any:
    """The FastAPI application serving `recommender` (see the module docstring).

    Args:
        api_key: required in the `X-API-Key` header of every endpoint but /health (None: no key).
        max_batch, batch_wait: the `MicroBatcher`'s batch size and wait for more requests (seconds).
        max_body_bytes: larger request bodies are answered 413.
    """
    cache = cache if cache is not None else SessionCache()
    metrics = Metrics(lambda: len(cache))
    batcher = MicroBatcher(recommender, cache, max_batch, batch_wait, on_batch=metrics.batch_size.observe)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop()  # after uvicorn has answered the requests in flight

    def check_key(x_api_key: str | None = Header(None)) -> None:
        if api_key is not None and (x_api_key is None or not secrets.compare_digest(x_api_key, api_key)):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    app = FastAPI(title="sessrec", summary="session-based next-item recommendations", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    keyed = [Depends(check_key)]

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "n_items": recommender.n_items, "sessions": len(cache),
                "cache_mb": round(cache.bytes / 2**20, 3)}

    @app.get("/metrics", dependencies=keyed)
    def prometheus() -> Any:
        return metrics.response()

    @app.post("/recommend", dependencies=keyed)
    async def recommend(request: RecommendRequest) -> dict[str, Any]:
        (answer,) = await batcher.submit([request.click()])
        if isinstance(answer, Exception):
            raise HTTPException(*_error(answer))
        return _json(answer)

    @app.post("/recommend/batch", dependencies=keyed)
    async def recommend_batch(batch: BatchRequest) -> dict[str, Any]:
        answers = await batcher.submit([r.click() for r in batch.requests])
        results = [dict(zip(("status", "detail"), _error(a))) if isinstance(a, Exception) else a for a in answers]
        return _json({"results": results})

    @app.delete("/sessions/{session_id}", dependencies=keyed)
    def reset(session_id: str) -> dict[str, Any]:
        return {"session_id": session_id, "deleted": cache.pop(session_id)}

    return metrics.wrap(BodyLimit(app, max_body_bytes))


def serve(
    export_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
    max_sessions: int = 100_000, ttl: float = 1800.0, threads: int = 1, api_key: str | None = None,
    max_batch: int = 64, batch_wait_ms: float = 0.0, max_body_bytes: int = 1 << 20, max_bytes: int | None = None,
) -> None:
    """Load an export folder and serve it with uvicorn until interrupted (Ctrl-C / SIGTERM: requests in
    flight are answered first). `api_key` None: the SESSREC_API_KEY environment variable, if set."""
    import uvicorn

    torch.set_num_threads(threads)
    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    recommender = Recommender.load(export_dir)
    recommender.screen_workers = threads
    app = create_app(recommender, SessionCache(max_sessions, ttl, max_bytes), api_key, max_batch, batch_wait_ms / 1000,
                     max_body_bytes)
    log.info("serving %s (%d items) on http://%s:%d", export_dir, recommender.n_items, host, port)
    # uvicorn answers the requests in flight on SIGTERM / Ctrl-C, then raises the signal again against
    # the handlers it found: these no-op ones make that the normal end of the command (exit status 0)
    stopped = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
    finally:
        for sig, handler in stopped.items():
            signal.signal(sig, handler)
    log.info("stopped serving %s", export_dir)
