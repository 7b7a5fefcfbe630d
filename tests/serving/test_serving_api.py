"""`Recommender` and `sessrec export`: the same lists as the Lightning model, from a checkpoint or an export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sessrec.evaluation.analysis import load_run, recommend
from sessrec.cli import main
from sessrec.serving import Recommender, UnknownItemError
from sessrec.serving.artefact import MANIFEST, WEIGHTS

NAMES = ("gru4rec", "prnn")


def _sessions(datamodule, n: int = 6, length: int = 4) -> list[np.ndarray]:
    test = datamodule.split("test")
    return [test.items[test.offsets[s] : test.offsets[s + 1]][:length] for s in range(n)]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_and_export_give_the_lightning_models_lists(name, trained, exported):
    config, ckpt = trained[name]
    module, datamodule = load_run(config, ckpt)
    ids = np.asarray(datamodule.item_ids).astype(str)
    n_items = len(ids)
    recommenders = [Recommender.from_checkpoint(ckpt, config), Recommender.load(exported[name])]
    for items in _sessions(datamodule):
        want, want_scores = recommend(module, items, k=n_items)  # every item, best first
        raw = ids[items].tolist()
        for rec in recommenders:
            got = rec.recommend(raw, k=10, exclude_seen=False)
            assert [i for i, _ in got] == ids[want[:10]].tolist()
            np.testing.assert_array_equal(np.float32([s for _, s in got]), want_scores[:10])
            unseen = [i for i in ids[want].tolist() if i not in set(raw)]
            assert [i for i, _ in rec.recommend(raw, k=10)] == unseen[:10]  # exclude_seen=True


@pytest.mark.parametrize("name", NAMES)
def test_step_by_step_equals_recommend(name, exported):
    rec = Recommender.load(exported[name])
    clicks = rec.item_ids[[3, 7, 3, 11]].tolist()
    state = None
    for t, item in enumerate(clicks):
        state = rec.step(state, item)
        assert rec.top_k(state, k=5) == rec.recommend(clicks[: t + 1], k=5)
    assert len(rec.recommend(clicks, k=10_000)) == rec.n_items - 3  # three distinct items excluded


def test_unknown_item_is_one_error_naming_it(exported):
    rec = Recommender.load(exported["prnn"])
    state = rec.step(None, rec.item_ids[0])
    with pytest.raises(UnknownItemError, match="unknown item id 'no-such-item'"):
        rec.step(state, "no-such-item")
    with pytest.raises(UnknownItemError, match="'42x'"):
        rec.recommend([rec.item_ids[0], "42x"])
    with pytest.raises(ValueError, match="no items"):
        rec.recommend([])


def test_export_is_self_contained(exported, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    shutil.copytree(exported["prnn"], moved)
    monkeypatch.chdir(tmp_path)
    manifest = json.loads((moved / MANIFEST).read_text())
    assert manifest["n_items"] == Recommender.load(moved).n_items
    assert manifest["versions"]["torch"] == torch.__version__
    features = [e["init_args"]["path"] for e in manifest["net"]["init_args"]["encoders"].values()
                if "path" in e["init_args"]]
    assert len(features) == 3 and all(p.startswith("features/") for p in features)
    weights = torch.load(moved / WEIGHTS, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    clicks = Recommender.load(exported["prnn"]).item_ids[:3].tolist()
    assert Recommender.load(moved).recommend(clicks) == Recommender.load(exported["prnn"]).recommend(clicks)


def test_export_refuses_an_output_inside_its_inputs(trained, small, capsys):
    config, ckpt = trained["gru4rec"]
    for out in (small / "prepared" / "export", ckpt.parent):
        with pytest.raises(SystemExit) as stop:
            main(["export", "--ckpt_path", str(ckpt), "--config", str(config), "--out", str(out)])
        assert stop.value.code == 2
        assert "sessrec: error: --out" in capsys.readouterr().err
    assert not (small / "prepared" / "export").exists()


def test_export_replaces_only_a_previous_export(trained, tmp_path, capsys):
    config, ckpt = trained["gru4rec"]
    notes = tmp_path / "mine" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("important")
    args = ["export", "--ckpt_path", str(ckpt), "--config", str(config), "--out"]
    with pytest.raises(SystemExit) as stop:
        main([*args, str(notes.parent)])
    assert stop.value.code == 2
    assert "not a sessrec export" in capsys.readouterr().err
    assert notes.read_text() == "important"
    for _ in range(2):  # a new folder, then the same folder again: an export replaces an export
        with pytest.raises(SystemExit) as stop:
            main([*args, str(tmp_path / "export")])
        assert stop.value.code in (0, None)
    assert (tmp_path / "export" / "manifest.json").is_file()


def test_a_tampered_export_is_refused_at_load(exported, tmp_path):
    from sessrec.errors import DataError
    from sessrec.serving.artefact import read_export

    nan = shutil.copytree(exported["gru4rec"], tmp_path / "nan")
    weights = torch.load(nan / WEIGHTS, weights_only=True)
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name].view(-1)[0] = float("nan")
    torch.save(weights, nan / WEIGHTS)
    with pytest.raises(DataError, match=f"non-finite values .* in {name}"):
        read_export(nan)
    dup = shutil.copytree(exported["gru4rec"], tmp_path / "dup")
    ids = json.loads((dup / "items.json").read_text())
    (dup / "items.json").write_text(json.dumps([ids[0], *ids[:-1]]))
    with pytest.raises(DataError, match="duplicate item ids"):
        read_export(dup)
