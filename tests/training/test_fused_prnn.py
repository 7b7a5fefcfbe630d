"""The hand-written p-RNN step (sessrec.training.fused_prnn) against autograd: same loss, hidden state and
gradients for one step; same weights after training through the module, with a training schedule."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from sessrec import kernels
from sessrec.data.datamodule import SessionDataModule
from sessrec.encoders import Catalogue, DenseEncoder, ItemIdEncoder
from sessrec.features import write_dense
from sessrec.models.prnn import ParallelRNN
from sessrec.training.fused_prnn import HandwrittenParallelStep, unsupported_net
from sessrec.training.losses import loss_by_name
from sessrec.training.module import SessionRecModule
from sessrec.training.sampler import log_q_columns
from sessrec.training.schedules import TrainingSchedule

pytestmark = pytest.mark.skipif(not kernels.enabled(), reason="the hand-written step needs numba")

N = 30


def _catalogue(folder: Path, n_items: int = N) -> Catalogue:
    ids = [str(i) for i in range(n_items)]
    rng = np.random.default_rng(0)
    write_dense(folder / "image.npy", rng.standard_normal((n_items, 6)).astype(np.float32), ids)
    return Catalogue(np.array(ids, dtype=object), folder)


def _net(catalogue: Catalogue, fusion: str, id_encoder: str, sparse: bool = True, **kw) -> ParallelRNN:
    torch.manual_seed(0)
    layers = {"id": [5], "image": [4, 3], "text": [4]}
    encoders = {
        "id": ItemIdEncoder(5, shared_with_output=id_encoder == "shared", sparse_grad=sparse),
        "image": DenseEncoder("image.npy", projection=4),  # a plug-in-like encoder with parameters
        "text": DenseEncoder("image.npy"),  # no parameters: its input takes no gradient
    }
    net = ParallelRNN(catalogue.n_items, encoders, layers, fusion=fusion, catalogue=catalogue, sparse_grad=sparse,
                      subnet_scale={"image": 0.5}, **kw)
    with torch.no_grad():
        for table in net.output_tables():
            table[:, -1].uniform_(-0.5, 0.5)  # a non-zero bias, so its gradient path is exercised
    return net


def _grads(net: ParallelRNN) -> dict[str, torch.Tensor]:
    return {name: p.grad.to_dense() if p.grad.is_sparse else p.grad for name, p in net.named_parameters()
            if p.grad is not None}


@pytest.mark.parametrize(
    ("fusion", "id_encoder", "loss", "logq", "dropout", "sparse"),
    [("concat", "own", "cross-entropy", 0.0, 0.0, True), ("concat", "shared", "cross-entropy", 1.0, 0.3, True),
     ("weighted", "own", "bpr-max", 0.0, 0.25, True), ("weighted", "shared", "cross-entropy", 0.5, 0.0, True),
     ("concat", "own", "bpr-max", 0.0, 0.2, False)],
)
def test_one_step_equals_autograd(tmp_path, fusion, id_encoder, loss, logq, dropout, sparse):
    nets = [_net(_catalogue(tmp_path), fusion, id_encoder, sparse, dropout_embed=dropout, dropout_hidden=dropout)]
    nets.append(copy.deepcopy(nets[0]))
    loss_fn = loss_by_name(loss, logq=logq)
    log_pop = torch.rand(N) * 3
    gen = torch.Generator().manual_seed(1)
    inputs, targets = torch.randint(N, (6,), generator=gen), torch.randint(N, (6,), generator=gen)
    samples = torch.randint(N, (9,), generator=gen)  # ids repeat within and across the sets
    hidden = [torch.randn(6, h, generator=gen) for h in nets[0].hidden_sizes]
    out = []
    nets.append(copy.deepcopy(nets[0]))
    for k, net in enumerate(nets):
        net.train()
        torch.manual_seed(5)  # the dropout masks' stream
        if k == 0:
            log_q = log_q_columns(log_pop, targets, samples, 0.5) if logq else None
            scores, new_hidden = net(inputs, hidden, torch.cat([targets, samples]))
            value = loss_fn(scores, log_q=log_q)
            value.backward()
        else:
            step = HandwrittenParallelStep(net, loss, logq=logq, log_pop=log_pop, sample_alpha=0.5)
            value, new_hidden = step(inputs, targets, samples, hidden, into_grad=k == 2)
            if k == 1:
                assert all(p.grad is None for p in net.parameters())  # only backward hands them over
                value.backward()
        out.append((float(value.detach()), [h.detach() for h in new_hidden], _grads(net)))
    (loss_a, hidden_a, grads_a), *handwritten = out
    for loss_b, hidden_b, grads_b in handwritten:  # through the autograd node, and straight into .grad
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
        for a, b in zip(hidden_a, hidden_b):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        assert grads_a.keys() == grads_b.keys() and "subnets.text.gru.cells.0.weight_ih" in grads_a
        for name, grad in grads_a.items():
            torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    if sparse:  # row-sparse where autograd's are
        for net in nets[1:]:
            for (name, a), b in zip(nets[0].named_parameters(), net.parameters()):
                assert a.grad.is_sparse == b.grad.is_sparse, name


def test_refuses_learned_scales(tmp_path):
    net = _net(_catalogue(tmp_path), "concat", "own", learn_scale=True)
    assert "learn_scale" in unsupported_net(net)
    with pytest.raises(ValueError, match="learn_scale"):
        HandwrittenParallelStep(net)


@pytest.mark.parametrize("mode", ["alternating", "interleaved"])
def test_trains_as_autograd_through_the_module(tiny_prepared: Path, tmp_path: Path, mode: str, capsys):
    """Through SessionRecModule with a training schedule (frozen subnets' gradients dropped by its hook):
    the same weights up to float rounding, and the module says which step trained."""
    dm = SessionDataModule(str(tiny_prepared), batch_size=16, eval_batch_size=64, steps_per_block=4,
                           train_split="train_full", val_split="test")
    catalogue = _catalogue(tmp_path, dm.n_items)
    nets = []
    for fused in (False, True):
        net = _net(catalogue, "concat", "own", dropout_hidden=0.2)
        module = SessionRecModule(net, n_sample=32, lr=0.1, momentum=0.3, logq=1.0, fused_step=fused)
        schedule = TrainingSchedule(mode=mode, order=["id", "image", "text"], epochs_per_phase=1)
        trainer = L.Trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=0, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=[schedule])
        L.seed_everything(0)
        trainer.fit(module, dm)
        assert isinstance(module._fast, HandwrittenParallelStep) == fused
        nets.append(net)
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    initial = _net(catalogue, "concat", "own", dropout_hidden=0.2)
    assert not torch.equal(nets[1].shared.item_table, initial.shared.item_table)  # it trained
