"""`sessrec serve`: the real server in a subprocess, queried over HTTP; and the session cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from sessrec.serving import Recommender
from sessrec.serving.server import SessionCache


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(url: str, body: bytes | dict | None = None, method: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def server(exported):
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "sessrec", "serve", str(exported["gru4rec"]), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if _call(f"{url}/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
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


def test_session_cache_drops_the_least_recent_and_the_expired():
    now = [0.0]
    cache = SessionCache(max_sessions=2, ttl=10.0, clock=lambda: now[0])
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C")
    assert (cache.get("b"), cache.get("a"), cache.get("c")) == (None, "A", "C")
    now[0] = 9.0
    assert cache.get("a") == "A"
    now[0] = 15.0  # c last used at 0: expired; a at 9: kept
    assert (cache.get("c"), cache.get("a"), len(cache)) == (None, "A", 1)
