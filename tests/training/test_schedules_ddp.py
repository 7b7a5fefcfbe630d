"""2-process CPU DDP (gloo) runs of every TrainingSchedule mode, as a torchrun subprocess (~25 s)."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from ddp_launch import tiny_data, torchrun
from fake_prnn import FakeParallelRNN

from sessrec.data.datamodule import SessionDataModule
from sessrec.training.module import SessionRecModule

MODES = ["simultaneous", "residual", "alternating", "interleaved"]
FROZEN = {"simultaneous": [set(), set()], "residual": [{"id"}, {"image"}],  # order: image, id; 2 epochs
          "alternating": [{"id"}, {"image"}], "interleaved": [set(), set()]}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    prepared = tiny_data(root, n_items=120)
    runs = [[],  # dense gradients, momentum 0.5, every mode
            ["--sparse", "1", "--momentum", "0", "--tag", "sparse-"],  # row-sparse tables outside DDP
            ["--sparse", "0", "--momentum", "0", "--tag", "dense0-", "--modes", "simultaneous"]]
    for extra in runs:
        torchrun("schedule_ddp.py", "--data", str(prepared), "--out", str(root), *extra)
    return root


@pytest.mark.ddp
@pytest.mark.parametrize("tag", ["", "sparse-"])
@pytest.mark.parametrize("mode", MODES)
def test_ranks_agree_and_frozen_subnets_stay_fixed(ddp_run, mode, tag):
    results = [json.loads((ddp_run / f"{tag}{mode}-rank{r}.json").read_text()) for r in range(2)]
    states = [torch.load(ddp_run / f"{tag}{mode}-rank{r}.pt", weights_only=True) for r in range(2)]
    assert results[0]["substeps"] == results[1]["substeps"]  # unequal session counts: same steps, no hang
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name  # identical parameters on every rank
    for r in range(2):
        for epoch, changed in enumerate(results[r]["changed"]):
            assert {k for k, moved in changed.items() if not moved} == FROZEN[mode][epoch], (r, epoch)


@pytest.mark.ddp
def test_two_process_metrics_equal_single_process(ddp_run):
    """RankingMetrics sums across ranks: the 2-process test metrics equal a 1-process run's."""
    ddp = json.loads((ddp_run / "alternating-rank0.json").read_text())["test"]
    dm = SessionDataModule(str(ddp_run / "prepared"), batch_size=8, eval_batch_size=64, steps_per_block=4,
                           train_split="train_full", test_split="test")
    module = SessionRecModule(FakeParallelRNN(dm.n_items, hidden=8, sparse_grad=False), n_sample=16)
    module.load_state_dict(torch.load(ddp_run / "alternating.ckpt", weights_only=False)["state_dict"])
    single = L.Trainer(logger=False, enable_progress_bar=False).test(module, dm, verbose=False)[0]
    assert single.keys() == ddp.keys()
    for k, v in single.items():
        assert v == pytest.approx(ddp[k], abs=1e-6), k


@pytest.mark.ddp
def test_row_sparse_tables_train_as_dense_ddp(ddp_run):
    """Row-sparse tables left out of DDP and averaged by `all_reduce_row_sparse` train exactly like DDP's
    dense all-reduce (momentum 0, where the sparse and dense AdagradMomentum updates coincide)."""
    sparse = torch.load(ddp_run / "sparse-simultaneous-rank0.pt", weights_only=True)
    dense = torch.load(ddp_run / "dense0-simultaneous-rank0.pt", weights_only=True)
    assert sparse.keys() == dense.keys()
    moved = torch.load(ddp_run / "simultaneous-rank0.pt", weights_only=True)  # momentum 0.5: a different run
    assert not torch.allclose(sparse["subnets.id.embedding"], moved["subnets.id.embedding"])  # the check can fail
    for name, value in sparse.items():
        torch.testing.assert_close(value, dense[name], rtol=1e-5, atol=1e-6, msg=name)
