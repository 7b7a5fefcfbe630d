"""One training sub-step as a pure function, and the optimiser step without Lightning's wrappers.

`substep_loss` is the loss of one session-parallel sub-step (sampled negatives or the full softmax);
`SessionRecModule` and the speed benchmarks call it. `plain_steps_suffice` and `counted` let the
module call `loss.backward()` and `optimizer.step()` directly where Lightning's `manual_backward` /
`LightningOptimizer.step` would do nothing more (~0.12 ms of a ~3.5 ms step, 1 CPU thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from sessrec.training.losses import Loss
from sessrec.training.sampler import PopularitySampler, log_q_columns

_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
_COUNTING = ("_on_before_step", "_on_after_step")  # LightningOptimizer's step counting (see `counted`)


def substep_loss(
    net: nn.Module,
    loss_fn: Loss,
    inputs: Tensor,
    targets: Tensor,
    hidden: list[Tensor],
    active: Tensor | None,
    samples: Tensor | None,
    log_q: Tensor | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """inputs, targets (B,); samples (S,) shared negatives, or None for the full softmax over all items;
    log_q (B+S,) the sampled columns' log-probabilities (logQ correction) or None; active (B,) or None
    (all rows). Returns the loss (the sum over active rows / B, as the reference) and the new hidden."""
    if samples is None:  # the full softmax: the target of row i is column targets[i]
        scores, hidden = net(inputs, hidden)  # (B, N)
        loss = loss_fn(scores, active=active, targets=targets)
    else:
        scores, hidden = net(inputs, hidden, torch.cat([targets, samples]))  # (B, B+S)
        loss = loss_fn(scores, active=active, log_q=log_q)
    if active is not None:  # the reference normalises by the full batch size, also when it shrinks
        loss = loss * active.sum() / inputs.shape[0]
    return loss, hidden


class Substep:
    """A module's autograd sub-step: (inputs, targets, hidden, active) -> (loss, new hidden) through
    `substep_loss`, with its sampler's shared negatives and the logQ correction (`loss_fn.logq`, from
    log_pop (N,) and sample_alpha), or over all items when sampler is None and `full_softmax`."""

    def __init__(self, net: nn.Module, loss_fn: Loss, sampler: PopularitySampler | None, log_pop: Tensor,
                 sample_alpha: float, full_softmax: bool) -> None:
        self.net, self.loss_fn, self.sampler = net, loss_fn, sampler
        self.log_pop, self.sample_alpha, self.full_softmax = log_pop, sample_alpha, full_softmax

    def samples(self, targets: Tensor) -> Tensor:
        """The next shared negatives (S,) (none without a sampler)."""
        return self.sampler.sample() if self.sampler is not None else targets[:0]  # (S,)

    def __call__(self, inputs: Tensor, targets: Tensor, hidden: list[Tensor], active: Tensor | None
                 ) -> tuple[Tensor, list[Tensor]]:
        if self.full_softmax:
            return substep_loss(self.net, self.loss_fn, inputs, targets, hidden, active, None)
        samples = self.samples(targets)  # (S,)
        logq = self.loss_fn.logq
        log_q = log_q_columns(self.log_pop, targets, samples, self.sample_alpha) if logq else None  # (B+S,)
        return substep_loss(self.net, self.loss_fn, inputs, targets, hidden, active, samples, log_q)


def plain_steps_suffice(module: L.LightningModule) -> bool:
    """Whether `manual_backward` and `LightningOptimizer.step` would only run `loss.backward()` and
    `optimizer.step()` plus Lightning's step counting: on one device in 32-bit precision when no
    callback and not the module override a backward or optimiser-step hook. Any other set-up (DDP,
    mixed precision, a hook) keeps Lightning's path."""
    trainer = module.trainer
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
        return False
    if any(is_overridden(h, cb, parent=L.Callback) for cb in trainer.callbacks for h in _STEP_HOOKS):
        return False
    if any(is_overridden(h, module, parent=L.LightningModule) for h in (*_STEP_HOOKS, "backward")):
        return False
    opt = module.optimizers()
    counting = all(callable(getattr(opt, name, None)) for name in _COUNTING)
    return counting and isinstance(getattr(opt, "optimizer", None), torch.optim.Optimizer)


@contextmanager
def counted(opt: LightningOptimizer) -> Iterator[None]:
    """An optimiser step run outside `LightningOptimizer.step`, counted as Lightning counts its own
    (`trainer.global_step`, the profiler). Lightning has no public call for this: this is the one place
    that uses its optimiser's private counting hooks, and `plain_steps_suffice` checks they exist."""
    opt._on_before_step()
    yield
    opt._on_after_step()


def step_optimizer(opt: LightningOptimizer, direct: bool) -> None:
    """`opt.step()` through Lightning, or with `direct` (`plain_steps_suffice`) the wrapped optimiser's own
    step, counted as Lightning counts its steps."""
    if direct:
        with counted(opt):
            opt.optimizer.step()
    else:
        opt.step()
