"""`predict`: top-k recommendations after each session's last event (sentinel iterator + TopKWriter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sessrec.cli import main
from sessrec.data.batching import SessionParallelIterator
from sessrec.data.prepared import PreparedData, Split
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule
from sessrec.data.batching import with_sentinels
from sessrec.evaluation.predict import topk_frame


def _split(sessions: list[list[int]]) -> Split:
    lengths = [len(s) for s in sessions]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.array([i for s in sessions for i in s], dtype=np.int64)
    return Split(items, offsets, np.zeros(items.size))


def test_sentinel_arrays_by_hand():
    items, offsets = with_sentinels(_split([[3, 1, 4], [1], [5, 9]]))
    assert items.tolist() == [3, 1, 4, -1, 1, -2, 5, 9, -3]
    assert offsets.tolist() == [0, 4, 6, 9]


def test_sentinel_targets_mark_each_sessions_last_event():
    items, offsets = with_sentinels(_split([[3, 1, 4], [1], [5, 9]]))
    blocks = list(SessionParallelIterator(items, offsets, batch_size=2, steps_per_block=2))
    fed_last = {}
    for block in blocks:
        for t, b in (block.targets < 0).nonzero().tolist():
            fed_last[-int(block.targets[t, b]) - 1] = int(block.inputs[t, b])
    assert fed_last == {0: 4, 1: 1, 2: 9}  # every session once, after its last event


def test_prediction_equals_stepping_the_session_through_score_step():
    torch.manual_seed(0)
    sessions = [[1, 2, 3, 4], [5], [6, 7], [8, 9, 10, 11, 0, 2], [3, 3, 1]]
    module = SessionRecModule(GRU4Rec(n_items=12, layers=[8]), n_sample=0).eval()
    module.predict_k = 5
    items, offsets = with_sentinels(_split(sessions))
    module.on_predict_epoch_start()
    parts = [module.predict_step(block, i) for i, block in
             enumerate(SessionParallelIterator(items, offsets, batch_size=2, steps_per_block=3))]
    got = {int(s): (i, sc) for p in parts for s, i, sc in zip(*p)}
    assert sorted(got) == list(range(len(sessions)))
    for s, events in enumerate(sessions):
        module._eval_hidden = None
        for pos, item in enumerate(events):
            scores = module.score_step(torch.tensor([item]), torch.tensor([pos == 0]))  # (1, N)
        want_scores, want_items = torch.topk(scores[0], 5)
        assert torch.equal(got[s][0], want_items), s
        torch.testing.assert_close(got[s][1], want_scores, rtol=1e-5, atol=1e-6)


def test_k_above_the_catalogue_gives_every_item_once():
    module = SessionRecModule(GRU4Rec(n_items=3, layers=[4]), n_sample=0).eval()
    module.predict_k = 20
    items, offsets = with_sentinels(_split([[0, 1], [2], [1, 2, 0]]))
    module.on_predict_epoch_start()
    parts = [module.predict_step(b, i) for i, b in enumerate(SessionParallelIterator(items, offsets, 2, 1))]
    frame = topk_frame(parts, np.array(["x", "y", "z"], dtype=object))  # some blocks end no session
    assert frame.groupby("session")["item_id"].apply(sorted).tolist() == [["x", "y", "z"]] * 3


def test_topk_frame_sorts_by_session_and_maps_ids():
    parts = [(torch.tensor([1, 0]), torch.tensor([[2, 0], [1, 2]]), torch.tensor([[3.0, 1.0], [5.0, 4.0]]))]
    frame = topk_frame(parts, np.array(["a", "b", "c"], dtype=object))
    assert frame["session"].tolist() == [0, 0, 1, 1]
    assert frame["rank"].tolist() == [1, 2, 1, 2]
    assert frame["item_id"].tolist() == ["b", "c", "c", "a"]
    assert frame["score"].tolist() == [5.0, 4.0, 3.0, 1.0]


def _check_lists(frame: pd.DataFrame, data: PreparedData, k: int) -> None:
    test = data.split("test")
    assert frame["session"].drop_duplicates().tolist() == list(range(test.n_sessions))
    assert (frame.groupby("session").size() == k).all()
    assert frame["rank"].tolist() == list(range(1, k + 1)) * test.n_sessions
    assert frame["item_id"].astype(str).isin(set(data.item_ids)).all()
    assert not frame.duplicated(["session", "item_id"]).any()
    steps = frame.groupby("session")["score"].diff().dropna()
    assert (steps <= 0).all()
    keys = data.session_keys("test")  # the raw log's session ids, one per prepared session
    assert keys is not None and len(set(keys.tolist())) == test.n_sessions
    assert frame.groupby("session")["session_key"].agg(["first", "nunique"]).values.tolist() == [
        [key, 1] for key in keys.tolist()]


def test_pop_recommends_the_k_most_popular(tiny_prepared, tmp_path, repo_root):
    out = tmp_path / "pop.parquet"
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(repo_root / "configs" / "baselines" / "pop.yaml"),
              "--config", str(repo_root / "configs" / "predict.yaml"), "--data.data_dir", str(tiny_prepared),
              "--trainer.enable_progress_bar", "false",
              "--trainer.callbacks.output", str(out), "--trainer.callbacks.k", "7"])
    assert exit_info.value.code in (0, None)
    frame = pd.read_parquet(out)
    data = PreparedData.load(tiny_prepared)
    _check_lists(frame, data, 7)
    counts = data.counts("train_full")  # pop.yaml trains on train_full
    top = np.sort(counts)[::-1][:7].astype(np.float32)
    index = {item_id: i for i, item_id in enumerate(data.item_ids)}
    for _, recs in frame.groupby("session"):
        assert np.array_equal(recs["score"].to_numpy(), top)  # the k highest counts, in order
        assert np.array_equal(counts[[index[i] for i in recs["item_id"]]], top)  # ... of those items


def test_unwritable_output_is_a_one_line_error(tiny_prepared, tmp_path, repo_root, capsys):
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(repo_root / "configs" / "baselines" / "pop.yaml"),
              "--config", str(repo_root / "configs" / "predict.yaml"), "--data.data_dir", str(tiny_prepared),
              "--trainer.callbacks.output", str(tmp_path / "afile" / "recs.csv")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sessrec: error:") and "afile" in err[-1]
    assert not list(tmp_path.glob("**/*.csv"))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "sessrec", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_fit_then_predict(tiny_prepared, tmp_path, repo_root):
    cfg = str(repo_root / "configs" / "gru4rec" / "synthetic.yaml")
    with pytest.raises(SystemExit) as exit_info:  # in-process: Lightning is already imported here
        main(["fit", "--config", cfg, "--data.data_dir", str(tiny_prepared), "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "2", "--model.init_args.sample_cache_size", "100000",
              "--trainer.callbacks.dirpath", str(tmp_path), "--trainer.default_root_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false"])
    assert exit_info.value.code in (0, None)
    out = tmp_path / "recs.csv"
    predict = _run(["predict", "--config", cfg, "--data.data_dir", str(tiny_prepared),
                    "--ckpt_path", str(tmp_path / "last.ckpt"), "--trainer.enable_progress_bar", "false",
                    "--trainer.callbacks+=sessrec.evaluation.predict.TopKWriter", "--trainer.callbacks.output", str(out),
                    "--trainer.callbacks.k", "10"], repo_root)
    assert predict.returncode == 0, predict.stderr[-3000:]
    frame = pd.read_csv(out, dtype={"item_id": str})
    _check_lists(frame, PreparedData.load(tiny_prepared), 10)


def test_exclude_seen_leaves_out_the_sessions_items():
    torch.manual_seed(0)
    sessions = [[1, 2, 3, 4], [5], [6, 7, 6], [0, 1, 2]]
    module = SessionRecModule(GRU4Rec(n_items=8, layers=[8]), n_sample=0).eval()
    module.predict_k = 6
    split = _split(sessions)
    items, offsets = with_sentinels(split)
    parts = {}
    for exclude in (False, True):
        module.predict_seen = split if exclude else None
        module.on_predict_epoch_start()
        parts[exclude] = [module.predict_step(b, i) for i, b in
                          enumerate(SessionParallelIterator(items, offsets, batch_size=2, steps_per_block=3))]
    full, kept = topk_frame(parts[False]), topk_frame(parts[True], exclude_seen=True)
    for s, events in enumerate(sessions):
        everything = full[full["session"] == s]["item_id"].tolist()
        got = kept[kept["session"] == s]["item_id"].tolist()
        want = [i for i in everything if i not in events]  # the same order, seen items left out
        assert got[: len(want)] == want and not set(got) & set(events), s  # full top 6 minus seen: a prefix
        assert len(got) == min(6, 8 - len(set(events))), s


def test_predict_after_a_scheduled_fit_warns_about_no_training_callback(tiny_prepared, tmp_path, repo_root):
    """configs/predict.yaml replaces the training callbacks: Lightning's warnings that the checkpoint's
    TrainingSchedule / ModelCheckpoint states are not restored read like errors, and predict needs neither."""
    import warnings

    cfg = str(repo_root / "configs" / "gru4rec" / "synthetic.yaml")
    common = ["--config", cfg, "--data.data_dir", str(tiny_prepared),
              "--trainer.enable_progress_bar", "false"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
              "--trainer.callbacks.dirpath", str(tmp_path), "--trainer.default_root_dir", str(tmp_path),
              "--trainer.callbacks+=sessrec.training.schedules.TrainingSchedule"])
    assert exit_info.value.code in (0, None)
    out = tmp_path / "recs.csv"
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as exit_info:
        warnings.simplefilter("always")
        main(["predict", *common, "--config", str(repo_root / "configs" / "predict.yaml"),
              "--ckpt_path", str(tmp_path / "last.ckpt"), "--trainer.default_root_dir", str(tmp_path / "p"),
              "--trainer.callbacks.output", str(out), "--trainer.callbacks.k", "5"])
    assert exit_info.value.code in (0, None)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Please add the following callbacks" in m or "dirpath has changed" in m]
    assert out.is_file()


def _digests(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["test.parquet", "items.parquet", "new/recs.csv"])
def test_predict_never_writes_over_or_into_the_prepared_data(tiny_prepared, tmp_path, repo_root, capsys, target):
    import shutil

    data = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, data)
    before = _digests(data)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(repo_root / "configs" / "baselines" / "pop.yaml"),
              "--config", str(repo_root / "configs" / "predict.yaml"), "--data.data_dir", str(data),
              "--trainer.enable_progress_bar", "false", "--trainer.callbacks.output", str(data / target)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sessrec: error:") and "TopKWriter output" in err and str(data) in err
    assert _digests(data) == before


def test_predict_inputs_include_the_checkpoint_and_feature_files(small, tmp_path):
    from types import SimpleNamespace

    from torch import nn

    from sessrec.encoders.dense import DenseEncoder
    from sessrec.errors import DataError
    from sessrec.evaluation.predict import _run_inputs
    from sessrec.features.catalogue import Catalogue
    from sessrec.io import check_output

    prepared = small / "prepared"
    data = PreparedData.load(prepared)
    datamodule = SimpleNamespace(data_dir=prepared, catalogue=lambda: Catalogue(data.item_ids, prepared))
    trainer = SimpleNamespace(datamodule=datamodule, ckpt_path=str(tmp_path / "model.ckpt"))
    module = nn.ModuleDict({"image": DenseEncoder(path="../raw/image.npy")})
    inputs = _run_inputs(trainer, module)
    for output in (small / "raw" / "image.npy", small / "raw" / "image.ids.txt", tmp_path / "model.ckpt"):
        with pytest.raises(DataError, match="is the input"):
            check_output(output, inputs, option="TopKWriter output")
    check_output(tmp_path / "recs.csv", inputs)  # elsewhere: fine
