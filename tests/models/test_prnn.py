"""ParallelRNN: fusions against hand computation, sampled = full scores, parameter ownership, sparse item
table gradients, and a plug-in encoder trained from a config alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sessrec.encoders import Catalogue, DenseEncoder, ItemIdEncoder
from sessrec.features import write_dense
from sessrec.models.prnn import ParallelRNN

N, B = 7, 3


@pytest.fixture()
def catalogue(tmp_path: Path) -> Catalogue:
    ids = [str(i) for i in range(N)]
    image = np.random.default_rng(0).standard_normal((N, 5)).astype(np.float32)  # (N, 5)
    write_dense(tmp_path / "image.npy", image, ids)
    return Catalogue(np.array(ids, dtype=object), tmp_path)


def make_net(catalogue: Catalogue, fusion: str, **kw) -> ParallelRNN:
    torch.manual_seed(0)
    encoders = {"id": ItemIdEncoder(dim=4), "image": DenseEncoder("image.npy", projection=3)}
    return ParallelRNN(N, encoders, {"id": [6], "image": [2, 5]}, fusion=fusion, catalogue=catalogue, **kw)


def manual_scores(net: ParallelRNN, inputs: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
    """Scores over all items computed with plain torch.nn.functional from the net's parameters."""
    outs, i = [], 0
    for subnet in net.subnets.values():
        x = subnet.encoder(inputs)  # (B, D)
        for cell in subnet.gru.cells:
            x = cell(x, hidden[i])  # (B, H)
            i += 1
        outs.append(x)
    s = net.shared.scale
    if net.fusion == "concat":
        h = torch.cat([s[0] * outs[0], s[1] * outs[1]], dim=1)  # (B, 11)
        w = net.shared.item_table
        return h @ w[:, :-1].t() + w[:, -1]  # (B, N)
    tables = [sub.item_table for sub in net.subnets.values()]
    return sum(s[k] * (outs[k] @ tables[k][:, :-1].t() + tables[k][:, -1]) for k in range(2))


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_forward_equals_manual_computation(catalogue: Catalogue, fusion: str) -> None:
    net = make_net(catalogue, fusion, subnet_scale={"id": 0.5, "image": 2.0}).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.5, 0.5)  # non-zero biases and output bias column
    inputs = torch.tensor([0, 3, 6])
    hidden = [torch.randn(B, h) for h in net.hidden_sizes]  # (B, 6), (B, 2), (B, 5)
    scores, new_hidden = net(inputs, hidden)  # (B, N)
    torch.testing.assert_close(scores, manual_scores(net, inputs, hidden))
    assert [h.shape[1] for h in new_hidden] == [6, 2, 5] == net.hidden_sizes


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_sampled_columns_equal_full_scores(catalogue: Catalogue, fusion: str) -> None:
    net = make_net(catalogue, fusion, learn_scale=True).eval()
    hidden = net.init_hidden(B)
    inputs, cols = torch.tensor([1, 2, 2]), torch.tensor([2, 5, 5, 0])
    full, _ = net(inputs, hidden)  # (B, N)
    sampled, _ = net(inputs, hidden, cols)  # (B, C)
    torch.testing.assert_close(sampled, full[:, cols])


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_every_parameter_has_one_owner(catalogue: Catalogue, fusion: str) -> None:
    net = make_net(catalogue, fusion, learn_scale=True)
    owned = [p for s in net.subnets.values() for p in s.parameters()] + net.shared_parameters()
    assert len({id(p) for p in owned}) == len(owned)  # no parameter in two owners
    assert {id(p) for p in owned} == {id(p) for p in net.parameters()}
    assert (fusion == "concat") == hasattr(net.shared, "item_table")
    if fusion == "weighted":
        assert all(s.item_table is not None for s in net.subnets.values())


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_item_table_gradients_are_row_sparse(catalogue: Catalogue, fusion: str) -> None:
    net = make_net(catalogue, fusion)
    scores, _ = net(torch.tensor([1, 4, 4]), net.init_hidden(B), torch.tensor([4, 2, 4]))
    scores.sum().backward()
    tables = [net.shared.item_table] if fusion == "concat" else [s.item_table for s in net.subnets.values()]
    tables.append(net.subnets["id"].encoder.weight)
    for table in tables:
        assert table.grad.is_sparse
        assert table.grad.coalesce().indices()[0].tolist() in ([2, 4], [1, 4])


def test_invalid_options_name_the_option(catalogue: Catalogue) -> None:
    enc = {"id": ItemIdEncoder(dim=4)}
    with pytest.raises(ValueError, match="subnet_scale: unknown subnet"):
        ParallelRNN(N, enc, subnet_scale={"img": 1.0})
    with pytest.raises(ValueError, match="layers: give sizes for every subnet"):
        ParallelRNN(N, {"id": ItemIdEncoder(4), "x": ItemIdEncoder(4)}, {"id": [3]})
    net = ParallelRNN(N, enc)
    with pytest.raises(RuntimeError, match="bind"):
        net(torch.tensor([0]), net.init_hidden(1))


