"""HTTP server on FastAPI + uvicorn: one click in, the session's next items out (docs/serving.md).

- POST /recommend {session_id, item_id, k=20, exclude_seen=true} -> {session_id, items: [{item_id,
  score}], n_seen}: feeds `item_id` to the session's stored state (a new session when there is none)
  and answers `Recommender.top_k`: the same code and scores as the offline `Recommender.recommend`.
- DELETE /sessions/{session_id}: forget a session (a later click starts a new one).
- GET /health: {status, n_items, sessions}.

Errors are JSON `{"detail": ...}`: 422 for a malformed body (FastAPI's validation: missing fields,
wrong types, k out of range), 404 naming an unknown item id (the session's state is left as it was).

Session states live in a `SessionCache`: at most `max_sessions`, least recently used dropped first, and
each dropped `ttl` seconds after its last request. A state is a few KB (the hidden state, the seen
items, one output vector), so 100,000 sessions of a 100-unit GRU4Rec take tens of MB.

Requests run one at a time under a lock (torch with one thread per step); batching concurrent
requests is not implemented yet.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from sessrec.serving.recommender import Recommender, SessionState, UnknownItemError

log = logging.getLogger("sessrec")


class SessionCache:
    """Bounded LRU of session states with a time-to-live, safe across threads.

    Args:
        max_sessions: most states kept; the least recently used is dropped first.
        ttl: seconds a state is kept after its last `get` or `put`.
        clock: the time source (tests pass a fake one).
    """

    def __init__(self, max_sessions: int = 100_000, ttl: float = 1800.0, clock=time.monotonic) -> None:
        if max_sessions < 1 or ttl <= 0:
            raise ValueError(f"max_sessions must be >= 1 and ttl > 0, got {max_sessions}, {ttl}")
        self.max_sessions, self.ttl, self.clock = max_sessions, ttl, clock
        self._states: OrderedDict[str, tuple[float, SessionState]] = OrderedDict()
        self._lock = threading.Lock()

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
            self._states[session_id] = (self.clock(), state)
            self._states.move_to_end(session_id)
            while len(self._states) > self.max_sessions:
                self._states.popitem(last=False)

    def pop(self, session_id: str) -> bool:
        """Forget a session; whether it was there."""
        with self._lock:
            return self._states.pop(session_id, None) is not None

    def _expire(self) -> None:
        limit = self.clock() - self.ttl
        while self._states:
            oldest, (seen, _) = next(iter(self._states.items()))
            if seen > limit:
                break
            del self._states[oldest]


class RecommendRequest(BaseModel):
    """The body of POST /recommend."""

    session_id: str = Field(min_length=1, max_length=256)
    item_id: str | int
    k: int = Field(20, ge=1, le=1000)
    exclude_seen: bool = True


def create_app(recommender: Recommender, cache: SessionCache | None = None) -> Any:
    """The FastAPI application serving `recommender` (see the module docstring)."""
    cache = cache if cache is not None else SessionCache()
    step_lock = threading.Lock()
    app = FastAPI(title="sessrec", summary="session-based next-item recommendations")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "n_items": recommender.n_items, "sessions": len(cache)}

    @app.post("/recommend")
    def recommend(request: RecommendRequest) -> dict[str, Any]:
        with step_lock:  # one session's clicks in order, and one torch computation at a time
            try:
                state = recommender.step(cache.get(request.session_id), request.item_id)
            except UnknownItemError as err:
                raise HTTPException(404, {"error": str(err), "item_id": str(request.item_id)}) from None
            cache.put(request.session_id, state)
            top = recommender.top_k(state, request.k, request.exclude_seen)
        items = [{"item_id": item_id, "score": score} for item_id, score in top]
        return {"session_id": request.session_id, "items": items, "n_seen": len(state.items)}

    @app.delete("/sessions/{session_id}")
    def reset(session_id: str) -> dict[str, Any]:
        return {"session_id": session_id, "deleted": cache.pop(session_id)}

    return app


def serve(
    export_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
    max_sessions: int = 100_000, ttl: float = 1800.0, threads: int = 1,
) -> None:
    """Load an export folder and serve it with uvicorn until interrupted (Ctrl-C / SIGTERM)."""
    import uvicorn

    torch.set_num_threads(threads)
    recommender = Recommender.load(export_dir)
    app = create_app(recommender, SessionCache(max_sessions, ttl))
    log.info("serving %s (%d items) on http://%s:%d", export_dir, recommender.n_items, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
