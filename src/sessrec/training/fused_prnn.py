"""A ParallelRNN's forward and backward written out by hand: the GRUs, the fusion, the sampled scores
and the loss through the kernels of the fused GRU4Rec step (`sessrec.training.handwritten`), the
encoders through autograd.

`HandwrittenParallelStep(net, ...)(inputs, targets, samples, hidden)` computes one session-parallel
sub-step of a `ParallelRNN` (N subnets, concat or weighted fusion, own or shared input embeddings) and
returns its loss as one autograd node (`_HandwrittenLoss`) over the trainable parameters: the gradients
are computed in the forward pass, and `loss.backward()` hands them to autograd as that node's input
gradients. So they reach `.grad` through autograd's own accumulation, where DDP's reducer all-reduces
them as it does autograd's, and the optimiser, the training schedules' `on_before_substep_step` hook
(which drops frozen subnets' gradients) and `lr_scale` work unchanged.

- forward: the scored rows [W | b] of each output table gathered once; per subnet, in the order of the
  autograd forward (so dropout masks are the same draws): its input (an encoder call under autograd,
  or its columns of the output table for `ItemIdEncoder(shared_with_output=True)`), the input dropout,
  then `gru_forward`; the fused output [s_1 h_1 | ... | 1] (concat) or each [s_k h_k | s_k] (weighted)
  times the rows; the logQ offsets added as `sessrec.training.losses` adds them;
- backward: the loss gradient (`LossGrad`), two matmuls per table, `gru_backward` per subnet, then
  `torch.autograd.grad` through the encoders with their inputs' gradients (plug-in encoders need
  nothing special), and each output table's gradient as one coalesced row-sparse tensor over the union
  of its input and scored rows (dense when the model's `sparse_grad` is off), as `gather_row_sets` gives.

Gradients equal autograd's up to float rounding (tests/training/test_fused_prnn.py trains both ways).
`unsupported(module)` says why the step does not apply (the module then uses autograd): learned subnet
scales, other losses or negatives, `bptt` > 1, a strategy other than one device or DDP, a precision
other than 32-bit, parameters that are not float32 on the CPU, numba off.
"""

from __future__ import annotations

import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor

from sessrec import kernels
from sessrec.models.gru import dropout_mask
from sessrec.models.prnn import ParallelRNN
from sessrec.models.rows import row_sparse_grad
from sessrec.training.fused import FusedGRU4RecStep, fused_step_for
from sessrec.training.handwritten import FUSED_LOSSES, LossGrad, gru_backward, gru_forward
from sessrec.training.sampler import log_q_columns