PLUGIN = '''
import torch
from torch import nn
from sessrec.encoders import FeatureEncoder


class HashEncoder(FeatureEncoder):
    """Item id -> embedding of (id mod buckets): a toy plug-in."""

    def __init__(self, buckets: int = 16, dim: int = 8) -> None:
        super().__init__()
        self.buckets, self.dim = buckets, dim

    def build(self, catalogue) -> int:
        self.table = nn.Embedding(self.buckets, self.dim)
        return self.dim

    def forward(self, items):
        return self.table(items % self.buckets)
'''


def test_plugin_encoder_trains_from_a_config(tiny_prepared: Path, tmp_path: Path) -> None:
    (tmp_path / "encoders").mkdir()
    (tmp_path / "encoders" / "hashing.py").write_text(PLUGIN)
    config = f"""
    trainer: {{max_epochs: 1, limit_train_batches: 3, limit_val_batches: 0, logger: false,
               enable_checkpointing: false, enable_progress_bar: false}}
    model:
      class_path: sessrec.training.module.SessionRecModule
      init_args:
        net:
          class_path: sessrec.models.prnn.ParallelRNN
          init_args:
            encoders:
              id: {{class_path: ItemIdEncoder, init_args: {{dim: 8}}}}
              hashed: {{class_path: HashEncoder, init_args: {{buckets: 5}}}}
            layers: [8]
            fusion: weighted
        n_sample: 16
    data: {{data_dir: {tiny_prepared}, batch_size: 8, steps_per_block: 4}}
    """
    (tmp_path / "plugin.yaml").write_text(textwrap.dedent(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sessrec", "fit", "--config", "plugin.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "`Trainer.fit` stopped" in proc.stdout + proc.stderr


def test_concat_encoder_feeds_one_gru(catalogue: Catalogue) -> None:
    from sessrec.encoders import ConcatEncoder

    enc = ConcatEncoder([ItemIdEncoder(dim=4), DenseEncoder("image.npy")])
    net = ParallelRNN(N, {"concat": enc}, [3], catalogue=catalogue)
    items = torch.tensor([0, 5])
    parts = enc.parts
    torch.testing.assert_close(enc(items), torch.cat([parts[0](items), parts[1](items)], dim=1))  # (2, 9)
    assert net.subnets["concat"].gru.cells[0].input_size == 9


def test_cli_fit_then_test_restores_weights(tiny_prepared: Path, tmp_path: Path) -> None:
    """configure_model binds before the checkpoint loads: strict loading finds every subnet parameter."""
    from sessrec.cli import main

    net = {"class_path": "sessrec.models.prnn.ParallelRNN", "init_args": {
        "encoders": {"id": {"class_path": "ItemIdEncoder", "init_args": {"dim": 8}},
                     "image": {"class_path": "DenseEncoder", "init_args": {"path": "../raw/image.npy"}}},
        "layers": [8], "fusion": "weighted", "learn_scale": True}}
    common = ["--model.class_path", "sessrec.training.module.SessionRecModule", f"--model.init_args.net={net}",
              "--model.init_args.n_sample", "16", "--data.data_dir", str(tiny_prepared),
              "--data.batch_size", "8", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.limit_test_batches", "1", f"--trainer.default_root_dir={tmp_path}"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
              "--trainer.limit_val_batches", "0"])
    assert exit_info.value.code in (0, None)
    ckpt = next(tmp_path.rglob("*.ckpt"))
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert "net.subnets.image.item_table" in state and "net.shared.scale" in state
    with pytest.raises(SystemExit) as exit_info:
        main(["test", *common, "--ckpt_path", str(ckpt)])
    assert exit_info.value.code in (0, None)


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_query_and_ranking_table_factor_the_scores(catalogue: Catalogue, fusion: str) -> None:
    """Concat fusion's scores are query @ W.T + b (what sessrec.evaluation.screening ranks); weighted has no table."""
    net = make_net(catalogue, fusion, subnet_scale={"id": 0.5, "image": 2.0}).eval()
    inputs = torch.tensor([0, 3, 6])
    hidden = [torch.randn(B, h) for h in net.hidden_sizes]
    scores, new_hidden = net(inputs, hidden)  # (B, N)
    if fusion == "weighted":
        assert net.ranking_table() is None
        with pytest.raises(RuntimeError, match="concat"):
            net.query(inputs, hidden)
        return
    query, q_hidden = net.query(inputs, hidden)  # (B, 11)
    table = net.ranking_table()  # (N, 12)
    torch.testing.assert_close(query @ table[:, :-1].t() + table[:, -1], scores)
    assert all(torch.equal(a, b) for a, b in zip(new_hidden, q_hidden))
