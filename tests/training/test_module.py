"""SessionRecModule: a tiny model overfits a tiny fixture; optimiser options; checkpoint round trip."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from sessrec.data.batching import SessionParallelIterator
from sessrec.data.datamodule import SessionDataModule
from sessrec.errors import ConfigError
from sessrec.training.losses import loss_by_name
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule
from sessrec.training.optim import AdagradMomentum


def _fixture():
    # 5 sessions whose next item is fully determined by the current one (and 2 -> 3 or 4 by context)
    sessions = [[0, 1, 2, 3], [5, 6, 7], [0, 1, 2, 3], [8, 9, 2, 4], [5, 6, 7]]
    items = np.array([i for s in sessions for i in s], dtype=np.int64)
    offsets = np.cumsum([0] + [len(s) for s in sessions]).astype(np.int64)
    return items, offsets


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max", "top1-max"])
def test_tiny_model_overfits_tiny_fixture(loss):
    torch.manual_seed(0)
    items, offsets = _fixture()
    net = GRU4Rec(n_items=10, layers=[16])
    opt = AdagradMomentum(net.parameters(), lr=0.2, momentum=0.3)
    loss_fn = loss_by_name(loss, elu_param=0.5 if loss == "bpr-max" else 0.5)
    iterator = SessionParallelIterator(items, offsets, batch_size=2, steps_per_block=4)
    for _ in range(150):
        hidden = net.init_hidden(2)
        for block in iterator:
            for t in range(block.inputs.shape[0]):
                hidden = [h * (~block.reset[t]).unsqueeze(1) for h in hidden]
                cols = torch.cat([block.targets[t], torch.arange(10)])
                scores, hidden = net(block.inputs[t], hidden, cols)
                value = loss_fn(scores, active=block.active[t])
                opt.zero_grad()
                value.backward()
                opt.step()
                hidden = [h.detach() for h in hidden]
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for s in range(len(offsets) - 1):
            hidden = net.init_hidden(1)
            seq = items[offsets[s] : offsets[s + 1]]
            for cur, nxt in zip(seq[:-1], seq[1:]):
                scores, hidden = net(torch.tensor([cur]), hidden)
                correct += int(scores[0].argmax() == nxt)
                total += 1
    assert correct == total, f"{correct}/{total} next items ranked first"


def test_adam_takes_row_sparse_tables_but_no_momentum():
    from sessrec.training.optim import RowSparseAdam

    module = SessionRecModule(GRU4Rec(10, [4]), optimizer="adam")  # sparse_grad on: lazy rows (optim.py)
    assert type(module.configure_optimizers()) is RowSparseAdam
    with pytest.raises(ConfigError, match="momentum"):
        SessionRecModule(GRU4Rec(10, [4]), optimizer="adam", momentum=0.5)


@pytest.mark.parametrize("optimizer,sparse", [("adagrad_momentum", True), ("adamw", False), ("adam", True)])
def test_fit_then_checkpoint_round_trip(tiny_prepared, tmp_path, optimizer, sparse):
    L.seed_everything(0)
    dm = SessionDataModule(str(tiny_prepared), batch_size=16, eval_batch_size=64, steps_per_block=8,
                           train_split="train_full", val_split="test")
    net = GRU4Rec(dm.n_items, [16], sparse_grad=sparse)
    module = SessionRecModule(net, n_sample=64, optimizer=optimizer, lr=0.05, logq=1.0)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, num_sanity_val_steps=0)
    before = net.item_table.detach().clone()
    trainer.fit(module, dm)
    assert not torch.equal(before, net.item_table.detach())
    first = trainer.validate(module, dm, verbose=False)[0]
    assert 0.0 < first["val_recall@20"] <= 1.0
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    restored = SessionRecModule(GRU4Rec(dm.n_items, [16], sparse_grad=sparse), n_sample=64, optimizer=optimizer)
    restored.load_state_dict(state["state_dict"])
    again = L.Trainer(logger=False, enable_progress_bar=False).validate(restored, dm, verbose=False)[0]
    assert again["val_recall@20"] == pytest.approx(first["val_recall@20"])
    assert again["val_mrr@20"] == pytest.approx(first["val_mrr@20"])


def _fit_and_validate(data_dir, seed: int) -> dict:
    L.seed_everything(seed)
    dm = SessionDataModule(str(data_dir), batch_size=16, eval_batch_size=64, steps_per_block=8,
                           train_split="train_full", val_split="test")
    module = SessionRecModule(GRU4Rec(dm.n_items, [8], dropout_hidden=0.3), n_sample=32, lr=0.05, momentum=0.1)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_train_batches=10, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    return trainer.validate(module, dm, verbose=False)[0]


def test_same_seed_same_metrics_on_cpu(tiny_prepared):
    first, second = _fit_and_validate(tiny_prepared, 7), _fit_and_validate(tiny_prepared, 7)
    assert first == second
    assert _fit_and_validate(tiny_prepared, 8) != first  # the seed really matters (dropout, init, samples)


class _AfterBackwardCounter(L.Callback):
    """Overrides a backward hook, so the module must keep Lightning's manual_backward / step path."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls += 1


