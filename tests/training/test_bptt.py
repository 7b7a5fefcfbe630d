"""SessionRecModule(bptt=k): bptt 1 is bitwise the one-step path; a window's gradient equals a hand-unrolled
GRU's (no gradient across a session start); training, counters, resume, schedules and the fused step."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from sessrec.training.bptt import window_loss, windows
from sessrec.training.schedules import TrainingSchedule
from sessrec.data.batching import Block
from sessrec.data.datamodule import SessionDataModule
from sessrec.training.distributed import all_reduce_row_sparse
from sessrec.errors import ConfigError
from sessrec.training.fused import unsupported
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule

sys.path.insert(0, str(Path(__file__).parent))
from fake_prnn import FakeParallelRNN  # noqa: E402


def _one_step_training_step(self, block, batch_idx):
    """`SessionRecModule.training_step` as it was before `bptt` (autograd path): the reference for bptt 1."""
    opt = self.optimizers()
    hooks = [cb.on_before_substep_step for cb in self.trainer.callbacks
             if hasattr(cb, "on_before_substep_step")]
    steps, batch = block.inputs.shape
    hidden = self._hidden if self._hidden is not None else self.net.init_hidden(batch, self.device)
    full = block.n_events == steps * batch
    losses = torch.zeros(steps, device=self.device)
    keep_all = (~block.reset).unsqueeze(2).to(losses.dtype)
    for t in range(steps):
        hidden = [h * keep_all[t] for h in hidden]
        active = None if full else block.active[t]
        loss, hidden = self._step(block.inputs[t], block.targets[t], hidden, active)
        opt.zero_grad(set_to_none=True)
        loss.backward() if self._direct else self.manual_backward(loss)
        if self._row_sparse:
            all_reduce_row_sparse(self._row_sparse, self.trainer.world_size)
        for hook in hooks:
            hook(self.trainer, self, self.global_substep)
        if self._direct:
            opt._on_before_step()
            opt.optimizer.step()
            opt._on_after_step()
        else:
            opt.step()
        self.global_substep += 1
        hidden = [h.detach() for h in hidden]
        losses[t] = loss.detach()
    self._hidden = hidden
    if self.divergence.watch(losses, self.global_substep):
        self._check_diverged()
    self.log("train_loss", losses.mean(), prog_bar=True, on_epoch=True, batch_size=block.n_events)


class _Blocks(L.Callback):
    """Records each block's number of sub-steps and each `on_before_substep_step` call."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.hooked: list[int] = []
        self.epoch_loss: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.steps.append(batch.steps)

    def on_before_substep_step(self, trainer, module, substep) -> None:
        self.hooked.append(substep)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.epoch_loss.append(float(trainer.callback_metrics["train_loss_epoch"]))


def _fit(data_dir, callbacks=(), max_epochs=1, limit=1.0, ckpt_path=None, net=None, **options):
    L.seed_everything(3)
    dm = SessionDataModule(str(data_dir), batch_size=16, steps_per_block=8, train_split="train_full")
    net = net(dm.n_items) if net else GRU4Rec(dm.n_items, [8], dropout_hidden=0.2)
    options = {"n_sample": 32, "lr": 0.05, "momentum": 0.1, "fused_step": False, **options}
    module = SessionRecModule(net, **options)
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, limit_train_batches=limit, callbacks=list(callbacks))
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return module, trainer


def test_bptt_1_is_bitwise_the_one_step_path(tiny_prepared, monkeypatch):
    """A full epoch (its last block padded: the `active` path too): default, bptt 1 and the old loop."""
    default, _ = _fit(tiny_prepared)
    one, one_trainer = _fit(tiny_prepared, bptt=1)
    monkeypatch.setattr(SessionRecModule, "training_step", _one_step_training_step)
    old, old_trainer = _fit(tiny_prepared)
    assert one.global_substep == old.global_substep == one_trainer.global_step == old_trainer.global_step > 24
    for (name, a), b, c in zip(old.net.named_parameters(), one.net.parameters(), default.net.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c), name
    logged = [t.callback_metrics["train_loss_epoch"] for t in (one_trainer, old_trainer)]
    assert torch.equal(*logged)


