"""RowSparseAdam: torch's Adam / AdamW on dense gradients, SparseAdam's lazy rows on row-sparse ones,
weight decay on touched rows only, state_dict round trips (also through a Lightning checkpoint), and a
tiny model that learns with each optimiser."""

from __future__ import annotations

import io
import logging

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from sessrec.data.datamodule import SessionDataModule
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule
from sessrec.training.optim import AdagradMomentum, RowSparseAdam, build_optimizer

ROWS = [[1, 3, 3, 7], [2, 3, 9], [1, 1, 1], [0, 5]]  # the rows each step touches (with duplicates)


def _table(seed: int = 1) -> torch.Tensor:
    return torch.randn(10, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sparse_steps(w: torch.Tensor, opt: torch.optim.Optimizer, steps: list[list[int]]) -> None:
    for ids in steps:
        opt.zero_grad()
        F.embedding(torch.tensor(ids), w, sparse=True).sin().sum().backward()
        opt.step()


@pytest.mark.parametrize(("decoupled", "torch_cls"), [(False, torch.optim.Adam), (True, torch.optim.AdamW)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_dense_gradients_are_torch_adam_to_the_bit(decoupled, torch_cls, weight_decay) -> None:
    g = torch.Generator().manual_seed(0)
    ours, theirs = _table().requires_grad_(True), _table().requires_grad_(True)
    opt = RowSparseAdam([ours], lr=0.01, weight_decay=weight_decay, decoupled_weight_decay=decoupled)
    ref = torch_cls([theirs], lr=0.01, weight_decay=weight_decay, foreach=False)
    for _ in range(5):
        grad = torch.randn(10, 4, generator=g, dtype=torch.float64)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt.step(), ref.step()
    assert torch.equal(ours, theirs)
    assert torch.equal(opt.state[ours]["exp_avg_sq"], ref.state[theirs]["exp_avg_sq"])


@pytest.mark.parametrize("decoupled", [False, True])
def test_every_row_touched_is_dense_adam(decoupled) -> None:
    sparse, dense = _table().requires_grad_(True), _table().requires_grad_(True)
    opt_s = RowSparseAdam([sparse], lr=0.05, weight_decay=0.2, decoupled_weight_decay=decoupled)
    opt_d = RowSparseAdam([dense], lr=0.05, weight_decay=0.2, decoupled_weight_decay=decoupled)
    every = list(range(10))
    for _ in range(3):
        for w, opt, is_sparse in ((sparse, opt_s, True), (dense, opt_d, False)):
            opt.zero_grad()
            F.embedding(torch.tensor(every), w, sparse=is_sparse).sin().sum().backward()
            opt.step()
    assert torch.equal(sparse, dense)


def test_lazy_rows_match_torch_sparse_adam() -> None:
    ours, theirs = _table().requires_grad_(True), _table().requires_grad_(True)
    init = ours.detach().clone()
    # SparseAdam adds eps before the bias correction, Adam (and this) after: equal for eps -> 0
    opt = RowSparseAdam([ours], lr=0.1, eps=1e-12)
    ref = torch.optim.SparseAdam([theirs], lr=0.1, eps=1e-12)
    _sparse_steps(ours, opt, ROWS)
    _sparse_steps(theirs, ref, ROWS)
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=0)
    assert torch.allclose(opt.state[ours]["exp_avg"], ref.state[theirs]["exp_avg"], rtol=1e-9, atol=0)
    untouched = [4, 6, 8]
    assert torch.equal(ours[untouched], init[untouched])
    assert not opt.state[ours]["exp_avg_sq"][untouched].any()
    # row 9 (step 2 only) kept its moments frozen through steps 3 and 4, not decayed
    g9 = torch.cos(init[9])  # d sin(w) / d w at step 2 (row 9 untouched before)
    assert torch.allclose(opt.state[ours]["exp_avg"][9], 0.1 * g9, rtol=1e-14, atol=0)
    assert opt.state[ours]["step"] == 4


@pytest.mark.parametrize("decoupled", [False, True])
def test_weight_decay_on_touched_rows_by_hand(decoupled) -> None:
    lr, wd, eps = 0.1, 0.5, 1e-8
    w = _table().requires_grad_(True)
    init = w.detach().clone()
    opt = RowSparseAdam([w], lr=lr, eps=eps, weight_decay=wd, decoupled_weight_decay=decoupled)
    w.grad = torch.sparse_coo_tensor(torch.tensor([[2, 5, 2]]), torch.full((3, 4), 1.5, dtype=torch.float64),
                                     (10, 4), check_invariants=True)  # row 2 twice: its gradient is 3
    opt.step()
    # step 1: m / (1 - b1) = g, sqrt(v / (1 - b2)) = |g|, so the Adam step is lr * g / (|g| + eps)
    grads = {2: torch.full((4,), 3.0, dtype=torch.float64), 5: torch.full((4,), 1.5, dtype=torch.float64)}
    for row, g in grads.items():
        p = init[row]
        if decoupled:  # AdamW: decay, then the step on the raw gradient
            expected = p * (1 - lr * wd) - lr * g / (g.abs() + eps)
        else:  # Adam: the L2 term joins the gradient
            g = g + wd * p
            expected = p - lr * g / (g.abs() + eps)
        assert torch.allclose(w[row], expected, rtol=1e-14, atol=0)
    untouched = [i for i in range(10) if i not in grads]
    assert torch.equal(w[untouched], init[untouched])  # no decay where no gradient arrived


def test_state_dict_round_trip() -> None:
    w = _table().requires_grad_(True)
    opt = RowSparseAdam([w], lr=0.1, weight_decay=0.01, decoupled_weight_decay=True)
    _sparse_steps(w, opt, ROWS[:2])
    w2 = w.detach().clone().requires_grad_(True)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    opt2 = RowSparseAdam([w2], lr=0.5)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["decoupled_weight_decay"]
    _sparse_steps(w, opt, ROWS[2:])
    _sparse_steps(w2, opt2, ROWS[2:])
    assert torch.equal(w, w2)


@pytest.mark.parametrize(("kwargs", "option"), [
    ({"lr": 0.0}, "lr"), ({"betas": (0.9, 1.0)}, "betas"), ({"eps": 0.0}, "eps"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_invalid_options(kwargs: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        RowSparseAdam([torch.zeros(1, requires_grad=True)], **kwargs)


def test_build_optimizer() -> None:
    params = [torch.zeros(2, requires_grad=True)]
    assert type(build_optimizer("adagrad_momentum", params, 0.1, momentum=0.2)) is AdagradMomentum
    adamw = build_optimizer("adamw", params, 0.1, weight_decay=0.3)
    assert type(adamw) is RowSparseAdam and adamw.defaults["decoupled_weight_decay"]
    assert not build_optimizer("adam", params, 0.1).defaults["decoupled_weight_decay"]


@pytest.mark.parametrize("optimizer", ["adagrad_momentum", "adam", "adamw"])
def test_an_absurd_learning_rate_is_warned_about(optimizer: str, monkeypatch, caplog) -> None:
    """lr 1e30 trained to a finite but broken model without a word."""
    sessrec_log = logging.getLogger("sessrec")  # through caplog, whichever test set up the CLI's handler
    monkeypatch.setattr(sessrec_log, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(sessrec_log, "propagate", True)
    params = [torch.zeros(2, requires_grad=True)]
    with caplog.at_level(logging.WARNING, logger="sessrec"):
        build_optimizer(optimizer, params, 0.1)
        build_optimizer(optimizer, [{"params": params, "lr": 4.0}], 1.0)  # lr_scale up to 4: still fine
        assert not caplog.text
        build_optimizer(optimizer, params, 1e30)
    assert "learning rate 1e+30 (model.lr, times lr_scale) is above 10" in caplog.text


@pytest.mark.parametrize("optimizer", ["adagrad_momentum", "adam", "adamw"])
def test_sparse_model_learns_and_checkpoint_restores_optimizer(tiny_prepared, tmp_path, optimizer) -> None:
    L.seed_everything(0)
    dm = SessionDataModule(str(tiny_prepared), batch_size=16, steps_per_block=8, train_split="train_full")
    net = GRU4Rec(dm.n_items, [16])  # sparse_grad on: row-sparse item table
    module = SessionRecModule(net, n_sample=32, optimizer=optimizer,
                              lr=0.05 if optimizer == "adagrad_momentum" else 0.01,
                              weight_decay=0.01 if optimizer == "adamw" else 0.0)
    losses = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            losses.append(float(trainer.callback_metrics["train_loss_epoch"]))

    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_train_batches=10, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(module, dm)
    assert losses[-1] < losses[0] - 0.3, losses
    opt = module.optimizers().optimizer
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=True)
    net2 = GRU4Rec(dm.n_items, [16])
    net2.load_state_dict({k[len("net."):]: v for k, v in state["state_dict"].items() if k.startswith("net.")})
    opt2 = build_optimizer(optimizer, net2.parameters(), 1.0)
    opt2.load_state_dict(state["optimizer_states"][0])
    for p, p2 in zip(module.net.parameters(), net2.parameters()):
        for key, value in opt.state[p].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt2.state[p2][key])), key
    # one more step from the restored state moves both copies identically
    for net, o in ((module.net, opt), (net2, opt2)):
        o.zero_grad()
        scores, _ = net(torch.tensor([1, 2]), net.init_hidden(2), torch.tensor([1, 2, 3, 4]))
        scores.logsumexp(1).sum().backward()
        o.step()
    for p, p2 in zip(module.net.parameters(), net2.parameters()):
        assert torch.equal(p, p2)
