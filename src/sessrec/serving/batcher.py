"""Micro-batching: concurrent requests stepped through the network as one batch (one worker thread).

The server's handlers put each request on a queue and await its answer. One worker thread takes the
first request, everything else already queued (what arrived while the previous batch ran), and
whatever arrives within `max_wait` seconds of the first (default 0: no wait; at most `max_batch`), then answers them with one `Recommender.step_many` and one
`Recommender.top_k_many`: one product of the (B, D) queries with the item table instead of B products
with one row each. The table is read from memory once per batch, which is what a large catalogue's
latency is made of (docs/benchmarks.md, "Serving latency").

A session's clicks stay in arrival order: a batch holding two clicks of one session is run in rounds,
each with at most one click per session. The worker is also the only code that touches the network
and the session cache's states, so no lock is needed around torch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sessrec.serving.recommender import Recommender, UnknownItemError

log = logging.getLogger("sessrec")


@dataclass
class Click:
    """One request: a click of a session and what to answer."""

    session_id: str
    item_id: str
    k: int = 20
    exclude_seen: bool = True
    candidates: list[str] | None = None


Answer = dict[str, Any]  # {"session_id", "items": [{"item_id", "score"}], "n_seen"}


class MicroBatcher:
    """Runs `Click`s for awaiting handlers in batches on one worker thread (see the module docstring).

    Args:
        recommender: the model.
        cache: the session states (`get(session_id)`, `put(session_id, state)`).
        max_batch: most clicks in one batch.
        max_wait: seconds the worker waits for more clicks after the first of a batch (0: takes only
            what is already queued).
        on_batch: called with each batch's size (metrics).
    """

    def __init__(
        self, recommender: Recommender, cache: Any, max_batch: int = 64, max_wait: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch}, {max_wait}")
        self.recommender, self.cache = recommender, cache
        self.max_batch, self.max_wait, self.on_batch = max_batch, max_wait, on_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sessrec-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Answer what is queued, then end the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    async def submit(self, clicks: list[Click]) -> list[Answer | Exception]:
        """Answers of `clicks` (in order: clicks of one session are applied in this order); an
        `UnknownItemError` in place of the answer of a click naming an unknown id."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in clicks]
        for click, future in zip(clicks, futures):
            self._queue.put((click, future, loop))
        return list(await asyncio.gather(*futures, return_exceptions=True))

    # ---- the worker thread ----------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    timeout = deadline - time.monotonic()
                    entry = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stopping = True
                    break
                batch.append(entry)
            try:
                if self.on_batch is not None:
                    self.on_batch(len(batch))
                while batch:  # rounds: at most one click per session, the session's earliest first
                    taken: set[str] = set()
                    round_, rest = [], []
                    for entry in batch:
                        (round_ if entry[0].session_id not in taken else rest).append(entry)
                        taken.add(entry[0].session_id)
                    self._answer(round_)
                    batch = rest
            except Exception as err:  # noqa: BLE001 - the worker keeps serving; these clicks fail
                log.exception("batch of %d clicks failed", len(batch))
                for _, future, loop in batch:  # answered ones are done already: _resolve skips them
                    loop.call_soon_threadsafe(_resolve, future, err)

    def _answer(self, entries: list[tuple[Click, asyncio.Future, asyncio.AbstractEventLoop]]) -> None:
        rec, results = self.recommender, {}
        valid = []
        for n, (click, _, _) in enumerate(entries):
            try:  # every id of a click checked before its session changes
                rec.item_index(click.item_id)
                cands = None if click.candidates is None else rec.item_indices(click.candidates)
                valid.append((n, click, cands))
            except UnknownItemError as err:
                results[n] = err
        try:
            if valid:
                states = rec.step_many([self.cache.get(c.session_id) for _, c, _ in valid],
                                       [c.item_id for _, c, _ in valid])
                tops = rec.top_k_many(states, [c.k for _, c, _ in valid], [c.exclude_seen for _, c, _ in valid],
                                      [cands for _, _, cands in valid])
                for (n, click, _), state, top in zip(valid, states, tops):
                    self.cache.put(click.session_id, state)
                    items = [{"item_id": item_id, "score": score} for item_id, score in top]
                    results[n] = {"session_id": click.session_id, "items": items, "n_seen": len(state.items)}
        except Exception as err:  # noqa: BLE001 - the clicks fail, the server keeps serving
            log.exception("batch of %d clicks failed", len(valid))
            for n, _, _ in valid:
                results.setdefault(n, err)
        for n, (_, future, loop) in enumerate(entries):
            loop.call_soon_threadsafe(_resolve, future, results[n])


def _resolve(future: asyncio.Future, result: Answer | Exception) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
