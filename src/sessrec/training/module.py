"""The thin LightningModule: Lightning's hooks around the training sub-steps of `sessrec.training.steps`.

The network (GRU4Rec, ParallelRNN, ...) comes in through the constructor. Training is manual: one
`training_step` processes a block of T session-parallel sub-steps, each with its own forward, backward
and optimiser step (one-step truncated BPTT, as the reference; `bptt` > 1: one per window,
`sessrec.training.bptt`), so Lightning's per-call overhead is paid once per T steps. Evaluation is
`sessrec.evaluation.module.RecurrentRanking`'s.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from sessrec.checks import check_choice, check_training_options
from sessrec.data.batching import Block
from sessrec.errors import ConfigError
from sessrec.evaluation.metrics import TieMode
from sessrec.evaluation.module import RecurrentRanking
from sessrec.models.base import SessionNet
from sessrec.training import resume
from sessrec.training.bptt import window_loss, windows
from sessrec.training.checkpoints import ITEM_MAP_KEY, check_item_map, check_state_keys, item_map
from sessrec.training.distributed import all_reduce_row_sparse, broadcast_parameters, leave_row_sparse_to_us
from sessrec.training.divergence import DivergenceWatch
from sessrec.training.fused import FusedGRU4RecStep
from sessrec.training.fused_prnn import FastStep, fast_step_for
from sessrec.training.losses import Loss, LossName, Negatives, make_loss
from sessrec.training.optim import build_optimizer, lr_scale_groups
from sessrec.training.sampler import PopularitySampler, training_sampler
from sessrec.training.steps import Substep, counted, plain_steps_suffice, step_optimizer

OptimizerName = Literal["adagrad_momentum", "adam", "adamw"]


class SessionRecModule(RecurrentRanking):
    """Trains and evaluates a session model that maps (inputs, hidden, cols) to scores.

    Args:
        net: the network, e.g. `sessrec.models.GRU4Rec`.
        loss: the loss, by name with the flat options bpreg, elu_param (bpr-max) and logq (cross-entropy)
            (`sessrec.training.losses.loss_by_name`), or a `sessrec.training.losses.Loss` object with its own
            options (`loss: {class_path: BPRMax, init_args: {bpreg: 2.0}}`; the flat options then stay unset).
        negatives: "sampled" (the reference: the in-batch targets plus n_sample shared samples) or "all":
            the full softmax over every item (small catalogues; the sampling options are then unused,
            logq > 0 is refused; trains through autograd).
        n_sample, sample_alpha, sample_cache_size: extra negatives shared by the mini-batch, drawn with
            popularity**sample_alpha, sample_cache_size ids at once (the reference's 10M).
        optimizer: "adagrad_momentum" (the reference's), "adam" or "adamw" (`sessrec.training.optim`).
        lr, momentum, weight_decay: momentum only for adagrad_momentum, weight_decay only for adam / adamw
            (a non-zero value elsewhere is refused rather than ignored).
        lr_scale: ParallelRNN subnet name -> lr multiplier of what it owns (`sessrec.training.optim`).
        cutoffs, tie_mode, eval_top_n: evaluation (`sessrec.evaluation.module.RankingModule`); with
            `--ckpt_path` these come from the command line, not the checkpoint.
        fused_step: train GRU4Rec on CPU with the hand-written step of `sessrec.training.fused`, and a
            ParallelRNN (one device or DDP) with the hand-written forward and backward of
            `sessrec.training.fused_prnn`, when they apply (the same updates up to float rounding); else autograd.
        bptt: sub-steps per backward (>= 1): 1 is the reference's one-step truncated BPTT.

    Every numeric option is checked here (`ConfigError` naming it). A NaN or infinite training loss
    stops the run (`sessrec.training.divergence.TrainingDiverged`).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: LossName | Loss = "cross-entropy",
        bpreg: float = 1.0,
        elu_param: float = 0.5,
        logq: float = 0.0,
        n_sample: int = 2048,
        sample_alpha: float = 0.5,
        sample_cache_size: int = 10_000_000,
        negatives: Negatives = "sampled",
        optimizer: OptimizerName = "adagrad_momentum",
        lr: float = 0.05,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lr_scale: dict[str, float] | None = None,
        cutoffs: list[int] = [1, 5, 10, 20],  # noqa: B006
        tie_mode: TieMode = "conservative",
        eval_top_n: int | None = None,
        fused_step: bool = True,
        bptt: int = 1,
    ) -> None:
        check_choice("optimizer", optimizer, get_args(OptimizerName))
        check_choice("negatives", negatives, get_args(Negatives))
        super().__init__(cutoffs, tie_mode, eval_top_n)
        self.save_hyperparameters(ignore=["net", "loss"] if isinstance(loss, Loss) else ["net"])  # data only
        if not isinstance(net, SessionNet):
            raise ConfigError(f"net must be a sessrec.models.base.SessionNet (GRU4Rec, ParallelRNN, a subclass), got "
                              f"{type(net).__name__}")
        self.net = net
        self.automatic_optimization = False
        self.loss_fn = make_loss(loss, bpreg, elu_param, logq)
        options = {**self.hparams, "logq": self.loss_fn.logq}
        check_training_options(options, net.named_subnets() or None)  # numbers, combinations
        self.divergence = DivergenceWatch()
        self.sampler: PopularitySampler | None = None
        self.register_buffer("log_pop", torch.zeros(0), persistent=False)
        self.global_substep = 0  # session-parallel sub-steps trained so far (saved in checkpoints)
        self._hidden: list[Tensor] | None = None  # the training hidden state (B, H_l) per layer
        self._resume = resume.ResumeState()  # from a checkpoint, consumed at the train start
        self._row_sparse: list[nn.Parameter] = []  # tables DDP ignores (see sessrec.training.distributed)
        self._direct = False  # backward and optimiser step without Lightning's wrappers (on_train_start)
        self._fast: FastStep | None = None  # a hand-written step, when one applies (on_train_start)
        self._item_map_cache: tuple[Any, dict[str, Any]] | None = None  # (item ids, their item_map)
        self._step = Substep(net, self.loss_fn, None, self.log_pop, sample_alpha, negatives == "all")  # (train start)

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        counts = torch.as_tensor(self.trainer.datamodule.train_counts(), dtype=torch.float64)  # (N,)
        if counts.numel() != self.net.n_items:
            raise ConfigError(f"data has {counts.numel()} items but the model was built for {self.net.n_items}")
        self.set_candidates(counts)
        hp = self.hparams
        if stage == "fit":  # on the device training runs on (Lightning moves the module there after setup)
            device = self.trainer.strategy.root_device
            self.log_pop = counts.clamp_min(1).log().float().to(device)  # (N,)
            self.sampler = training_sampler(counts, hp, self.global_rank, device)
            self._resume.restore_sampler(self.sampler, self.global_rank)

    def configure_model(self) -> None:
        """Bind a net that reads item features (ParallelRNN) to the data module's catalogue; Lightning
        calls this before the optimiser, the strategy wrap and checkpoint loading."""
        if self._trainer is None:
            return
        self.net.bind_to_data(getattr(self.trainer, "datamodule", None))
        if self.trainer.world_size > 1:  # DDP cannot bucket sparse gradients: we average them ourselves
            self._row_sparse = leave_row_sparse_to_us(self)

    def on_fit_start(self) -> None:
        if self._row_sparse:  # DDP broadcasts only the parameters it owns
            broadcast_parameters(self._row_sparse)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return build_optimizer(hp.optimizer, lr_scale_groups(self.net, hp.lr, hp.lr_scale), hp.lr, hp.momentum,
                               hp.weight_decay)

    def on_train_start(self) -> None:  # the module is on its device now
        hp = self.hparams
        self._step = Substep(self.net, self.loss_fn, self.sampler, self.log_pop, hp.sample_alpha,
                             hp.negatives == "all")
        self._direct = plain_steps_suffice(self)
        self._fast = fast_step_for(self)
        self._hidden = self._resume.take_hidden(self.trainer.world_size, self.global_rank, self.device)
        self._resume.take_rng(self.device)

    # ---- training ---------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._hidden = None  # the reference zeroes the hidden state at each epoch start

    def on_train_epoch_end(self) -> None:
        self._check_diverged()

    def training_step(self, block: Block, batch_idx: int) -> None:
        opt = self.optimizers()
        hooks = [cb.on_before_substep_step for cb in self.trainer.callbacks if hasattr(cb, "on_before_substep_step")]
        steps, batch = block.inputs.shape
        hidden = self._hidden if self._hidden is not None else self.net.init_hidden(batch, self.device)
        full = block.n_events == steps * batch
        losses = torch.zeros(steps, device=self.device)  # (T,) each sub-step's loss, checked once per block
        keep_all = (~block.reset).unsqueeze(2).to(losses.dtype)  # (T, B, 1): 0 where a new session starts
        for start, stop in windows(steps, self.hparams.bptt):  # one optimiser step per window
            fast = self._fast if full else None  # (bptt 1; a padded step takes autograd, with masking)
            if isinstance(fast, FusedGRU4RecStep):  # GRU4Rec: forward, backward and update in one
                with counted(opt):
                    losses[start], hidden = fast(*self._substep(block, keep_all, start, hidden))
                self.global_substep += 1
                continue
            opt.zero_grad(set_to_none=True)
            if fast is not None:  # the p-RNN's hand-written step: gradients into .grad, or an autograd node
                loss, hidden = fast(*self._substep(block, keep_all, start, hidden), into_grad=self._direct)
                losses[start] = loss.detach()
            else:
                loss, hidden = window_loss(self._step, block, keep_all, start, stop, hidden, full, losses)
            if loss.requires_grad:  # (not when the hand-written step put the gradients in .grad)
                loss.backward() if self._direct else self.manual_backward(loss)
            if self._row_sparse:
                all_reduce_row_sparse(self._row_sparse, self.trainer.world_size)
            for hook in hooks:  # e.g. TrainingSchedule drops the frozen subnets' gradients here
                hook(self.trainer, self, self.global_substep)
            step_optimizer(opt, self._direct)
            self.global_substep += stop - start
            hidden = [h.detach() for h in hidden]
        self._hidden = hidden
        if self.divergence.watch(losses, self.global_substep):
            self._check_diverged()
        self.log("train_loss", losses.mean(), prog_bar=True, on_epoch=True, batch_size=block.n_events)

    def _substep(self, block: Block, keep: Tensor, t: int, hidden: list[Tensor]) -> tuple:
        """A hand-written step's arguments for sub-step t: inputs, targets, samples, hidden (reset rows zeroed)."""
        targets = block.targets[t]
        return block.inputs[t], targets, self._step.samples(targets), [h * keep[t] for h in hidden]

    def _item_map(self) -> dict[str, Any] | None:
        """`item_map` of the data module's items (hashed once per item array), None without one."""
        item_ids = getattr(getattr(self.trainer, "datamodule", None), "item_ids", None)
        if item_ids is None:
            return None
        cached = self._item_map_cache
        if cached is None or cached[0] is not item_ids:
            cached = self._item_map_cache = (item_ids, item_map(item_ids))
        return cached[1]

    def _check_diverged(self) -> None:
        hp, loss = self.hparams, self.loss_fn.name or type(self.loss_fn).__name__
        self.divergence.check(self._trainer, f"lr={hp.lr}, loss={loss}, optimizer={hp.optimizer}")

    # ---- checkpoints (exact mid-epoch resume: sessrec.training.resume) -------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_diverged()  # never save weights trained through a NaN loss
        resume.write(checkpoint, self, self._hidden)
        current = self._item_map()
        if current is not None:
            checkpoint[ITEM_MAP_KEY] = current

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None:  # every parameter exists now (configure_model ran): check the keys
            current = self._item_map()
            if current is not None:
                data_dir = getattr(self.trainer.datamodule, "data_dir", "this data")
                check_item_map(self.trainer.ckpt_path, checkpoint, current, data_dir)
            check_state_keys(self.trainer.ckpt_path, checkpoint["state_dict"], self)  # before the strict load
        self._resume = resume.ResumeState.read(checkpoint)
        self.global_substep = self._resume.substep
        self._resume.restore_sampler(self.sampler, self.global_rank)