class HandwrittenParallelStep:
    """One training sub-step of a ParallelRNN, gradients into `.grad` (see the module docstring).

    Args:
        net: the ParallelRNN (bound, fixed subnet scales, float32 on the CPU).
        loss, bpreg, elu_param: "cross-entropy" or "bpr-max" and BPR-max's options.
        logq: the logQ strength (cross-entropy only); log_pop (N,) and sample_alpha as
            `sessrec.training.sampler.log_q_columns` takes them.
    """

    def __init__(
        self, net: ParallelRNN, loss: str = "cross-entropy", bpreg: float = 1.0, elu_param: float = 0.5,
        logq: float = 0.0, log_pop: Tensor | None = None, sample_alpha: float = 0.0,
    ) -> None:
        reason = unsupported_net(net)
        if reason:
            raise ValueError(f"HandwrittenParallelStep does not apply: {reason}")
        if logq and (log_pop is None or log_pop.shape != (net.n_items,)):
            raise ValueError(f"logq={logq} needs log_pop of shape ({net.n_items},)")
        self.net, self.loss_grad = net, LossGrad(loss, bpreg, elu_param)
        self.logq, self.log_pop, self.sample_alpha = logq, log_pop, sample_alpha
        self.scales = [float(s) for s in net.shared.scale]  # s_k, fixed

    def __call__(
        self, inputs: Tensor, targets: Tensor, samples: Tensor, hidden: list[Tensor], into_grad: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """inputs, targets (B,), samples (S,), hidden (flat over subnets) -> (loss, new hidden); every row
        active. `loss.backward()` (or Lightning's `manual_backward`) adds the gradients to `.grad`; with
        `into_grad` they are added at once and the loss has no graph (one device, no backward hook: saves
        autograd's ~0.13 ms a step)."""
        if into_grad:
            loss, new_hidden, grads = self.gradients(inputs, targets, samples, hidden)
            for p, value in grads.items():
                p.grad = value if p.grad is None else p.grad + value
            return torch.tensor(loss, dtype=torch.float32), new_hidden
        params = [p for p in self.net.parameters() if p.requires_grad]
        loss, *new_hidden = _HandwrittenLoss.apply(self, inputs, targets, samples, hidden, *params)
        return loss, new_hidden

    def gradients(
        self, inputs: Tensor, targets: Tensor, samples: Tensor, hidden: list[Tensor]
    ) -> tuple[float, list[Tensor], dict[Tensor, Tensor]]:
        """The sub-step's loss, new hidden state and gradients {parameter: gradient} (no `.grad` is
        touched; a parameter without an entry gets no gradient, as under autograd)."""
        net, concat = self.net, self.net.fusion == "concat"
        cols = torch.cat([targets, samples])  # (C,) the scored items
        tables = net.output_tables()
        rows = [t.detach().index_select(0, cols) for t in tables]  # [(C, H_t+1)] the scored rows
        in_rows = [t.detach().index_select(0, inputs) if reads else None  # (B, H_t+1) for table readers
                   for t, reads in zip(tables, net.table_reads)]
        outs, saved, new_hidden, xs = [], [], [], []
        for (name, subnet), h in zip(net.subnets.items(), net.split_hidden(hidden).values()):
            if subnet.reads_table:
                t, part = self._read_of(name)
                x, graph = in_rows[t][:, part], None  # (B, H_k) its columns of the output table
            else:
                with torch.enable_grad():
                    graph = subnet.encoder(inputs)  # (B, D_k)
                x = graph.detach()
                graph = graph if graph.requires_grad else None
            mask = dropout_mask(x, subnet.dropout_embed)  # (B, D_k) or None: autograd's draw
            x = x if mask is None else x * mask
            out, layers = gru_forward(subnet.gru.cells, subnet.gru.dropout_hidden, x, h)  # (B, H_k)
            outs.append(out)
            saved.append(layers)
            xs.append((graph, mask))
            new_hidden += [layer[-1] for layer in layers]
        fused = self._fused_outputs(outs)  # concat: [(B, W+1)]; weighted: [(B, H_k+1)] per table
        products = [torch.mm(f, r.t()) for f, r in zip(fused, rows)]  # [(B, C)] per output table
        scores = products[0] if concat else sum(p * s for p, s in zip(products, self.scales))  # (B, C)
        if self.logq:
            scores = scores + log_q_columns(self.log_pop, targets, samples, self.sample_alpha) * (-self.logq)
        grad = torch.empty_like(scores)
        loss = self.loss_grad(scores.contiguous(), grad)  # (B, C) d loss / d scores
        return loss, new_hidden, self._backward(grad, inputs, cols, tables, rows, fused, saved, xs)

    def _read_of(self, name: str) -> tuple[int, slice]:
        """The output table a table-reading subnet reads and its columns there."""
        for t, reads in enumerate(self.net.table_reads):
            for reader, part in reads:
                if reader == name:
                    return t, part
        raise KeyError(name)

    def _fused_outputs(self, outs: list[Tensor]) -> list[Tensor]:
        """Concat: [[s_1 h_1 | ... | s_K h_K | 1]] (B, W+1); weighted: [[h_k | 1]] (B, H_k+1) per subnet."""
        if self.net.fusion == "concat":
            ones = outs[0].new_ones(outs[0].shape[0], 1)
            return [torch.cat([o * s for o, s in zip(outs, self.scales)] + [ones], dim=1)]
        return [torch.nn.functional.pad(o, (0, 1), value=1.0) for o in outs]

    def _backward(self, grad, inputs, cols, tables, rows, fused, saved, xs) -> dict[Tensor, Tensor]:
        net, grads = self.net, {}
        grad_outs, grad_in = [], [None] * len(tables)  # per subnet d h_k (B, H_k); per table input rows
        if net.fusion == "concat":
            grad_fused = [torch.mm(grad, rows[0])]  # (B, W+1)
            grad_rows = [torch.mm(grad.t(), fused[0])]  # (C, W+1)
            start = 0
            for subnet, s in zip(net.subnets.values(), self.scales):
                h = subnet.layers[-1]
                grad_outs.append(grad_fused[0][:, start : start + h] * s)  # (B, H_k)
                start += h
        else:
            grad_rows = []
            for f, r, s in zip(fused, rows, self.scales):
                g = grad * s  # (B, C)
                grad_outs.append(torch.mm(g, r)[:, :-1])  # (B, H_k)
                grad_rows.append(torch.mm(g.t(), f))  # (C, H_k+1)
        graphs, graph_grads = [], []
        for (name, subnet), layers, grad_out, (graph, mask) in zip(net.subnets.items(), saved, grad_outs, xs):
            cells = subnet.gru.cells
            need_x = graph is not None or subnet.reads_table
            cell_grads, grad_x = gru_backward(cells, grad_out.contiguous(), layers, need_x)
            for cell, g in zip(cells, cell_grads):
                for p, value in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh), g):
                    _add_grad(grads, p, value)
            if not need_x:
                continue
            grad_x = grad_x if mask is None else grad_x * mask  # (B, D_k)
            if graph is not None:
                graphs.append(graph)
                graph_grads.append(grad_x)
                continue
            t, part = self._read_of(name)
            if grad_in[t] is None:
                grad_in[t] = grad_x.new_zeros(grad_x.shape[0], tables[t].shape[1])  # (B, H_t+1)
            grad_in[t][:, part] += grad_x
        if graphs:  # the encoders' own parameters (any the graphs reach)
            with torch.enable_grad():
                others = [p for p in net.parameters() if p.requires_grad and p not in grads]
                values = torch.autograd.grad(graphs, others, graph_grads, allow_unused=True)
            for p, value in zip(others, values):
                if value is not None:
                    _add_grad(grads, p, value)
        for table, g_in, g_rows in zip(tables, grad_in, grad_rows):
            if table.requires_grad:
                ids, values = (cols, g_rows) if g_in is None else (
                    torch.cat([inputs, cols]), torch.cat([g_in, g_rows]))  # (B+C,), (B+C, H+1)
                _add_grad(grads, table, _table_grad(table, ids, values.contiguous(), net.sparse_table))
        return grads


