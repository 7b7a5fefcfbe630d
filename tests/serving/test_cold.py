"""Items outside the trained catalogue as p-RNN session inputs, from their features (sessrec.serving.cold)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sessrec.encoders import Catalogue, ConcatEncoder, DenseEncoder, PropertyEncoder, SparseTextEncoder
from sessrec.serving import Recommender, UnknownItemError
from sessrec.features.store import file_item_ids

from test_serving_http import _call, _start


def _encoders() -> dict[str, object]:
    return {
        "dense": DenseEncoder("image.npy", projection=3, normalize=True),
        "text": SparseTextEncoder("text.npz", dim=4),
        "buckets": PropertyEncoder("items.parquet", numeric=["price"], categorical=["brand"], n_buckets=4),
        "standardize": PropertyEncoder("items.parquet", numeric=["price"], numeric_mode="standardize"),
        "concat": ConcatEncoder([DenseEncoder("image.npy"), PropertyEncoder("items.parquet", categorical=["brand"])]),
    }


@pytest.mark.parametrize("name", list(_encoders()))
def test_extended_items_encode_as_the_bound_ones(small, name):
    """Catalogue items added again after the catalogue encode exactly as bound (the same statistics and
    codes: what a new item with the same features gets); an id in no file has no features."""
    raw = small / "raw"
    ids = np.asarray(sorted(file_item_ids(raw / "items.parquet")), dtype=object)[:40]
    torch.manual_seed(0)
    encoder = _encoders()[name]
    encoder.bind(Catalogue(ids, raw))
    again = np.array([ids[3], ids[0], ids[17], "not-in-any-file"], dtype=object)
    mask = encoder.extend(Catalogue(ids, raw), again)
    assert mask.tolist()[:3] == [True] * 3 and mask.tolist()[3] is False
    with torch.no_grad():
        got = encoder(torch.arange(40, 43))  # the new indices N..N+2
        want = encoder(torch.tensor([3, 0, 17]))
    torch.testing.assert_close(got, want)


def test_a_prnn_takes_new_items_as_inputs_and_never_recommends_them(exported, small):
    rec = Recommender.load(exported["prnn"])
    in_files = set(file_item_ids(small / "raw" / "items.parquet"))
    outside = sorted(in_files - set(rec.item_ids))
    assert outside and set(rec.cold) == set(outside)  # every item of the files outside the catalogue
    known = rec.item_ids[4]
    cold = outside[0]
    with_cold = rec.recommend([known, cold], k=10)
    assert len(with_cold) == 10 and not {i for i, _ in with_cold} & set(outside)
    assert with_cold != rec.recommend([known], k=10)  # the click on the new item changed the session
    assert rec.recommend([cold], k=5) == rec.recommend([cold], k=5)
    with pytest.raises(UnknownItemError, match="nope"):
        rec.recommend([known, "nope"])
    with pytest.raises(UnknownItemError, match=cold):  # a new item cannot be ranked as a candidate
        rec.recommend([known], candidates=[cold, known])


def test_models_without_features_keep_unknown_ids_unknown(exported, small, monkeypatch):
    outside = sorted(set(file_item_ids(small / "raw" / "items.parquet")) - set(Recommender.load(exported["prnn"]).item_ids))
    gru4rec = Recommender.load(exported["gru4rec"])
    assert gru4rec.cold == {}
    with pytest.raises(UnknownItemError):
        gru4rec.recommend([outside[0]])
    monkeypatch.setenv("SESSREC_COLD", "0")
    assert Recommender.load(exported["prnn"]).cold == {}


def test_the_server_answers_a_click_on_a_new_item(exported, small):
    outside = sorted(set(file_item_ids(small / "raw" / "items.parquet")) - set(Recommender.load(exported["prnn"]).item_ids))
    proc, url = _start(exported["prnn"])
    try:
        status, body = _call(f"{url}/recommend", {"session_id": "s", "item_id": outside[0], "k": 5})
        assert status == 200 and len(body["items"]) == 5 and body["n_seen"] == 1
        assert _call(f"{url}/recommend", {"session_id": "s", "item_id": "nope"})[0] == 404
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_weighted_fusion_and_a_shared_id_embedding(small):
    """The ID subnet reads the output table (zero input rows for new items); weighted fusion scores
    through `forward`: only the catalogue's items are ranked."""
    from sessrec.encoders import ItemIdEncoder
    from sessrec.models.prnn import ParallelRNN

    raw = small / "raw"
    every = np.asarray(sorted(file_item_ids(raw / "items.parquet")), dtype=object)
    ids = every[:40]
    spec = {"class_path": "sessrec.models.prnn.ParallelRNN",
            "init_args": {"encoders": {"image": {"class_path": "sessrec.encoders.DenseEncoder",
                                                 "init_args": {"path": "image.npy"}}}}}
    torch.manual_seed(0)
    net = ParallelRNN(40, {"id": ItemIdEncoder(6, shared_with_output=True), "image": DenseEncoder("image.npy")},
                      [6], fusion="weighted", catalogue=Catalogue(ids, raw))
    rec = Recommender(net, ids, spec=spec, catalogue=Catalogue(ids, raw))
    assert set(rec.cold) == set(every[40:].tolist())
    got = rec.recommend([ids[2], every[50]], k=40)
    assert sorted(i for i, _ in got) == sorted(set(ids.tolist()) - {ids[2]})  # every other catalogue item
