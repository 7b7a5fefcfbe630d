"""The full softmax (`negatives="all"`): every loss over all N items with the target at column targets[i]
equals the sampled layout whose columns are the same items with the targets first; options; training."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from sessrec.data.datamodule import SessionDataModule
from sessrec.errors import ConfigError
from sessrec.training.fused import unsupported
from sessrec.training.losses import LOSS_NAMES, loss_by_name
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule

N, B = 9, 4


def _scores_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, N, generator=g, dtype=torch.float64), torch.tensor([6, 2, 7, 0])  # distinct targets


def _sampled_layout(targets: torch.Tensor) -> torch.Tensor:
    """(N,) the item order of the sampled layout: the B targets first, then every other item once."""
    rest = torch.tensor([i for i in range(N) if i not in targets.tolist()])  # (N-B,)
    return torch.cat([targets, rest])  # (N,)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_all_items_equals_sampled_layout_value_and_gradient(name: str) -> None:
    scores, targets = _scores_and_targets()
    loss = loss_by_name(name, bpreg=0.7, elu_param=0.5 if name == "bpr-max" else 0.0)
    full = scores.clone().requires_grad_(True)
    value = loss(full, targets=targets)
    value.backward()
    cols = _sampled_layout(targets)
    sampled = scores[:, cols].clone().requires_grad_(True)  # (B, B+S) targets on the diagonal, S = N-B
    expected = loss(sampled)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(full.grad[:, cols], sampled.grad, rtol=0, atol=1e-14)


def test_cross_entropy_matches_torch_with_repeated_targets() -> None:
    scores, _ = _scores_and_targets()
    targets = torch.tensor([3, 3, 1, 3])  # repeated targets: no column is special in the full softmax
    full = scores.clone().requires_grad_(True)
    loss_by_name("cross-entropy")(full, targets=targets).backward()
    reference = scores.clone().requires_grad_(True)
    F.cross_entropy(reference, targets).backward()
    assert torch.allclose(full.grad, reference.grad, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_inactive_rows_drop_out_and_mask_no_column(name: str) -> None:
    scores, targets = _scores_and_targets()
    active = torch.tensor([True, False, True, True])
    loss = loss_by_name(name)
    full = scores.clone().requires_grad_(True)
    loss(full, active=active, targets=targets).backward()
    kept = scores[active].clone().requires_grad_(True)  # the active rows alone, every column kept
    loss(kept, targets=targets[active]).backward()
    assert torch.allclose(full.grad[active], kept.grad, rtol=0, atol=1e-14)
    assert torch.equal(full.grad[~active], torch.zeros(1, N, dtype=torch.float64))


def test_loss_checks_target_shape() -> None:
    scores, targets = _scores_and_targets()
    with pytest.raises(ValueError, match="targets must be"):
        loss_by_name()(scores, targets=targets[:2])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"negatives": "some"}, "negatives must be one of sampled, all"),
    ({"negatives": "all", "logq": 1.0}, "logq=1.0 .*negatives='all'"),
])
def test_options_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SessionRecModule(GRU4Rec(10, [4]), **kwargs)


def _fit(data_dir, negatives: str, optimizer: str, epochs: int) -> tuple[SessionRecModule, list[float]]:
    L.seed_everything(0)
    dm = SessionDataModule(str(data_dir), batch_size=16, steps_per_block=8, train_split="train_full")
    module = SessionRecModule(GRU4Rec(dm.n_items, [16]), negatives=negatives, optimizer=optimizer,
                              lr=0.05 if optimizer == "adagrad_momentum" else 0.01)
    losses = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            losses.append(float(trainer.callback_metrics["train_loss_epoch"]))

    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_train_batches=10, limit_val_batches=0,
                        callbacks=[Record()])
    trainer.fit(module, dm)
    return module, losses


@pytest.mark.parametrize("optimizer", ["adagrad_momentum", "adamw"])
def test_full_softmax_trains_through_autograd(tiny_prepared, optimizer: str) -> None:
    module, losses = _fit(tiny_prepared, "all", optimizer, epochs=3)
    assert module.sampler is None
    assert module._fast is None and "negatives is 'all'" in unsupported(module)
    assert losses[-1] < losses[0] - 0.05, losses  # cross-entropy over ~400 items starts near log(400)


def test_output_table_gets_a_dense_gradient(tiny_prepared) -> None:
    module, _ = _fit(tiny_prepared, "all", "adagrad_momentum", epochs=1)
    net, n = module.net, module.net.n_items
    inputs, targets = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    loss, _ = module._step(inputs, targets, net.init_hidden(3), None)
    net.zero_grad(set_to_none=True)
    loss.backward()
    grad = net.item_table.grad  # (N, H+1): every row takes part in the softmax
    assert not grad.is_sparse and grad.shape == (n, 17)
    assert bool((grad[:, -1] != 0).all())  # every item's bias moves, not just the scored rows'
    opt = module.optimizers().optimizer
    before = net.item_table.detach().clone()
    acc = opt.state[net.item_table]["acc"].clone()
    opt.step()  # the dense update (momentum 0): p -= lr g / sqrt(acc + g^2 + eps)
    expected = before - 0.05 * grad / (acc + grad * grad + 1e-6).sqrt()
    assert torch.allclose(net.item_table.detach(), expected, rtol=0, atol=1e-6)
