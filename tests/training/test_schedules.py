"""TrainingSchedule: which subnets train when; frozen parameters AND optimiser state bitwise unchanged;
exact resume from a checkpoint taken mid-epoch, mid-schedule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from fake_prnn import FakeParallelRNN

from sessrec.training.schedules import TrainingSchedule
from sessrec.data.datamodule import SessionDataModule
from sessrec.errors import ConfigError
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule

BLOCKS, STEPS = 2, 3  # training_steps per epoch, sub-steps per training_step


class Recorder(L.Callback):
    """Snapshots parameters and optimiser state just before every optimizer.step() (after the schedule
    dropped the frozen gradients), so snapshot s+1 minus snapshot s is exactly sub-step s's update."""

    def __init__(self) -> None:
        self.snaps: list[dict] = []
        self.grads: list[set[str]] = []  # parameters with a gradient at each recorded sub-step
        self.epochs: list[int] = []
        self.first: int | None = None  # global sub-step of the first record

    def _snap(self, module) -> dict:
        opt = module.optimizers().optimizer
        named = list(module.net.named_parameters())
        return {"params": {n: p.detach().clone() for n, p in named},
                "state": {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in named}}

    def on_before_substep_step(self, trainer, module, substep) -> None:
        self.first = substep if self.first is None else self.first
        assert substep == self.first + len(self.snaps)
        self.snaps.append(self._snap(module))
        self.grads.append({n for n, p in module.net.named_parameters() if p.grad is not None})
        self.epochs.append(trainer.current_epoch)

    def on_train_end(self, trainer, module) -> None:
        self.snaps.append(self._snap(module))


def _data(tiny_prepared) -> SessionDataModule:
    return SessionDataModule(str(tiny_prepared), batch_size=16, eval_batch_size=128, steps_per_block=STEPS,
                             train_split="train_full", val_split="test")


def _module(dm, fusion="weighted", momentum=0.5) -> SessionRecModule:
    net = FakeParallelRNN(dm.n_items, hidden=8, fusion=fusion)
    return SessionRecModule(net, n_sample=32, lr=0.05, momentum=momentum)


def _trainer(tmp_path, callbacks, max_epochs) -> L.Trainer:
    return L.Trainer(max_epochs=max_epochs, limit_train_batches=BLOCKS, limit_val_batches=0, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, num_sanity_val_steps=0, callbacks=callbacks)


def _owner(name: str) -> str:
    return name.split(".")[1] if name.startswith("subnets.") else "shared"


def _changed(before: dict, after: dict, owner: str) -> tuple[bool, bool]:
    """(any parameter of `owner` changed, any optimiser state tensor of `owner` changed)."""
    names = [n for n in before["params"] if _owner(n) == owner]
    params = any(not torch.equal(before["params"][n], after["params"][n]) for n in names)
    state = any(
        before["state"][n].keys() != after["state"][n].keys()
        or any(not torch.equal(v, after["state"][n][k]) for k, v in before["state"][n].items())
        for n in names
    )
    return params, state


def test_phase_at_per_mode():
    res = TrainingSchedule("residual", order=["a", "b"], epochs_per_phase=[2, 1])
    assert [res.phase_at(e, 0) for e in range(5)] == [0, 0, 1, 1, 1]  # the last subnet keeps training
    alt = TrainingSchedule("alternating", order=["a", "b"], epochs_per_phase=[1, 2])
    assert [alt.phase_at(e, 0) for e in range(6)] == [0, 1, 1, 0, 1, 1]
    inter = TrainingSchedule("interleaved", order=["a", "b", "c"])
    assert [inter.phase_at(7, s) for s in range(5)] == [0, 1, 2, 0, 1]
    assert TrainingSchedule().phase_at(3, 11) == 0


def test_invalid_options_name_the_option():
    with pytest.raises(ConfigError, match="epochs_per_phase"):
        TrainingSchedule("interleaved", epochs_per_phase=2)
    with pytest.raises(ConfigError, match="epochs_per_phase"):
        TrainingSchedule("residual", order=["a", "b"], epochs_per_phase=[1, 2, 3])
    with pytest.raises(ConfigError, match="mode"):
        TrainingSchedule("sometimes")
    with pytest.raises(ConfigError, match="train_shared"):
        TrainingSchedule(train_shared="maybe")


