"""Losses as classes: a new loss is one class; `loss: {class_path, init_args}` in configs; the names stay."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from sessrec.cli import main
from sessrec.errors import ConfigError
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.losses import LOSSES, BPRMax, CrossEntropy, Loss, loss_by_name
from sessrec.training.module import SessionRecModule


def _scores() -> torch.Tensor:
    return torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 1.5, 0.7, -0.2]])


def test_objects_equal_the_named_losses():
    assert BPRMax(bpreg=2.0, elu_param=0.5)(_scores()) == loss_by_name("bpr-max", bpreg=2.0)(_scores())
    log_q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert CrossEntropy(logq=1.0)(_scores(), log_q=log_q) == loss_by_name("cross-entropy", logq=1.0)(
        _scores(), log_q=log_q)
    assert set(LOSSES) >= {"cross-entropy", "bpr-max", "top1", "top1-max", "bpr"}


def test_a_new_loss_is_one_class():
    class Hinge(Loss):
        name = "test-hinge"

        def __init__(self, margin: float = 1.0) -> None:
            super().__init__()
            self.margin = margin

        def forward(self, scores, active=None, log_q=None, targets=None):
            target = scores.diagonal().unsqueeze(1)  # (B, 1)
            return torch.relu(self.margin - target + scores).mean()

    try:
        module = SessionRecModule(GRU4Rec(n_items=10, layers=[4]), loss=Hinge(0.5))
        assert module.loss_fn.margin == 0.5 and "loss" not in module.hparams  # objects are not hparams
        assert loss_by_name("test-hinge")(_scores()) > 0  # registered by name as well
    finally:
        LOSSES.pop("test-hinge")


def test_flat_options_with_an_object_are_refused():
    with pytest.raises(ConfigError, match="set bpreg / elu_param / logq in its init_args"):
        SessionRecModule(GRU4Rec(n_items=10, layers=[4]), loss=BPRMax(), bpreg=2.0)
    with pytest.raises(ConfigError, match="negatives='all'"):
        SessionRecModule(GRU4Rec(n_items=10, layers=[4]), loss=CrossEntropy(logq=1.0), negatives="all")


def test_a_loss_class_in_a_config_trains_fused_and_tests(tiny_prepared, tmp_path, caplog):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                    "logger": False, "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "sessrec.training.module.SessionRecModule", "init_args": {
            "net": {"class_path": "sessrec.models.gru4rec.GRU4Rec", "init_args": {"layers": [8]}},
            "loss": {"class_path": "sessrec.training.losses.BPRMax", "init_args": {"bpreg": 0.5}},
            "n_sample": 16}},
        "data": {"data_dir": str(tiny_prepared), "batch_size": 16},
    }))
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    assert exit_info.value.code == 0
    assert "training with the fused step" in caplog.text  # the class is still the fused bpr-max
    (ckpt,) = (tmp_path / "run").rglob("*.ckpt")
    assert "loss" not in torch.load(ckpt, weights_only=True)["hyper_parameters"]  # plain data only
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    assert exit_info.value.code == 0
