"""Training schedules for parallel RNNs: train one subnet at a time while the others stay fixed.

The p-RNN paper's alternative training methods (inspired by ALS and ensembles, to make the subnets learn
complementary aspects of the sessions):

- "simultaneous": every subnet trains at every step (backpropagate through the network in one go);
- "residual": each subnet in `order` trains for `epochs_per_phase` epochs in turn, then stays fixed
  (train fully, then the next subnet learns what is left); after the last phase the last subnet keeps
  training;
- "alternating": as residual, but cycling through `order` again and again (per epoch);
- "interleaved": the active subnet changes at every mini-batch (every session-parallel sub-step).

Each mode is one class of `sessrec.training.schedule_modes` (a subclass registers a new mode name).

Mechanism: frozen subnets still run forward (their hidden states evolve as usual) and backward, so DDP
sees a gradient for every parameter (no `find_unused_parameters`); after backward, when DDP has already
all-reduced the gradients, `on_before_substep_step` sets `.grad = None` on the frozen parameters just
before `optimizer.step()`. Optimisers skip parameters without a gradient (AdagradMomentum, Adam, AdamW),
so the frozen parameters AND their optimiser state (accumulators, momentum, step counts) stay bitwise
unchanged. The cost: frozen subnets still pay their backward pass.

Shared parameters are every parameter of the net outside `net.named_subnets()` (ParallelRNN's
`shared_parameters()`: concat fusion's output table, learned subnet scales). `train_shared` decides
when they train: "always" (default; the paper trains the output layer on top of the concatenated hidden
state in every phase), "with_last" (only while the last subnet of `order` trains, e.g. residual: the
output layer is fitted with the last phase) or "never" (kept fixed).

A subnet whose input embedding is the output item table (`ItemIdEncoder(shared_with_output=True)`)
freezes with what it owns: with weighted fusion the table is its own, so its input and output rows stay
fixed together; with concat fusion the table is shared, so freezing the subnet fixes its GRU only, while
its input embedding moves with the output layer in the phases where the shared parameters train (a
warning says so at fit start; use weighted fusion, or `train_shared`, to keep it fixed).

The phase is a function of the epoch and of the module's global sub-step counter, both restored from
checkpoints, so a run resumed mid-schedule continues in the right phase at the right step.

Logging (rank zero, INFO): the epoch-based modes say which subnets train when a phase starts; every mode
ends each epoch with what actually trained, counted at the optimiser steps, e.g. "TrainingSchedule
(interleaved): epoch 0 trained id 120 steps, image 120 steps, shared 240 steps" (a subnet that never
trained in the epoch is listed as frozen). Interleaved has no per-phase message: its phase changes at every
sub-step, within a Lightning batch. Residual warns at fit start when max_epochs and the phases disagree,
naming the subnets that will never train or train fewer epochs than their phase.

Sessrec-specific hook: `SessionRecModule` calls `on_before_substep_step(trainer, module, substep)` on
every callback that defines it, after each sub-step's backward and before its `optimizer.step()`;
`substep` is the module's global sub-step counter. With `SessionRecModule(bptt=k > 1)` the hook runs once
per window of k sub-steps (one backward, one step; `sessrec.training.bptt`) with the window's first sub-step: the
epoch-based modes (simultaneous, residual, alternating) freeze per window as per step (a window never
spans two epochs); "interleaved" refuses k > 1 (it switches subnets per sub-step).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from sessrec.checks import check_choice
from sessrec.errors import ConfigError
from sessrec.models.base import SessionNet
from sessrec.training.schedule_modes import MODES, ScheduleMode

SharedMode = Literal["always", "with_last", "never"]


class TrainingSchedule(L.Callback):
    """Which subnets of a `ParallelRNN` train at each epoch / sub-step (see the module docstring).

    Args:
        mode: a `sessrec.training.schedule_modes` mode: "simultaneous", "residual", "alternating" (per
            epoch) or "interleaved" (per sub-step).
        order: subnet names in training order (default: the net's order); every subnet exactly once.
        epochs_per_phase: epochs each subnet trains per phase (residual / alternating): one int for all,
            or one int per subnet of `order`. Must be 1 with simultaneous and interleaved.
        train_shared: when the shared parameters train: "always", "with_last" or "never".
    """

    def __init__(
        self,
        mode: str = "simultaneous",
        order: list[str] | None = None,
        epochs_per_phase: int | list[int] = 1,
        train_shared: SharedMode = "always",
    ) -> None:
        check_choice("mode", mode, tuple(MODES))
        check_choice("train_shared", train_shared, ("always", "with_last", "never"))
        if order is not None and len(set(order)) != len(order):
            raise ConfigError(f"order: subnet names must be distinct, got {order}")
        lengths = [epochs_per_phase] if isinstance(epochs_per_phase, int) else list(epochs_per_phase)
        if not lengths or any(n < 1 for n in lengths):
            raise ConfigError(f"epochs_per_phase must be positive, got {epochs_per_phase}")
        if not MODES[mode].uses_phase_lengths and lengths != [1]:
            users = ", ".join(name for name, cls in MODES.items() if cls.uses_phase_lengths)
            raise ConfigError(f"epochs_per_phase is only used by {users} (mode={mode!r})")
        if order is not None and len(lengths) not in (1, len(order)):
            raise ConfigError(f"epochs_per_phase: give one value or one per subnet of order ({len(order)})")
        self.mode, self.train_shared = mode, train_shared
        self.order = list(order) if order is not None else None
        self.epochs_per_phase = epochs_per_phase
        self._lengths = lengths
        self._frozen: list[list[nn.Parameter]] = []  # per phase: parameters whose gradient is dropped
        self._phase = -1  # phase of the last training_step (for the log message)
        self._epoch, self._epoch_phase = -1, 0  # cached phase of the epoch-based modes
        self._steps: list[int] = []  # per phase: optimiser steps taken this epoch (for the epoch summary)
        self._policy: ScheduleMode | None = None  # the mode for the fitted net (on_fit_start)

    # ---- the schedule (the mode object decides; see sessrec.training.schedule_modes) -----------
    @property
    def policy(self) -> ScheduleMode:
        """The mode for the current `order` (set at fit start when not given)."""
        order = self.order or []
        lengths = self._lengths * len(order) if len(self._lengths) == 1 else list(self._lengths)
        return MODES[self.mode](order, lengths)

    @property
    def n_phases(self) -> int:
        return self.policy.n_phases

    def phase_at(self, epoch: int, substep: int) -> int:
        """Index of the phase training at (epoch, global sub-step); 0 when simultaneous."""
        return self.policy.phase_at(epoch, substep)

    def active_subnets(self, phase: int) -> list[str]:
        """Names of the subnets trained in `phase`."""
        return self.policy.active(phase)

    def trains_shared(self, phase: int) -> bool:
        if self.train_shared == "always":
            return True
        return self.train_shared == "with_last" and phase == self.n_phases - 1

    def schedule_warning(self, max_epochs: int) -> str | None:
        """What the schedule does with `max_epochs` that a user may not expect (residual), or None."""
        return self.policy.warning(max_epochs)

    def epoch_summary(self, epoch: int, steps: list[int]) -> str:
        """'TrainingSchedule(<mode>): epoch E trained a N steps, ..., shared M steps[; frozen: c]'.

        `steps[phase]`: optimiser steps taken in each phase during the epoch.
        """
        per_subnet = {name: 0 for name in self.order}
        shared = 0
        for phase, n in enumerate(steps):
            for name in self.active_subnets(phase):
                per_subnet[name] += n
            shared += n if self.trains_shared(phase) else 0
        trained = [f"{name} {n} steps" for name, n in per_subnet.items() if n]
        frozen = [name for name, n in per_subnet.items() if not n]
        text = f"TrainingSchedule({self.mode}): epoch {epoch} trained {', '.join(trained) or 'no subnet'}"
        text += f", shared {shared} steps" if shared else ", shared parameters frozen"
        return text + (f"; frozen all epoch: {', '.join(frozen)}" if frozen else "")

    # ---- set-up ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bptt = getattr(pl_module, "hparams", {}).get("bptt", 1)
        if MODES[self.mode].per_substep and bptt != 1:  # one optimiser step per window of bptt sub-steps
            raise ConfigError(f"TrainingSchedule(mode={self.mode!r}) switches subnets at every sub-step: it "
                              f"needs the model's bptt 1, got bptt {bptt} (use another mode, or bptt 1)")
        net = pl_module.net
        subnets = net.named_subnets() if isinstance(net, SessionNet) else {}
        if not subnets:
            if self.mode != "simultaneous" or self.train_shared != "always":
                raise ConfigError(f"TrainingSchedule(mode={self.mode!r}) needs a net with named subnets "
                                  f"(e.g. ParallelRNN), got {type(net).__name__}")
        names = list(subnets)
        order = self.order if self.order is not None else names
        if sorted(order) != sorted(names):
            raise ConfigError(f"order: give every subnet exactly once ({', '.join(names)}), got {order}")
        if len(self._lengths) not in (1, len(order)):
            raise ConfigError(f"epochs_per_phase: give one value or one per subnet ({len(order)})")
        self.order = list(order)
        owned = {id(p) for s in subnets.values() for p in s.parameters()}
        shared = [p for p in net.parameters() if id(p) not in owned]
        self._policy = self.policy
        self._frozen = []
        for phase in range(self.n_phases):
            active = set(self.active_subnets(phase))
            frozen = [p for name in order if name not in active for p in subnets[name].parameters()]
            self._frozen.append(frozen + ([] if self.trains_shared(phase) else shared))
        self._warn_moving_inputs(net)
        self._epoch = -1
        if trainer.max_epochs not in (None, -1) and (warning := self.schedule_warning(trainer.max_epochs)):
            rank_zero_warn(warning)
        if self._policy.per_substep:
            shared = " (+ shared)" if self.trains_shared(0) else ""
            rank_zero_info(f"TrainingSchedule({self.mode}): the subnets take turns at every sub-step: "
                           f"{', '.join(self.order)}{shared}; per-epoch step counts at each epoch's end")

    def _warn_moving_inputs(self, net: nn.Module) -> None:
        """Warn when a frozen subnet reads its input from shared parameters that train meanwhile."""
        readers = set(net.shared_table_readers) if isinstance(net, SessionNet) else set()
        moving = sorted({name for phase in range(self.n_phases) if self.trains_shared(phase)
                         for name in readers - set(self.active_subnets(phase))})
        if moving:
            rank_zero_warn(f"TrainingSchedule: subnet(s) {', '.join(moving)} read their input from the "
                           f"shared output item table (concat fusion): while frozen only their GRU stays "
                           f"fixed, the table trains (train_shared={self.train_shared!r})")

    # ---- per step ------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps = [0] * self.n_phases

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if any(self._steps):
            rank_zero_info(self.epoch_summary(trainer.current_epoch, self._steps))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        phase = self._policy.phase_at(trainer.current_epoch, pl_module.global_substep)
        if phase != self._phase and not self._policy.per_substep:  # per sub-step: changes within the batch
            self._phase = phase
            shared = " + shared" if self.trains_shared(phase) else ""
            active = ", ".join(self.active_subnets(phase))
            rank_zero_info(f"TrainingSchedule({self.mode}): epoch {trainer.current_epoch}, sub-step "
                           f"{pl_module.global_substep}: training {active}{shared}")
        pl_module.log("schedule/phase_index", float(phase), on_step=True, on_epoch=True, batch_size=1)

    def on_before_substep_step(self, trainer: L.Trainer, pl_module: L.LightningModule, substep: int) -> None:
        """Drop the frozen parameters' gradients (already all-reduced under DDP) before the step."""
        if self._policy.per_substep:
            phase = self._policy.phase_at(trainer.current_epoch, substep)
        else:  # the phase of an epoch-based mode is cached per epoch
            if trainer.current_epoch != self._epoch:
                self._epoch = trainer.current_epoch
                self._epoch_phase = self._policy.phase_at(self._epoch, substep)
            phase = self._epoch_phase
        for p in self._frozen[phase]:
            p.grad = None
        if len(self._steps) == self.n_phases:
            self._steps[phase] += 1

    # ---- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The schedule the saved run used (its phase follows from the restored epoch and sub-step)."""
        return {"mode": self.mode, "order": self.order, "epochs_per_phase": self.epochs_per_phase,
                "train_shared": self.train_shared}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        mine = {"mode": self.mode, "epochs_per_phase": self.epochs_per_phase, "train_shared": self.train_shared}
        saved = {k: state_dict.get(k) for k in mine}
        if saved != mine:
            rank_zero_warn(f"TrainingSchedule: resuming with {mine}, the checkpoint was trained with {saved}")
        if self.order is None:
            self.order = state_dict.get("order")