def test_non_prnn_net_is_rejected_except_simultaneous(tiny_prepared, tmp_path):
    dm = _data(tiny_prepared)
    module = SessionRecModule(GRU4Rec(dm.n_items, [8]), n_sample=16)
    with pytest.raises(ConfigError, match="named subnets"):
        _trainer(tmp_path, [TrainingSchedule("alternating")], 1).fit(module, dm)
    _trainer(tmp_path, [TrainingSchedule()], 1).fit(module, dm)  # simultaneous: a no-op


def _expected(mode: str, epoch: int, substep: int) -> set[str]:
    order = ["image", "id"]  # deliberately not the net's order
    if mode == "simultaneous":
        return set(order)
    if mode == "residual":  # epochs_per_phase [1, 2]
        return {order[0] if epoch < 1 else order[1]}
    if mode == "alternating":
        return {order[epoch % 2]}
    return {order[substep % 2]}


@pytest.mark.parametrize("mode", ["simultaneous", "residual", "alternating", "interleaved"])
def test_frozen_subnets_and_their_optimizer_state_stay_bitwise_unchanged(tiny_prepared, tmp_path, mode):
    L.seed_everything(0)
    dm = _data(tiny_prepared)
    module = _module(dm)
    per_phase = [1, 2] if mode == "residual" else 1
    schedule = TrainingSchedule(mode, order=["image", "id"], epochs_per_phase=per_phase)
    recorder = Recorder()
    _trainer(tmp_path, [schedule, recorder], max_epochs=3).fit(module, dm)
    n = 3 * BLOCKS * STEPS
    assert module.global_substep == n and len(recorder.snaps) == n + 1
    for s in range(n):
        active = _expected(mode, recorder.epochs[s], s)
        assert {_owner(g) for g in recorder.grads[s]} == active | {"shared"}, (mode, s)
        for name in ("id", "image"):
            params, state = _changed(recorder.snaps[s], recorder.snaps[s + 1], name)
            assert params == state == (name in active), (mode, s, name)
            # weighted fusion: the subnet's own output table follows its subnet
            table = f"subnets.{name}.item_table"
            moved = not torch.equal(recorder.snaps[s]["params"][table], recorder.snaps[s + 1]["params"][table])
            assert moved == (name in active), (mode, s, name)
        assert _changed(recorder.snaps[s], recorder.snaps[s + 1], "shared") == (True, True)


@pytest.mark.parametrize("train_shared", ["with_last", "never"])
def test_concat_shared_output_table_per_train_shared(tiny_prepared, tmp_path, train_shared):
    L.seed_everything(0)
    dm = _data(tiny_prepared)
    module = _module(dm, fusion="concat")
    schedule = TrainingSchedule("interleaved", train_shared=train_shared)  # default order: id, image
    recorder = Recorder()
    _trainer(tmp_path, [schedule, recorder], max_epochs=1).fit(module, dm)
    for s in range(BLOCKS * STEPS):
        trains = train_shared == "with_last" and s % 2 == 1
        assert _changed(recorder.snaps[s], recorder.snaps[s + 1], "shared") == (trains, trains)


class _Kill(L.Callback):
    """Saves a checkpoint after training_step number `at` (counted over epochs) and dies, like a killed job."""

    def __init__(self, path, at: int) -> None:
        self.path, self.at, self.seen = path, at, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.at:
            trainer.save_checkpoint(self.path)
            raise RuntimeError("killed")


@pytest.mark.parametrize("mode,kill_at", [("alternating", 3), ("interleaved", 5), ("residual", 2)])
def test_resume_mid_epoch_mid_schedule_is_exact(tiny_prepared, tmp_path, mode, kill_at):
    """3 epochs of 2 training_steps, killed after training_step `kill_at` (mid-epoch for 3 and 5, at an
    epoch's last block for 2) and resumed: parameters, optimiser state and metrics bitwise equal the
    uninterrupted run's."""

    def run(callbacks, ckpt_path=None):
        L.seed_everything(0)
        dm = _data(tiny_prepared)
        module = _module(dm)
        per_phase = [1, 2] if mode == "residual" else 1
        schedule = TrainingSchedule(mode, order=["image", "id"], epochs_per_phase=per_phase)
        recorder = Recorder()
        _trainer(tmp_path, [schedule, recorder, *callbacks], max_epochs=3).fit(module, dm, ckpt_path=ckpt_path)
        return module, recorder, dm

    full, full_rec, dm = run([])
    path = tmp_path / "killed.ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        run([_Kill(path, kill_at)])
    resumed, rec, _ = run([], ckpt_path=path)
    assert rec.first == kill_at * STEPS and resumed.global_substep == full.global_substep
    for (name, p), q in zip(full.net.named_parameters(), resumed.net.parameters()):
        assert torch.equal(p, q), name
    for a, b in zip(full_rec.snaps[-1]["state"].values(), rec.snaps[-1]["state"].values()):
        assert a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())
    trainer = L.Trainer(logger=False, enable_progress_bar=False, limit_val_batches=3)
    assert trainer.validate(full, dm, verbose=False) == trainer.validate(resumed, dm, verbose=False)


