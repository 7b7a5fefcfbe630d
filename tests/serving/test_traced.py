"""The TorchScript serving step: used where it reproduces the eager step, refused where it does not."""

from __future__ import annotations

import pytest
import torch

from sessrec.models.gru4rec import GRU4Rec
from sessrec.serving import Recommender
from sessrec.serving.traced import traced_query


@pytest.mark.parametrize("name", ["gru4rec", "prnn"])
def test_traced_step_gives_the_eager_lists(name, exported, monkeypatch):
    traced = Recommender.load(exported[name])
    assert traced._query is not None  # traced (a failed check would fall back to the eager step)
    monkeypatch.setenv("SESSREC_TRACE", "0")
    eager = Recommender.load(exported[name])
    assert eager._query is None
    ids = traced.item_ids
    for session in ([ids[0]], [ids[3], ids[1], ids[4]], [ids[7], ids[7], ids[2]]):
        got, want = traced.recommend(session, k=10), eager.recommend(session, k=10)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-5, abs=1e-6)
    states = [traced.step(None, ids[i]) for i in (1, 2, 5)]  # several sessions in one batch
    many = traced.step_many(states, [ids[6], ids[8], ids[9]])
    one = [traced.step(s, ids[i]) for s, i in zip(states, (6, 8, 9))]
    for a, b in zip(many, one):
        torch.testing.assert_close(a.query, b.query, rtol=1e-5, atol=1e-6)


class BakesTheBatch(GRU4Rec):
    """A query whose output depends on a Python int read from the batch: a trace freezes it."""

    def query(self, inputs, hidden):
        out, new_hidden = super().query(inputs, hidden)
        return out + float(inputs.shape[0]), new_hidden


def test_a_trace_that_bakes_a_shape_is_refused():
    assert traced_query(GRU4Rec(20, [6]).eval(), torch.device("cpu")) is not None
    assert traced_query(BakesTheBatch(20, [6]).eval(), torch.device("cpu")) is None
