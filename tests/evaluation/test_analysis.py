"""sessrec.evaluation.analysis: per-event ranks, popularity buckets and bucket metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from sessrec.evaluation.analysis import (
    bucket_metrics,
    bucket_names,
    discover_runs,
    event_ranks,
    find_run,
    image_index,
    popularity_buckets,
    read_metrics,
    recommend,
    summary_metrics,
)
from sessrec.data.batching import SessionParallelIterator
from sessrec.data.prepared import Split
from sessrec.errors import ConfigError
from sessrec.evaluation.loop import evaluate_block
from sessrec.evaluation.metrics import RankingMetrics
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule

# scores of the 4 items after each input item (row = input), for a stateless stub scorer
TABLE = torch.tensor([[0.0, 3, 2, 1], [4, 0, 1, 2], [1, 1, 0, 5], [2, 2, 2, 0]])


class TableScorer:
    """score_step(inputs, reset) -> TABLE[inputs]: scores depend on the current item only."""

    device = torch.device("cpu")

    def on_test_epoch_start(self) -> None:
        pass

    def score_step(self, inputs: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        return TABLE[inputs]  # (B, 4)


def _split(sessions: list[list[int]]) -> Split:
    offsets = np.cumsum([0] + [len(s) for s in sessions]).astype(np.int64)
    items = np.array([i for s in sessions for i in s], dtype=np.int64)
    return Split(items, offsets, np.arange(items.size, dtype=np.float64))


def test_event_ranks_by_hand():
    # session 2 has one event: nothing to predict. Conservative ranks (ties count against the target):
    # 0->1: [0,3,2,1] target 3, none >= 3 -> 1;   1->2: [4,0,1,2] target 1, items 0,3 >= 1 -> 3
    # 3->0: [2,2,2,0] target 2, items 1,2 tie -> 3; 1->3: target 2, item 0 -> 2; 3->3: target 0 -> 4
    split = _split([[0, 1, 2], [3, 0], [2], [1, 3, 3]])
    frame = event_ranks(TableScorer(), split, batch_size=2)
    assert frame["session"].tolist() == [0, 0, 1, 3, 3]
    assert frame["position"].tolist() == [1, 2, 1, 1, 2]
    assert frame["input"].tolist() == [0, 1, 3, 1, 3]
    assert frame["target"].tolist() == [1, 2, 0, 3, 3]
    assert frame["rank"].tolist() == [1, 3, 3, 2, 4]
    standard = event_ranks(TableScorer(), split, tie_mode="standard", batch_size=3)
    assert standard["rank"].tolist() == [1, 3, 1, 2, 4]
    # against the candidates {0, 3} only: 0->1 (3 vs 0, 1) -> 1; 1->2 (1 vs 4, 2) -> 3; 3->0 (2 vs 0) -> 1
    subset = event_ranks(TableScorer(), split, candidates=torch.tensor([0, 3]), batch_size=2)
    assert subset["rank"].tolist() == [1, 3, 1, 2, 2]


def test_event_ranks_cap_a_huge_batch_at_the_sessions():
    class Recording(TableScorer):
        widths: list[int] = []

        def score_step(self, inputs: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
            self.widths.append(len(inputs))
            return super().score_step(inputs, reset)

    split = _split([[0, 1, 2], [3, 0], [2], [1, 3, 3]])  # 3 sessions with something to predict
    scorer = Recording()
    frame = event_ranks(scorer, split, batch_size=10**9)  # would allocate (10**9, N) scores uncapped
    assert max(scorer.widths) == 3
    assert frame["rank"].tolist() == event_ranks(TableScorer(), split, batch_size=2)["rank"].tolist()


def test_event_ranks_follow_each_sessions_hidden_state_and_match_the_test_loop():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sessions = [rng.integers(0, 12, size=int(n)).tolist() for n in rng.integers(1, 7, size=15)]
    split = _split(sessions)
    module = SessionRecModule(GRU4Rec(n_items=12, layers=[8]), n_sample=0).eval()
    frame = event_ranks(module, split, batch_size=3)
    for s, events in enumerate(sessions):  # each session alone, batch of one
        rows = frame[frame["session"] == s]
        assert rows["position"].tolist() == list(range(1, len(events)))
        module.on_test_epoch_start()
        for pos in range(len(events) - 1):
            scores = module.score_step(torch.tensor([events[pos]]), torch.tensor([pos == 0]))  # (1, N)
            want = (scores[0] >= scores[0, events[pos + 1]]).sum().item()  # conservative, target included
            assert rows["rank"].iloc[pos] == want, (s, pos)
    metrics = RankingMetrics([1, 5])
    module.on_test_epoch_start()
    for block in SessionParallelIterator(split.items, split.offsets, 3, 4):
        evaluate_block(module.score_step, block, metrics)
    want = {k: v.item() for k, v in metrics.compute().items()}
    got = summary_metrics(frame["rank"].to_numpy(), [1, 5])
    assert got == pytest.approx(want, rel=1e-12)


def test_popularity_buckets_by_hand():
    counts = np.array([3, 10, 0, 10, 1])  # by popularity: 1, 3 (tie: lower index first), 0, 4, 2
    assert popularity_buckets(counts, (0.2,)).tolist() == [1, 0, 1, 1, 1]  # head: ceil(0.2 * 5) = 1 item
    assert popularity_buckets(counts, (0.2, 0.6)).tolist() == [1, 0, 2, 1, 2]  # 1 item, 2 more, the rest
    assert popularity_buckets(counts, (0.5,)).tolist() == [0, 0, 1, 0, 1]  # ceil(2.5) = 3 items
    assert bucket_names([0.2]) == ["head", "tail"]
    assert bucket_names([0.2, 0.5]) == ["top 0-20%", "top 20-50%", "top 50-100%"]
    for bad in [(), (0.0,), (0.5, 0.2), (1.0,)]:
        with pytest.raises(ConfigError, match="shares"):
            popularity_buckets(counts, bad)


def test_bucket_metrics_by_hand():
    counts = np.array([3, 10, 0, 10, 1])  # head = item 1 (10 of 24 training events)
    events = pd.DataFrame({"target": [1, 1, 3, 0, 4], "rank": [1.0, 4.0, 2.0, 30.0, 1.0]})
    table = bucket_metrics(events, counts, cutoffs=[1, 5], shares=[0.2])
    assert table.index.tolist() == ["head", "tail", "all"]
    assert table["items"].tolist() == [1, 4, 5]
    assert table["events"].tolist() == [2, 3, 5]
    np.testing.assert_allclose(table["train_share"], [10 / 24, 14 / 24, 1.0])
    np.testing.assert_allclose(table["event_share"], [0.4, 0.6, 1.0])
    np.testing.assert_allclose(table["recall@5"], [1.0, 2 / 3, 0.8])
    mrr = [(1 + 1 / 4) / 2, (1 / 2 + 0 + 1) / 3, (1 + 1 / 4 + 1 / 2 + 1) / 5]
    np.testing.assert_allclose(table["mrr@5"], mrr)
    np.testing.assert_allclose(table["recall@1"], [0.5, 1 / 3, 0.4])
    empty = bucket_metrics(events[events["target"] != 1], counts, cutoffs=[5])
    assert empty.loc["head", "events"] == 0 and math.isnan(empty.loc["head", "recall@5"])


def test_recommend_by_hand():
    items, scores = recommend(TableScorer(), [2, 0], k=2)  # scores after the last item, 0: [0, 3, 2, 1]
    assert items.tolist() == [1, 2] and scores.tolist() == [3.0, 2.0]
    items, scores = recommend(TableScorer(), [0], k=5, candidates=torch.tensor([0, 3]))
    assert items.tolist() == [3, 0] and scores.tolist() == [1.0, 0.0]


def test_run_folders(tmp_path):
    run = tmp_path / "exp" / "gru4rec"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch=0.ckpt").write_bytes(b"")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    logs = run / "logs" / "version_0"
    logs.mkdir(parents=True)
    (logs / "config.yaml").write_text("model: {}\n")
    (logs / "metrics.csv").write_text("epoch,step,train_loss,val_recall@20\n0,0,4.5,\n0,0,,0.1\n")
    (tmp_path / "exp" / "notes").mkdir()  # no config: not a run
    (tmp_path / "exp" / "wandb" / "files").mkdir(parents=True)  # W&B's own config.yaml: not a run
    (tmp_path / "exp" / "wandb" / "files" / "config.yaml").write_text("{}\n")
    (run / "wandb" / "files").mkdir(parents=True)
    (run / "wandb" / "files" / "config.yaml").write_text("{}\n")  # newer, but W&B's
    found = find_run(run)
    assert found.config == logs / "config.yaml"
    assert found.checkpoint == run / "checkpoints" / "last.ckpt"
    assert read_metrics(found)["train_loss"].iloc[0] == 4.5
    (logs / "metrics.csv").write_text("epoch,step,train_loss_epoch,train_loss_step\n0,0,,4.5\n0,0,4.4,\n")
    assert read_metrics(found)["train_loss"].iloc[0] == 4.5  # logged with on_epoch=True too
    assert list(discover_runs(tmp_path / "exp")) == ["gru4rec"]
    (run / "config.yaml").write_text("model: {}\n")  # an experiment run keeps it at the top
    assert find_run(run).config == run / "config.yaml"
    assert discover_runs(tmp_path / "missing") == {}
    assert find_run(tmp_path / "missing").config is None
    assert read_metrics(find_run(tmp_path / "exp" / "notes")).empty


def test_image_index(tmp_path):
    for name in ["0108775015.jpg", "abc.PNG", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    index = image_index(tmp_path)
    assert set(index) == {"0108775015", "108775015", "abc"}
    assert index["108775015"].name == "0108775015.jpg"


def test_item_labels_any_id_column_missing_values_and_unknown_columns(tmp_path):
    from sessrec.evaluation.analysis import item_labels

    csv = tmp_path / "articles.csv"
    csv.write_text("article_id,brand,price\n 7 ,acme,1.5\n8,,2\n7,other,3\n")
    labels = item_labels(csv, "article_id", ["brand", "price"])
    assert labels.index.tolist() == ["7", "8"]  # ids as text, stripped; the first row of a duplicate wins
    assert labels.loc["8"].tolist() == ["", "2"] and labels.loc["7"].tolist() == ["acme", "1.5"]
    pq = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": [1, 2], "brand": ["a", None]}).to_parquet(pq)
    assert item_labels(pq, columns=["brand"]).loc["2", "brand"] == ""
    with pytest.raises(ConfigError, match=r"articles.csv: no column 'colour' \(columns: article_id, brand"):
        item_labels(csv, "article_id", ["colour"])


def test_find_run_prefers_the_best_checkpoint(tmp_path):
    from sessrec.evaluation.analysis import find_run

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text("{}")
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert find_run(tmp_path).checkpoint.name == "last.ckpt"
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"")
    assert find_run(tmp_path).checkpoint.name == "best.ckpt"