def test_direct_steps_equal_lightning_steps(tiny_prepared):
    def fit(callbacks: list) -> tuple[SessionRecModule, L.Trainer]:
        L.seed_everything(3)
        dm = SessionDataModule(str(tiny_prepared), batch_size=16, steps_per_block=8, train_split="train_full")
        module = SessionRecModule(GRU4Rec(dm.n_items, [8], dropout_hidden=0.2), n_sample=32, lr=0.05, momentum=0.1,
                                  fused_step=False)  # autograd both ways: bitwise equal (see test_fused.py)
        trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            limit_train_batches=6, callbacks=callbacks)
        trainer.fit(module, dm)
        return module, trainer

    direct, direct_trainer = fit([])
    counter = _AfterBackwardCounter()
    wrapped, wrapped_trainer = fit([counter])
    assert direct._direct and not wrapped._direct
    for module in (direct, wrapped):  # the sub-step reads the module's live buffer and sampler (its device)
        assert module._step.log_pop is module.log_pop and module._step.sampler is module.sampler is not None
        assert module.log_pop.device == module.sampler.device == module.trainer.strategy.root_device
    assert counter.calls == wrapped.global_substep == direct.global_substep > 6  # hooks ran on every sub-step
    assert direct_trainer.global_step == wrapped_trainer.global_step == direct.global_substep  # steps counted
    for a, b in zip(direct.net.parameters(), wrapped.net.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("top_n", [None, 150])
def test_screened_evaluation_equals_dense_evaluation(tiny_prepared, top_n):
    """`rank_step` (factored scores, int8 screening) gives the metrics of the dense `score_step` path."""
    from sessrec.evaluation.loop import evaluate_block
    from sessrec.evaluation.metrics import RankingMetrics

    L.seed_everything(3)
    dm = SessionDataModule(str(tiny_prepared), batch_size=16, eval_batch_size=64, steps_per_block=8,
                           train_split="train_full", val_split="test")
    module = SessionRecModule(GRU4Rec(dm.n_items, [8]), n_sample=32, lr=0.05, cutoffs=[1, 5, 20],
                              eval_top_n=top_n)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_train_batches=10, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    by_trainer = trainer.validate(module, dm, verbose=False)[0]
    assert module._eval_table is not None and module._eval_table.screened
    cands = module.candidates if top_n else None
    results = []
    for step in (module.score_step, module.rank_step):
        module.on_validation_epoch_start()
        metrics = RankingMetrics([1, 5, 20])
        with torch.no_grad():
            for block in dm.val_dataloader():
                evaluate_block(step, block, metrics, "conservative", cands)
        results.append({k: float(v) for k, v in metrics.compute().items()})
    assert results[0] == results[1]
    assert results[1]["recall@20"] == pytest.approx(by_trainer["val_recall@20"])
    assert 0 < results[1]["recall@20"] < 1