def test_residual_warning_names_what_max_epochs_cuts():
    """The warning once said the last subnet "keeps training" when max_epochs was too short to reach it."""
    res = TrainingSchedule("residual", order=["id", "image", "text"], epochs_per_phase=[2, 2, 1])
    assert res.schedule_warning(5) is None
    assert res.schedule_warning(3) == ("TrainingSchedule(residual): the phases take 5 epochs but max_epochs "
                                       "is 3: 'image' trains 1 of its 2 epochs; 'text' never trains")
    assert res.schedule_warning(1).endswith("'id' trains 1 of its 2 epochs; 'image', 'text' never train")
    assert res.schedule_warning(7).endswith("after its phase, 'text' keeps training for 2 more epoch(s)")
    assert TrainingSchedule("alternating", order=["a", "b"]).schedule_warning(7) is None


def test_epoch_summary_counts_steps_per_subnet():
    inter = TrainingSchedule("interleaved", order=["id", "image"], train_shared="with_last")
    assert inter.epoch_summary(0, [4, 3]) == ("TrainingSchedule(interleaved): epoch 0 trained id 4 steps, "
                                              "image 3 steps, shared 3 steps")
    res = TrainingSchedule("residual", order=["id", "image"], train_shared="never")
    assert res.epoch_summary(2, [0, 6]) == ("TrainingSchedule(residual): epoch 2 trained image 6 steps, "
                                            "shared parameters frozen; frozen all epoch: id")
    sim = TrainingSchedule(order=["id", "image"])
    assert sim.epoch_summary(1, [6]) == ("TrainingSchedule(simultaneous): epoch 1 trained id 6 steps, "
                                         "image 6 steps, shared 6 steps")


def test_interleaved_logs_every_subnet_each_epoch(tiny_prepared, tmp_path, monkeypatch):
    """Interleaved switches subnets within a Lightning batch: the epoch summary counts both, where the
    per-batch phase message named only the subnet active at each batch's first sub-step."""
    import sessrec.training.schedules as schedule_module

    said: list[str] = []
    monkeypatch.setattr(schedule_module, "rank_zero_info", said.append)
    L.seed_everything(0)
    dm = _data(tiny_prepared)
    schedule = TrainingSchedule("interleaved", order=["id", "image"])
    _trainer(tmp_path, [schedule], max_epochs=2).fit(_module(dm), dm)
    n = BLOCKS * STEPS // 2  # 3 sub-steps a batch: id, image, id | image, id, image
    summaries = [m for m in said if " trained " in m]
    assert summaries == [f"TrainingSchedule(interleaved): epoch {e} trained id {n} steps, image {n} steps, "
                         f"shared {2 * n} steps" for e in range(2)]
    assert not [m for m in said if "sub-step" in m and "training" in m]  # no per-batch phase lines


def test_a_new_mode_is_one_class():
    """Defining a ScheduleMode subclass is all a new mode takes: the callback accepts its name."""
    from sessrec.training.schedule_modes import MODES, ScheduleMode

    class EveryOther(ScheduleMode):  # the subnets take turns every two sub-steps
        name = "test-every-other"
        per_substep = True

        @property
        def n_phases(self) -> int:
            return len(self.order)

        def phase_at(self, epoch: int, substep: int) -> int:
            return substep // 2 % len(self.order)

        def active(self, phase: int) -> list[str]:
            return [self.order[phase]]

    try:
        schedule = TrainingSchedule("test-every-other", order=["a", "b"])
        assert [schedule.phase_at(0, s) for s in range(6)] == [0, 0, 1, 1, 0, 0]
        assert schedule.active_subnets(1) == ["b"]
        with pytest.raises(ConfigError, match="epochs_per_phase is only used by residual, alternating"):
            TrainingSchedule("test-every-other", epochs_per_phase=2)
        with pytest.raises(ValueError, match="defined twice"):
            type("Again", (ScheduleMode,), {"name": "test-every-other"})
    finally:
        MODES.pop("test-every-other")
    with pytest.raises(ConfigError, match="mode"):
        TrainingSchedule("test-every-other")
