"""`sessrec serve`: the real server in a subprocess, queried over HTTP; and the session cache."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from sessrec.serving import Recommender
import torch

from sessrec.serving.recommender import SessionState
from sessrec.serving.server import SessionCache, state_bytes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(
    url: str, body: bytes | dict | None = None, method: str | None = None, headers: dict | None = None
) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if "json" in response.headers["Content-Type"] else text
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _items(body: dict) -> list[tuple[str, float]]:
    return [(e["item_id"], e["score"]) for e in body["items"]]


def _same(got: dict, want: list[tuple[str, float]]) -> bool:
    """The answer's list is `want`: the same ids, scores equal up to float rounding (a batch of several
    rows runs other BLAS kernels than one row)."""
    ids, scores = zip(*_items(got)) if got["items"] else ((), ())
    return list(ids) == [i for i, _ in want] and scores == pytest.approx([s for _, s in want], rel=1e-5)


def _start(export_dir, *options: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`sessrec serve` in a subprocess on a free port, once /health answers: (process, base url)."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    command = [sys.executable, "-m", "sessrec", "serve", str(export_dir), "--port", str(port), *options]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if _call(f"{url}/health")[0] == 200:
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start")


@pytest.fixture
def server(exported):
    proc, url = _start(exported["gru4rec"])
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_two_clicks_equal_the_offline_recommendation_and_bad_requests_get_4xx(server, exported):
    rec = Recommender.load(exported["gru4rec"])
    a, b, c = rec.item_ids[[5, 9, 2]].tolist()
    answers = []
    for item in (a, b):
        status, body = _call(f"{server}/recommend", {"session_id": "s1", "item_id": item, "k": 5})
        assert status == 200
        answers.append([(e["item_id"], e["score"]) for e in body["items"]])
    assert answers == [rec.recommend([a], k=5), rec.recommend([a, b], k=5)]

    assert _call(f"{server}/recommend", b"{not json")[0] == 422
    assert _call(f"{server}/recommend", {"session_id": "s1"})[0] == 422  # no item_id
    assert _call(f"{server}/recommend", {"session_id": "s1", "item_id": a, "k": 0})[0] == 422
    status, body = _call(f"{server}/recommend", {"session_id": "s1", "item_id": "no-such-item"})
    assert status == 404 and "no-such-item" in json.dumps(body)

    status, body = _call(f"{server}/recommend", {"session_id": "s1", "item_id": c, "k": 5, "exclude_seen": False})
    assert status == 200 and body["n_seen"] == 3  # the failed requests left the session as it was
    assert [(e["item_id"], e["score"]) for e in body["items"]] == rec.recommend([a, b, c], k=5, exclude_seen=False)
    assert _call(f"{server}/sessions/s1", method="DELETE") == (200, {"session_id": "s1", "deleted": True})
    status, body = _call(f"{server}/recommend", {"session_id": "s1", "item_id": c, "k": 5})
    assert body["n_seen"] == 1 and [(e["item_id"], e["score"]) for e in body["items"]] == rec.recommend([c], k=5)
    assert _call(f"{server}/health")[1]["sessions"] == 1


def _state(n_items: int = 1, width: int = 8) -> SessionState:
    return SessionState(hidden=(torch.zeros(1, width),), items=tuple(range(n_items)), query=torch.zeros(1, width))


def test_session_cache_drops_the_least_recent_and_the_expired():
    now = [0.0]
    cache = SessionCache(max_sessions=2, ttl=10.0, clock=lambda: now[0])
    A, B, C = _state(), _state(), _state()
    cache.put("a", A)
    cache.put("b", B)
    assert cache.get("a") is A  # a is now the most recent
    cache.put("c", C)
    assert (cache.get("b"), cache.get("a"), cache.get("c")) == (None, A, C)
    now[0] = 9.0
    assert cache.get("a") is A
    now[0] = 15.0  # c last used at 0: expired; a at 9: kept
    assert (cache.get("c"), cache.get("a"), len(cache)) == (None, A, 1)
    assert cache.bytes == state_bytes(A)


def test_session_cache_byte_cap():
    one = state_bytes(_state(3))  # 2 x (32 data + 256) + 24 + 200
    assert one == 2 * (32 + 256) + 3 * 8 + 200
    cache = SessionCache(max_sessions=100, max_bytes=3 * one)
    for name in "abcd":
        cache.put(name, _state(3))
    assert [cache.get(n) is not None for n in "abcd"] == [False, True, True, True] and cache.bytes == 3 * one
    cache.put("b", _state(3))  # replacing a state counts it once
    assert len(cache) == 3 and cache.bytes == 3 * one
    cache.put("big", _state(3, width=1000))  # alone above the cap: kept, the others dropped
    assert len(cache) == 1 and cache.get("big") is not None
    assert cache.pop("big") and cache.bytes == 0
    with pytest.raises(ValueError, match="max_bytes"):
        SessionCache(max_bytes=0)


def test_batch_endpoint_candidates_and_concurrent_sessions(server, exported):
    rec = Recommender.load(exported["gru4rec"])
    a, b, c, d = rec.item_ids[[5, 9, 2, 4]].tolist()
    batch = [{"session_id": "x", "item_id": a, "k": 3}, {"session_id": "y", "item_id": c, "k": 4},
             {"session_id": "x", "item_id": b, "k": 3}, {"session_id": "y", "item_id": "nope"},
             {"session_id": "z", "item_id": d, "k": 2, "candidates": [a, b, c, c]}]
    status, body = _call(f"{server}/recommend/batch", {"requests": batch})
    assert status == 200
    x1, y1, x2, bad, z1 = body["results"]
    assert _same(x1, rec.recommend([a], k=3)) and _same(x2, rec.recommend([a, b], k=3))
    assert _same(y1, rec.recommend([c], k=4)) and y1["n_seen"] == 1  # the unknown id left y as it was
    assert bad["status"] == 404 and bad["detail"]["item_id"] == "nope"
    assert _same(z1, rec.recommend([d], k=2, candidates=[a, b, c]))
    assert {i for i, _ in _items(z1)} <= {a, b, c}
    status, body = _call(f"{server}/recommend", {"session_id": "z", "item_id": d, "candidates": ["nope"]})
    assert status == 404 and body["detail"]["item_id"] == "nope"
    assert _call(f"{server}/recommend/batch", {"requests": []})[0] == 422

    clicks = {f"s{n}": rec.item_ids[[n, n + 1, n + 2]].tolist() for n in range(16)}

    def session(sid: str) -> list[list[str]]:
        return [[i for i, _ in _items(_call(f"{server}/recommend", {"session_id": sid, "item_id": item, "k": 5})[1])]
                for item in clicks[sid]]

    with ThreadPoolExecutor(16) as pool:  # batched together in the server: same lists (up to rounding ties)
        got = dict(zip(clicks, pool.map(session, clicks)))
    for sid, items in clicks.items():
        assert got[sid] == [[i for i, _ in rec.recommend(items[: t + 1], k=5)] for t in range(3)], sid
    text = _call(f"{server}/metrics")[1]
    assert 'sessrec_requests_total{endpoint="/recommend",status="200"} 48.0' in text
    assert 'sessrec_requests_total{endpoint="/recommend",status="404"} 1.0' in text
    assert "sessrec_request_seconds_bucket" in text and "sessrec_batch_size_count" in text
    assert "sessrec_sessions 19.0" in text


def test_api_key_body_limit_and_graceful_shutdown(exported):
    proc, url = _start(exported["gru4rec"], "--max_body_bytes", "2000", env={"SESSREC_API_KEY": "s3cret"})
    try:
        item = Recommender.load(exported["gru4rec"]).item_ids[0]
        click = {"session_id": "s", "item_id": item}
        assert _call(f"{url}/recommend", click)[0] == 401
        assert _call(f"{url}/recommend", click, headers={"X-API-Key": "wrong"})[0] == 401
        assert _call(f"{url}/metrics")[0] == 401
        assert _call(f"{url}/health")[0] == 200  # left open for probes
        key = {"X-API-Key": "s3cret"}
        assert _call(f"{url}/recommend", click, headers=key)[0] == 200
        big = {**click, "candidates": [str(i) for i in range(1000)]}
        status, body = _call(f"{url}/recommend", big, headers=key)
        assert status == 413 and "2000 bytes" in body["detail"]
        assert _call(f"{url}/recommend", click, headers=key)[1]["n_seen"] == 2  # still serving
        assert 'status="413"} 1.0' in _call(f"{url}/metrics", headers=key)[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_bad_cache_options_are_one_line_errors(exported):
    for option, value, rule in (("--max_cache_mb", "0", "> 0"), ("--max_sessions", "-1", "> 0"),
                                ("--threads", "0", "> 0"), ("--batch_wait_ms", "nan", ">= 0"),
                                ("--port", "70000", "0-65535")):
        done = subprocess.run([sys.executable, "-m", "sessrec", "serve", str(exported["gru4rec"]), option, value],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and f"{option}: must be {rule}" in done.stderr, done.stderr[-500:]
