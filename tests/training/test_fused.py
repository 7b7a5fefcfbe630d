"""The hand-written GRU4Rec step (sessrec.training.fused) against the autograd step it replaces."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from sessrec import kernels
from sessrec.data.datamodule import SessionDataModule
from sessrec.training.fused import FusedGRU4RecStep, unsupported
from sessrec.training.losses import loss_by_name
from sessrec.training.sampler import log_q_columns
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule
from sessrec.training.steps import Substep
from sessrec.training.optim import AdagradMomentum

pytestmark = pytest.mark.skipif(not kernels.enabled(), reason="the fused step needs numba")


def _autograd_step(net, opt, loss_fn, inputs, targets, samples, hidden, log_q):
    scores, hidden = net(inputs, hidden, torch.cat([targets, samples]))
    loss = loss_fn(scores, log_q=log_q)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), [h.detach() for h in hidden]


@pytest.mark.parametrize(
    ("loss", "layers", "dropout_embed", "dropout_hidden", "logq", "momentum", "elu_param", "bpreg"),
    [("cross-entropy", [8], 0.0, 0.0, 0.0, 0.0, 0.5, 1.0), ("cross-entropy", [8], 0.2, 0.3, 1.0, 0.2, 0.5, 1.0),
     ("cross-entropy", [8, 6], 0.25, 0.4, 0.5, 0.3, 0.5, 1.0), ("bpr-max", [8], 0.2, 0.3, 0.0, 0.2, 0.5, 1.0),
     ("bpr-max", [8, 6], 0.0, 0.4, 0.0, 0.0, 0.0, 0.5), ("bpr-max", [8], 0.0, 0.0, 0.0, 0.3, 1.0, 2.0)],
)
def test_fused_steps_equal_autograd_steps(loss, layers, dropout_embed, dropout_hidden, logq, momentum, elu_param,
                                          bpreg):
    n_items, batch, n_sample, steps = 40, 6, 10, 12
    torch.manual_seed(0)
    net = GRU4Rec(n_items, layers, dropout_embed=dropout_embed, dropout_hidden=dropout_hidden)
    with torch.no_grad():
        net.item_table[:, -1].uniform_(-0.5, 0.5)  # a non-zero bias, so its gradient path is exercised
    nets, initial = [net, copy.deepcopy(net)], copy.deepcopy(net)
    opts = [AdagradMomentum(n.parameters(), lr=0.1, momentum=momentum) for n in nets]
    loss_fn = loss_by_name(loss, logq=logq, elu_param=elu_param, bpreg=bpreg)
    log_pop = torch.rand(n_items) * 3
    fused = FusedGRU4RecStep(nets[1], opts[1], logq, log_pop, 0.5, loss, bpreg, elu_param)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randint(n_items, (batch,), generator=gen), torch.randint(n_items, (batch,), generator=gen),
             torch.randint(n_items, (n_sample,), generator=gen), torch.rand(batch, 1, generator=gen) > 0.3)
            for _ in range(steps)]  # repeated ids within and across the sets
    losses: list[list[float]] = [[], []]
    for k, (n, opt) in enumerate(zip(nets, opts)):
        n.train()
        torch.manual_seed(5)  # the dropout masks' stream
        hidden = n.init_hidden(batch)
        for inputs, targets, samples, keep in data:
            hidden = [h * keep for h in hidden]
            log_q = log_q_columns(log_pop, targets, samples, 0.5) if logq else None
            if k == 0:
                loss, hidden = _autograd_step(n, opt, loss_fn, inputs, targets, samples, hidden, log_q)
            else:
                loss, hidden = fused(inputs, targets, samples, hidden)
            losses[k].append(float(loss))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
        sa, sb = opts[0].state[a], opts[1].state[b]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.allclose(sa[key], sb[key], rtol=1e-4, atol=1e-6), (name, key)
    assert all(not torch.equal(a, b) for a, b in zip(nets[1].parameters(), initial.parameters()))  # it trained


def test_fused_refuses_what_it_does_not_compute():
    net = GRU4Rec(20, [8], input_mode="embedding", embedding_size=4)
    with pytest.raises(ValueError, match="input_mode"):
        FusedGRU4RecStep(net, AdagradMomentum(net.parameters(), lr=0.1))
    net = GRU4Rec(20, [8])
    with pytest.raises(ValueError, match="AdagradMomentum"):
        FusedGRU4RecStep(net, torch.optim.SGD(net.parameters(), lr=0.1))
    net.gru.cells[0].bias_hh.requires_grad_(False)
    with pytest.raises(ValueError, match="frozen"):
        FusedGRU4RecStep(net, AdagradMomentum(net.parameters(), lr=0.1))


def test_fused_step_stops_when_the_kernels_are_switched_off(monkeypatch: pytest.MonkeyPatch):
    net = GRU4Rec(20, [8])
    step = FusedGRU4RecStep(net, AdagradMomentum(net.parameters(), lr=0.1))
    before = [p.detach().clone() for p in net.parameters()]
    monkeypatch.setenv("SESSREC_NUMBA", "0")  # the kernels' wrappers decline: no half-done step
    ids = torch.tensor([1, 2])
    with pytest.raises(RuntimeError, match="switched off"):
        step(ids, ids, torch.tensor([3, 4, 5]), net.init_hidden(2))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), before))


def _fit(data_dir, fused: bool, loss: str = "cross-entropy"):
    L.seed_everything(3)
    dm = SessionDataModule(str(data_dir), batch_size=16, steps_per_block=8, train_split="train_full")
    net = GRU4Rec(dm.n_items, [8], dropout_hidden=0.2)
    module = SessionRecModule(net, loss=loss, n_sample=32, lr=0.05, momentum=0.1, logq=1.0 if loss == "cross-entropy"
                              else 0.0, fused_step=fused)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, dm)
    return module, trainer


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_training_with_the_fused_step_equals_autograd_training(tiny_prepared, monkeypatch, loss):
    """Two full epochs: fused steps, and autograd steps where a batch is padded (each epoch's end)."""
    padded = []
    autograd_step = Substep.__call__

    def counted(self, inputs, targets, hidden, active):
        padded.append(active is not None)
        return autograd_step(self, inputs, targets, hidden, active)

    monkeypatch.setattr(Substep, "__call__", counted)
    fused, fused_trainer = _fit(tiny_prepared, True, loss)
    n_autograd = len(padded)
    assert 0 < n_autograd < fused.global_substep / 10 and all(padded)  # only the padded steps
    plain, plain_trainer = _fit(tiny_prepared, False, loss)
    assert fused._fast is not None and plain._fast is None
    assert len(padded) - n_autograd == plain.global_substep  # autograd: every step
    assert fused_trainer.global_step == plain_trainer.global_step == fused.global_substep > 24  # steps counted
    for (name, a), b in zip(fused.net.named_parameters(), plain.net.parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), name
    logged = [t.callback_metrics["train_loss"] for t in (fused_trainer, plain_trainer)]
    assert float(logged[0]) == pytest.approx(float(logged[1]), rel=1e-4)


def test_the_module_says_why_the_fused_step_does_not_apply(tiny_prepared):
    module, _ = _fit(tiny_prepared, True, loss="top1-max")
    assert module._fast is None and "top1-max" in unsupported(module)
