"""`sessrec serve`'s request validation, in process (no model: a malformed body never reaches it)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sessrec.serving.server import create_app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """A body that passed validation would reach the batcher, whose recommender (None) fails: a 500."""
    with TestClient(create_app(recommender=None), raise_server_exceptions=False) as client:
        yield client


def _post(client: TestClient, path: str, body: str) -> tuple[int, dict]:
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    return response.status_code, response.json()


@pytest.mark.parametrize("k", ["Infinity", "-Infinity", "NaN", "1e400", "2.0", "\"3\"", "true", "0", "1001"])
def test_a_bad_k_is_422_naming_k(client: TestClient, k: str) -> None:
    status, body = _post(client, "/recommend", f'{{"session_id": "u1", "item_id": "1", "k": {k}}}')
    assert status == 422, body
    assert [e["loc"] for e in body["detail"]] == [["body", "k"]]
    json.dumps(body, allow_nan=False)  # strict JSON: no Infinity / NaN in the answer


def test_non_finite_values_in_a_batch_are_422(client: TestClient) -> None:
    body = '{"requests": [{"session_id": "u1", "item_id": NaN, "k": Infinity, "candidates": [1e400]}]}'
    status, answer = _post(client, "/recommend/batch", body)
    assert status == 422, answer
    locs = {tuple(e["loc"][-2:]) for e in answer["detail"]}
    assert (0, "k") in locs and answer["detail"][0]["msg"]
    assert "Infinity" not in json.dumps(answer) and "inf" in json.dumps(answer)
