"""SessionRecModule(lr_scale=...): one optimiser parameter group per scaled p-RNN subnet.

Each subnet's own parameters move by lr * scale, shared ones by lr, checked against the hand-computed
first step of AdagradMomentum (momentum 0) and of RowSparseAdam (row-sparse tables); invalid scales fail
at construction with a ConfigError naming the option.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sessrec import kernels
from sessrec.data.datamodule import SessionDataModule
from sessrec.encoders import Catalogue, ItemIdEncoder
from sessrec.encoders.sparse_text import SparseTextEncoder
from sessrec.errors import ConfigError
from sessrec.features import write_sparse
from sessrec.training.fused import unsupported
from sessrec.models.gru4rec import GRU4Rec
from sessrec.models.prnn import ParallelRNN
from sessrec.training.module import SessionRecModule
from sessrec.training.optim import AdagradMomentum, RowSparseAdam, lr_scale_groups

N, B, LR = 9, 4, 0.1
SCALES = {"id": 0.5, "text": 2.0}


@pytest.fixture()
def catalogue(tmp_path: Path) -> Catalogue:
    ids = [str(i) for i in range(N)]
    rng = np.random.default_rng(0)
    terms = sp.random(N, 12, density=0.3, random_state=rng, format="csr") + sp.eye(N, 12)  # (N, 12)
    write_sparse(tmp_path / "text.npz", terms, ids)
    return Catalogue(np.array(ids, dtype=object), tmp_path)


def make_module(catalogue: Catalogue, fusion: str, optimizer: str = "adagrad_momentum", **kw):
    torch.manual_seed(0)
    encoders = {"id": ItemIdEncoder(dim=4), "text": SparseTextEncoder("text.npz", dim=3)}
    net = ParallelRNN(N, encoders, {"id": [5], "text": [3]}, fusion=fusion, catalogue=catalogue, **kw)
    return SessionRecModule(net, optimizer=optimizer, lr=LR, lr_scale=SCALES, fused_step=False)


def owner_lr(net: ParallelRNN) -> dict[int, float]:
    """id(parameter) -> the lr it must train with: lr * scale inside a scaled subnet, lr elsewhere."""
    lrs = {id(p): LR for p in net.parameters()}
    for name, scale in SCALES.items():
        lrs.update((id(p), LR * scale) for p in net.subnets[name].parameters())
    return lrs


def one_step(module: SessionRecModule) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One optimiser step on a sampled-columns loss: (parameters before, dense gradients) by name."""
    net, opt = module.net, module.configure_optimizers()
    scores, _ = net(torch.tensor([1, 4, 4, 7]), net.init_hidden(B), torch.tensor([4, 2, 7, 0, 4]))  # (B, 5)
    torch.nn.functional.cross_entropy(scores, torch.arange(B)).backward()
    before = {n: p.detach().clone().double() for n, p in net.named_parameters()}
    grads = {n: p.grad.to_dense().double() for n, p in net.named_parameters()}
    opt.step()
    return before, grads


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_groups_hold_every_parameter_once_at_its_lr(catalogue: Catalogue, fusion: str) -> None:
    module = make_module(catalogue, fusion, learn_scale=True)
    groups = lr_scale_groups(module.net, LR, SCALES)
    assert [g["name"] for g in groups] == ["id", "text", "rest"]  # rest: the shared scales (+ concat's table)
    held = [p for g in groups for p in g["params"]]
    assert len({id(p) for p in held}) == len(held) == len(list(module.net.parameters()))
    lrs = owner_lr(module.net)
    assert all(g["lr"] == lrs[id(p)] for g in groups for p in g["params"])
    table = module.net.shared.item_table if fusion == "concat" else module.net.subnets["text"].item_table
    assert any(p is table for p in groups[1 if fusion == "weighted" else 2]["params"])