def test_windows_cut_a_block_and_the_last_is_shorter():
    assert list(windows(8, 3)) == [(0, 3), (3, 6), (6, 8)]
    assert list(windows(6, 3)) == [(0, 3), (3, 6)]
    assert list(windows(2, 5)) == [(0, 2)]
    assert list(windows(3, 1)) == [(0, 1), (1, 2), (2, 3)]


def _gru(x, h, cell):
    """torch.nn.GRUCell's equations written out: gates [r, z, n]."""
    i_r, i_z, i_n = (x @ cell.weight_ih.T + cell.bias_ih).chunk(3, dim=1)  # (B, H) each
    h_r, h_z, h_n = (h @ cell.weight_hh.T + cell.bias_hh).chunk(3, dim=1)  # (B, H) each
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h  # (B, H)


def _reference_loss(net, block, h0, resets=True):
    """The window's loss by hand: unrolled GRU, a new session starts from a fresh zero state, the active
    rows' targets as negatives, cross-entropy -log(p_target + 1e-24) summed over the active rows / B, mean
    over the sub-steps."""
    cell, table = net.gru.cells[0], net.item_table
    h, total = h0, 0.0
    steps, batch = block.inputs.shape
    for t in range(steps):
        if resets:
            h = torch.stack([torch.zeros_like(h[i]) if block.reset[t, i] else h[i] for i in range(batch)])
        h = _gru(net.embedding[block.inputs[t]], h, cell)  # (B, H)
        rows = table[block.targets[t]]  # (B, H+1) the in-batch targets are the columns
        scores = h @ rows[:, :-1].T + rows[:, -1]  # (B, B)
        scores = scores.masked_fill(~block.active[t], float("-inf"))  # inactive rows' columns: no negatives
        per_row = -torch.log(torch.softmax(scores, dim=1).diagonal() + 1e-24)  # (B,)
        total = total + (per_row * block.active[t]).sum() / batch
    return total / steps


def _block(inactive: bool) -> Block:
    inputs = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]).T  # (T, B) distinct items per slot and step
    targets = torch.tensor([[2, 10, 11], [5, 6, 1], [8, 9, 3]]).T  # (T, B)
    reset = torch.tensor([[False, True, False],  # slot 1 starts a session at t=0, slots 0 and 2 carry h0
                          [True, False, False],  # slot 0: a new session inside the window
                          [False, False, True]])  # slot 2: one at the window's last sub-step
    active = torch.ones(3, 3, dtype=torch.bool)
    if inactive:
        active[2, 1] = False
        inputs[2, 1] = targets[2, 1] = 0
    return Block(inputs, targets, reset, active, int(active.sum()))


@pytest.mark.parametrize("inactive", [False, True])
def test_window_gradient_equals_a_hand_unrolled_gru_with_resets(inactive):
    torch.manual_seed(0)
    net = GRU4Rec(12, [4], input_mode="embedding", embedding_size=3, sparse_grad=False)
    module = SessionRecModule(net, n_sample=0, bptt=3, fused_step=False)
    block = _block(inactive)
    keep = (~block.reset).unsqueeze(2).float()  # (T, B, 1)
    h0 = torch.randn(3, 4, requires_grad=True)  # (B, H) the state carried in from the previous window
    params = [h0, *net.parameters()]
    expected = _reference_loss(net, block, h0)
    expected_grads = torch.autograd.grad(expected, params)
    losses = torch.zeros(3)
    loss, hidden = window_loss(module._step, block, keep, 0, 3, [h0], not inactive, losses)
    grads = torch.autograd.grad(loss, params)
    assert hidden[0].requires_grad  # not detached: the module detaches after the window's step
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses.mean().item() == pytest.approx(loss.item(), rel=1e-6)  # the mean of the sub-step losses
    names = ["h0", *(n for n, _ in net.named_parameters())]
    for name, got, want in zip(names, grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)
    # no gradient across a session start: slot 1 resets at t=0, slot 0's h0 reaches only the loss at t=0
    assert torch.equal(grads[0][1], torch.zeros(4))
    first = torch.zeros(3)
    loss0, _ = window_loss(module._step, block, keep, 0, 1, [h0], not inactive, first)
    torch.testing.assert_close(grads[0][0], torch.autograd.grad(loss0, h0)[0][0] / 3)
    # the fixture is sensitive to the resets: carrying the state across them changes the gradient
    carried = torch.autograd.grad(_reference_loss(net, block, h0, resets=False), params)
    assert not torch.allclose(carried[1], expected_grads[1])