class _HandwrittenLoss(torch.autograd.Function):
    """The sub-step's loss as one autograd node over the trainable parameters: forward runs the whole
    hand-written step (`HandwrittenParallelStep.gradients`) and keeps the gradients, backward returns
    them (times the incoming gradient). Outputs: the loss, then the new hidden state (no gradient)."""

    @staticmethod
    def forward(ctx, step: HandwrittenParallelStep, inputs: Tensor, targets: Tensor, samples: Tensor,
                hidden: list[Tensor], *params: Tensor) -> tuple[Tensor, ...]:
        loss, new_hidden, grads = step.gradients(inputs, targets, samples, hidden)
        ctx.grads = [grads.get(p) for p in params]
        ctx.mark_non_differentiable(*new_hidden)
        return (torch.tensor(loss, dtype=torch.float32), *new_hidden)

    @staticmethod
    def backward(ctx, grad_loss: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        scale = None if bool(grad_loss == 1) else grad_loss  # (a CPU tensor: no device sync)
        scaled = [g if g is None or scale is None else g * scale for g in grads]
        return (None, None, None, None, None, *scaled)


def _table_grad(table: Tensor, ids: Tensor, values: Tensor, sparse: bool) -> Tensor:
    """The gradient (N, D) of `table` whose rows `ids` (M,) received `values` (M, D): coalesced
    row-sparse (`row_sparse_grad`), or dense."""
    return row_sparse_grad(table, ids, values) if sparse else torch.zeros_like(table).index_add_(0, ids, values)


def _add_grad(grads: dict[Tensor, Tensor], p: Tensor, value: Tensor) -> None:
    """grads[p] += value (set when there is none), for parameters that train."""
    if p.requires_grad:
        grads[p] = value if p not in grads else grads[p] + value


def unsupported_net(net: object) -> str | None:
    """Why the hand-written step does not apply to `net` (None: it applies)."""
    if type(net) is not ParallelRNN:
        return f"the net is a {type(net).__name__}, not a ParallelRNN"
    if not net.is_bound:
        return "the ParallelRNN is not bound"
    if isinstance(net.shared.scale, torch.nn.Parameter):
        return "the subnet scales are learned (learn_scale)"
    params = list(net.parameters())
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
        return "parameters are not float32 on the CPU"
    if not kernels.enabled():
        return "numba is off"
    return None


FastStep = FusedGRU4RecStep | HandwrittenParallelStep


def fast_step_for(module: object) -> FastStep | None:
    """The hand-written step a `SessionRecModule` about to train uses (None: autograd; always None when
    its `fused_step` is off), and a line saying which trains and why (rank 0's log):
    `HandwrittenParallelStep` for a ParallelRNN, `FusedGRU4RecStep` (forward, backward and the
    optimiser's update in one) for a GRU4Rec."""
    if not module.hparams.get("fused_step", True):
        return None
    step, message = handwritten_step_for(module)
    step, message = (step, message) if message is not None else fused_step_for(module)
    rank_zero_info(message)
    return step


def handwritten_step_for(module: object) -> tuple[HandwrittenParallelStep | None, str | None]:
    """The hand-written step for a `SessionRecModule` about to train a ParallelRNN (None when it does not
    apply) and a line saying so (None when the net is not a ParallelRNN at all)."""
    if type(module.net) is not ParallelRNN:
        return None, None
    reason = unsupported(module)
    if reason is not None:
        return None, f"sessrec: training the p-RNN through autograd ({reason})"
    hp, loss = module.hparams, module.loss_fn
    step = HandwrittenParallelStep(module.net, loss.name, getattr(loss, "bpreg", 1.0),
                                   getattr(loss, "elu_param", 0.5), loss.logq, module.log_pop, hp.sample_alpha)
    return step, "sessrec: training the p-RNN with the hand-written step (sessrec.training.fused_prnn)"


def unsupported(module: object) -> str | None:
    """Why `HandwrittenParallelStep` does not apply to a `SessionRecModule` (None: it applies): one device
    or DDP, 32-bit precision, one-step BPTT, the cross-entropy or BPR-max loss, sampled negatives and
    `unsupported_net`. Per-sub-step callbacks (the training schedules), backward hooks, any optimiser and
    frozen parameters are fine: the loss is an autograd node (`_HandwrittenLoss`)."""
    trainer = module.trainer
    if not isinstance(trainer.strategy, (SingleDeviceStrategy, DDPStrategy)):
        return f"the strategy is {type(trainer.strategy).__name__} (one device or DDP only)"
    if type(trainer.precision_plugin) is not Precision:
        return f"the precision is {trainer.precision_plugin.precision!r} (32-bit only)"
    hp = getattr(module, "hparams", {})
    if hp.get("bptt", 1) != 1:
        return f"bptt is {hp.get('bptt')} (the hand-written step back-propagates through one sub-step only)"
    name = module.loss_fn.name or type(module.loss_fn).__name__
    if name not in FUSED_LOSSES:
        return f"the loss is {name!r} (only {' and '.join(FUSED_LOSSES)})"
    if hp.get("negatives", "sampled") != "sampled":
        return "negatives is 'all' (the full softmax: only sampled columns are hand-written)"
    return unsupported_net(module.net)
