"""The modes of `TrainingSchedule`: which subnet of a ParallelRNN trains in which phase.

A mode is one class: its `name` (the config value), how many phases it has for an `order` of subnets,
the phase at an (epoch, sub-step) and the subnets each phase trains. Defining a subclass registers it:

    class EveryOther(ScheduleMode):
        name = "every-other"
        ...

makes `TrainingSchedule(mode="every-other")` valid.
"""

from __future__ import annotations

from typing import ClassVar

MODES: dict[str, type[ScheduleMode]] = {}


class ScheduleMode:
    """Base of the modes: one phase that trains every subnet (what `Simultaneous` is)."""

    name: ClassVar[str] = ""
    uses_phase_lengths: ClassVar[bool] = False  # epochs_per_phase means something (else it must be 1)
    per_substep: ClassVar[bool] = False  # the phase changes inside a Lightning batch (needs bptt 1)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name in MODES:
            raise ValueError(f"schedule mode {cls.name!r} is defined twice ({MODES[cls.name].__qualname__})")
        MODES[cls.name] = cls

    def __init__(self, order: list[str], lengths: list[int]) -> None:
        """order: the subnets in training order; lengths: epochs per phase, one per subnet of order."""
        self.order, self.lengths = order, lengths

    @property
    def n_phases(self) -> int:
        return 1

    def phase_at(self, epoch: int, substep: int) -> int:
        """Index of the phase training at (epoch, global sub-step)."""
        return 0

    def active(self, phase: int) -> list[str]:
        """Names of the subnets trained in `phase`."""
        return list(self.order)

    def warning(self, max_epochs: int) -> str | None:
        """What this schedule does with `max_epochs` that a user may not expect, or None."""
        return None


class Simultaneous(ScheduleMode):
    """Every subnet trains at every step."""

    name = "simultaneous"


class Residual(ScheduleMode):
    """Each subnet of `order` trains for its phase's epochs in turn, then stays fixed; after the last
    phase the last subnet keeps training."""

    name = "residual"
    uses_phase_lengths = True

    @property
    def n_phases(self) -> int:
        return len(self.order)

    def phase_at(self, epoch: int, substep: int) -> int:
        for i, length in enumerate(self.lengths):
            if epoch < length:
                return i
            epoch -= length
        return len(self.order) - 1

    def active(self, phase: int) -> list[str]:
        return [self.order[phase]]

    def warning(self, max_epochs: int) -> str | None:
        lengths, total = self.lengths, sum(self.lengths)
        if max_epochs == total:
            return None
        head = f"TrainingSchedule(residual): the phases take {total} epochs but max_epochs is {max_epochs}"
        if max_epochs > total:
            return f"{head}: after its phase, {self.order[-1]!r} keeps training for {max_epochs - total} more epoch(s)"
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        never = [name for name, start in zip(self.order, starts) if start >= max_epochs]
        parts = [f"{name!r} trains {max_epochs - start} of its {length} epochs"
                 for name, start, length in zip(self.order, starts, lengths) if start < max_epochs < start + length]
        if never:
            parts.append(f"{', '.join(repr(n) for n in never)} never train{'s' if len(never) == 1 else ''}")
        return f"{head}: {'; '.join(parts)}"


class Alternating(Residual):
    """As residual, but cycling through `order` again and again."""

    name = "alternating"

    def phase_at(self, epoch: int, substep: int) -> int:
        return super().phase_at(epoch % sum(self.lengths), substep)

    def warning(self, max_epochs: int) -> str | None:
        return None


class Interleaved(ScheduleMode):
    """The active subnet changes at every mini-batch (every session-parallel sub-step)."""

    name = "interleaved"
    per_substep = True

    @property
    def n_phases(self) -> int:
        return len(self.order)

    def phase_at(self, epoch: int, substep: int) -> int:
        return substep % len(self.order)

    def active(self, phase: int) -> list[str]:
        return [self.order[phase]]