@pytest.mark.parametrize("numba", ["1", "0"])  # the kernels of sessrec.kernels, and the torch code
@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_adagrad_step_is_lr_times_scale_per_subnet(catalogue: Catalogue, fusion: str, numba: str,
                                                   monkeypatch) -> None:
    monkeypatch.setenv("SESSREC_NUMBA", numba)
    if numba == "1" and not kernels.enabled():
        pytest.skip("numba is not installed")
    module = make_module(catalogue, fusion)
    before, grads = one_step(module)
    assert type(module.configure_optimizers()) is AdagradMomentum
    lrs = owner_lr(module.net)
    sparse = 0
    for name, p in module.net.named_parameters():
        g = grads[name]
        # first step, momentum 0: acc = g^2, p -= lr_k g / sqrt(g^2 + eps) (rows not touched: g = 0, no move)
        expected = before[name] - lrs[id(p)] * g / torch.sqrt(g * g + 1e-6)
        assert torch.allclose(p.detach().double(), expected, rtol=1e-6, atol=1e-7), name
        sparse += p.grad.is_sparse
    assert sparse >= 3  # the id embedding, the term table and the item table(s) took the row-sparse path
    moved = {n: (p.detach().double() - before[n]).abs().max().item()
             for n, p in module.net.named_parameters()}
    assert moved["subnets.id.encoder.weight"] == pytest.approx(LR * 0.5, rel=1e-2)  # |g| >> sqrt(eps): ~lr_k
    assert moved["subnets.text.encoder.weight"] == pytest.approx(LR * 2.0, rel=1e-2)


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_row_sparse_adam_step_is_lr_times_scale_per_subnet(catalogue: Catalogue, fusion: str) -> None:
    module = make_module(catalogue, fusion, optimizer="adam")
    assert type(module.configure_optimizers()) is RowSparseAdam
    before, grads = one_step(module)
    lrs = owner_lr(module.net)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for name, p in module.net.named_parameters():
        g, touched = grads[name], None
        if p.grad.is_sparse:  # lazy: only the gradient's rows step (their moments start from zero)
            touched = torch.zeros(p.shape[0], dtype=torch.bool)
            touched[p.grad.coalesce().indices()[0]] = True
        m, v = (1 - b1) * g, (1 - b2) * g * g
        step = lrs[id(p)] / (1 - b1) * m / (v.sqrt() / math.sqrt(1 - b2) + eps)  # ~ lr_k sign(g)
        if touched is not None:
            assert 0 < int(touched.sum()) < p.shape[0], name  # a row-sparse table with untouched rows
            step[~touched] = 0
        assert torch.allclose(p.detach().double(), before[name] - step, rtol=1e-6, atol=1e-7), name
    table = "shared.item_table" if fusion == "concat" else "subnets.text.item_table"
    assert module.net.get_parameter(table).grad.is_sparse


def test_invalid_scales_are_config_errors(catalogue: Catalogue) -> None:
    enc = {"id": ItemIdEncoder(dim=4), "text": SparseTextEncoder("text.npz", dim=3)}
    net = ParallelRNN(N, enc, [3])
    with pytest.raises(ConfigError, match=r"lr_scale: unknown subnet\(s\) image \(subnets: id, text\)"):
        SessionRecModule(net, lr_scale={"id": 1.0, "image": 2.0})
    for bad in (0.0, -1.0, math.nan, math.inf, "2"):
        with pytest.raises(ConfigError, match=r"lr_scale\.text must be"):
            SessionRecModule(net, lr_scale={"text": bad})
    with pytest.raises(ConfigError, match="lr_scale .*the net has none"):
        SessionRecModule(GRU4Rec(N, [4]), lr_scale={"id": 0.5})
    for empty in (None, {}):  # nothing to scale: the plain parameter list, one group
        module = SessionRecModule(GRU4Rec(N, [4]), lr_scale=empty)
        assert len(module.configure_optimizers().param_groups) == 1
    assert lr_scale_groups(net, LR, None) == list(net.parameters())


def test_fit_keeps_the_fused_step_without_scales_and_the_groups_with_them(tiny_prepared: Path) -> None:
    def fit(net_of, **kw) -> SessionRecModule:
        L.seed_everything(0)
        dm = SessionDataModule(str(tiny_prepared), batch_size=16, steps_per_block=8, train_split="train_full")
        module = SessionRecModule(net_of(dm.n_items), n_sample=16, lr=LR, **kw)
        trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            limit_train_batches=2, limit_val_batches=0)
        trainer.fit(module, dm)
        return module

    gru = fit(lambda n: GRU4Rec(n, [8]))
    assert unsupported(gru) is None and gru._fast is not None  # lr_scale None: GRU4Rec keeps the fused step
    prnn = fit(lambda n: ParallelRNN(n, {"id": ItemIdEncoder(4), "id2": ItemIdEncoder(3)}, [4]),
               lr_scale={"id2": 3.0})
    groups = prnn.optimizers().optimizer.param_groups
    assert [(g["name"], g["lr"]) for g in groups] == [("id2", pytest.approx(LR * 3)), ("rest", LR)]
    assert prnn.hparams.lr_scale == {"id2": 3.0}