def test_bptt_3_trains_counts_windows_and_calls_hooks_per_window(tiny_prepared):
    blocks = _Blocks()
    module, trainer = _fit(tiny_prepared, [blocks], max_epochs=3, bptt=3)
    assert module._fast is None
    losses = blocks.epoch_loss
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.95 * losses[0], losses
    n_windows = sum(-(-t // 3) for t in blocks.steps)  # 8 sub-steps a block: windows of 3, 3 and 2
    assert module.global_substep == sum(blocks.steps)
    assert trainer.global_step == len(blocks.hooked) == n_windows  # one optimiser step and hook call a window
    first_substeps = [sum(blocks.steps[:b]) + s for b, t in enumerate(blocks.steps) for s, _ in windows(t, 3)]
    assert blocks.hooked == first_substeps


class _Kill(L.Callback):
    def __init__(self, path, at: int) -> None:
        self.path, self.at, self.seen = path, at, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.at:
            trainer.save_checkpoint(self.path)
            raise RuntimeError("killed")


def test_resume_mid_epoch_with_bptt_is_exact(tiny_prepared, tmp_path):
    full, full_trainer = _fit(tiny_prepared, max_epochs=2, limit=4, bptt=3)
    path = tmp_path / "killed.ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tiny_prepared, [_Kill(path, 6)], max_epochs=2, limit=4, bptt=3)  # epoch 1, after its 2nd block
    resumed, resumed_trainer = _fit(tiny_prepared, max_epochs=2, limit=4, ckpt_path=path, bptt=3)
    assert resumed.global_substep == full.global_substep
    assert resumed_trainer.global_step == full_trainer.global_step
    for (name, a), b in zip(full.net.named_parameters(), resumed.net.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("value", [0, -1, 1.5, True, None])
def test_bptt_below_1_or_not_an_integer_is_refused(value):
    with pytest.raises(ConfigError, match="bptt must be an integer >= 1"):
        SessionRecModule(GRU4Rec(10, [4]), bptt=value)


def test_the_fused_step_says_it_needs_bptt_1(tiny_prepared):
    module, _ = _fit(tiny_prepared, limit=2, bptt=2, fused_step=True, logq=1.0, momentum=0.0)
    assert module._fast is None and "bptt is 2" in unsupported(module)
    module, _ = _fit(tiny_prepared, limit=2, bptt=1, fused_step=True, logq=1.0, momentum=0.0)
    assert module._fast is not None


def _prnn(n_items):
    return FakeParallelRNN(n_items, hidden=8, fusion="weighted")


def test_interleaved_schedule_refuses_bptt_above_1(tiny_prepared):
    with pytest.raises(ConfigError, match="interleaved.*bptt 1, got bptt 2"):
        _fit(tiny_prepared, [TrainingSchedule("interleaved")], limit=1, net=_prnn, bptt=2)


def test_alternating_schedule_freezes_per_window(tiny_prepared):
    """Per epoch, the frozen subnet's parameters stay bitwise unchanged with one step per window of 3."""

    class Snap(L.Callback):
        def __init__(self) -> None:
            self.snaps: list[dict] = []

        def _snap(self, module) -> None:
            self.snaps.append({n: p.detach().clone() for n, p in module.net.named_parameters()})

        on_train_start = on_train_epoch_end = lambda self, trainer, module: self._snap(module)  # noqa: E731

    snap, blocks = Snap(), _Blocks()
    schedule = TrainingSchedule("alternating", order=["image", "id"])
    _fit(tiny_prepared, [schedule, snap, blocks], max_epochs=2, limit=2, net=_prnn, bptt=3)
    assert len(blocks.hooked) == sum(-(-t // 3) for t in blocks.steps)
    for epoch, trained in enumerate(["image", "id"]):
        before, after = snap.snaps[epoch], snap.snaps[epoch + 1]
        for name in before:
            owner = name.split(".")[1] if name.startswith("subnets.") else "shared"
            if owner in ("image", "id"):
                assert torch.equal(before[name], after[name]) == (owner != trained), (epoch, name)
