"""Training, evaluation and CLI guards: options checked at construction, a NaN loss stops the run,
non-finite scores never hit, checkpoints of another model, evaluation options over a checkpoint's,
preflight of the output folders and the Trainer options, YAML errors, one saved config per command."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from robust_helpers import assert_one_line, parse_test_metrics, run_cli, tiny_config

from sessrec.cli import main
from sessrec.data.datamodule import SessionDataModule
from sessrec.errors import ConfigError
from sessrec.evaluation.metrics import RankingMetrics, target_ranks
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def trained(small: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A 2-epoch GRU4Rec fit (the tiny config, default cutoffs): its config and last.ckpt."""
    tmp = tmp_path_factory.mktemp("trained")
    config = tiny_config(tmp / "tiny.yaml", small / "prepared", tmp / "run")
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config)])
    assert stop.value.code == 0
    return config, tmp / "run" / "checkpoints" / "last.ckpt"


# ---- 1. options checked at construction -------------------------------------------------------------
@pytest.mark.parametrize("option, value", [
    ("lr", NAN), ("lr", INF), ("lr", 0.0), ("logq", NAN), ("logq", -1.0), ("bpreg", INF), ("elu_param", NAN),
    ("momentum", 1.0), ("momentum", NAN), ("weight_decay", -0.1), ("sample_alpha", NAN), ("n_sample", -1),
    ("sample_cache_size", 0), ("eval_top_n", 0), ("eval_top_n", -5), ("cutoffs", [0, 5]), ("cutoffs", []),
    ("cutoffs", [5, 5]), ("cutoffs", [1.5]), ("tie_mode", "optimistic"), ("eval_top_n", 20),
])
def test_module_rejects_option(option: str, value) -> None:  # eval_top_n 20: the default cutoffs reach 20
    with pytest.raises(ConfigError, match=option):
        SessionRecModule(GRU4Rec(n_items=10, layers=[8]), **{option: value})


def test_weight_decay_is_refused_where_ignored() -> None:
    with pytest.raises(ConfigError, match="weight_decay=0.1 is not supported by optimizer='adagrad_mom"):
        SessionRecModule(GRU4Rec(n_items=10, layers=[8]), weight_decay=0.1)
    module = SessionRecModule(GRU4Rec(n_items=10, layers=[8], sparse_grad=False), optimizer="adamw",
                              weight_decay=0.1)
    assert module.configure_optimizers().param_groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize("option", ["batch_size", "eval_batch_size", "steps_per_block"])
@pytest.mark.parametrize("value", [0, -3])
def test_datamodule_names_the_option(small: Path, option: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"^{option} must be a positive integer"):
        SessionDataModule(str(small / "prepared"), **{option: value})


def test_nan_lr_in_a_config(small: Path, tmp_path: Path, capsys) -> None:
    config = tiny_config(tmp_path / "c.yaml", small / "prepared", tmp_path / "run")
    config.write_text(config.read_text().replace("    lr: 0.1", "    lr: .nan"))
    assert_one_line(run_cli(["fit", "--config", config], capsys), "lr must be a finite number, got nan")
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---- 2. a non-finite training loss stops the run -------------------------------------------------------
class Poison(Callback):
    """Sets every parameter of the net to NaN before the training block that starts at step `at`."""

    def __init__(self, at: int = 8) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            with torch.no_grad():
                for p in pl_module.net.parameters():
                    p.fill_(NAN)


@pytest.mark.parametrize("fused", ["true", "false"])
def test_nan_loss_stops_training(small: Path, tmp_path: Path, capsys, fused: str) -> None:
    config = tiny_config(tmp_path / "c.yaml", small / "prepared", tmp_path / "run", every=4)
    result = run_cli(["fit", "--config", config, "--model.init_args.fused_step", fused,
                      "--trainer.callbacks+=test_training_guards.Poison"], capsys)
    # steps_per_block 4: the block after optimiser step 8 starts with step 9
    assert_one_line(result, "training loss became nan at step 9", "lr=0.1")
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "step=12.ckpt" not in saved and "step=8.ckpt" in saved  # no checkpoint of NaN weights


def test_nan_check_is_once_per_block() -> None:
    """The module notes the first bad step on the device; the error names it."""
    module = SessionRecModule(GRU4Rec(n_items=10, layers=[8]))
    assert module.divergence.watch(torch.tensor([1.0, 2.0, 3.0, 4.0]), last_step=8)  # CPU: check every block
    module._check_diverged()
    module.divergence.watch(torch.tensor([1.0, 2.0, INF, NAN]), last_step=12)
    with pytest.raises(ConfigError, match="loss became inf at step 11"):
        module._check_diverged()


# ---- 3. non-finite scores never hit ----------------------------------------------------------------------
def test_all_nan_scores_give_recall_zero() -> None:
    scores = torch.full((3, 30), NAN)
    for mode in ("standard", "conservative", "median"):
        ranks = target_ranks(scores, torch.tensor([0, 5, 29]), mode)
        assert ranks.tolist() == [30.0] * 3
        metric = RankingMetrics((1, 5, 20))
        metric.update(ranks)
        assert all(v == 0 for v in metric.compute().values())


def test_non_finite_scores_hand_computed() -> None:
    scores = torch.tensor([
        [INF, INF, INF, INF],      # target +inf, everything tied at +inf: last, not "all tied first"
        [1.0, INF, NAN, -INF],     # finite target: +inf above, NaN and -inf not
        [-INF, 0.0, 1.0, 2.0],     # target -inf: last
        [NAN, NAN, 5.0, NAN],      # target finite, NaN others never above
    ])
    targets = torch.tensor([0, 0, 0, 2])
    assert target_ranks(scores, targets, "standard").tolist() == [4.0, 2.0, 4.0, 1.0]
    assert target_ranks(scores, targets, "conservative").tolist() == [4.0, 2.0, 4.0, 1.0]
    # candidates {0, 1}: row 3's target (item 2) is outside the set, against two NaNs: first
    assert target_ranks(scores, targets, "median", torch.tensor([0, 1])).tolist() == [2.0, 2.0, 2.0, 1.0]


def test_metrics_count_nan_or_inf_ranks_as_misses() -> None:
    metric = RankingMetrics((1, 5))
    metric.update(torch.tensor([1.0, NAN, INF, 2.0]))
    out = metric.compute()
    assert out["recall@1"].item() == 0.25 and out["recall@5"].item() == 0.5
    assert math.isclose(out["mrr@5"].item(), (1 + 0.5) / 4)


# ---- 5. checkpoints of another model; evaluation options over the checkpoint's --------------------------
def test_checkpoint_of_another_architecture(trained, tmp_path: Path, capsys) -> None:
    config, ckpt = trained
    deeper = ["test", "--config", config, "--model.init_args.net.init_args.layers", "[16, 16]",
              "--ckpt_path", ckpt]
    assert_one_line(run_cli(deeper, capsys), str(ckpt), "does not fit the model", "missing", "net.gru")
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"]["net.extra.weight"] = torch.zeros(3)
    other = tmp_path / "extra.ckpt"
    torch.save(state, other)
    assert_one_line(run_cli(["test", "--config", config, "--ckpt_path", other], capsys),
              str(other), "1 unexpected keys (e.g. 'net.extra.weight')")


def test_gru4rec_checkpoint_for_a_parallel_rnn(trained, small: Path, tmp_path: Path, capsys) -> None:
    config, ckpt = trained
    prnn = tmp_path / "prnn.yaml"
    prnn.write_text(config.read_text().replace(
        "      class_path: sessrec.models.gru4rec.GRU4Rec\n      init_args:\n        layers: [16]\n",
        "      class_path: sessrec.models.prnn.ParallelRNN\n      init_args:\n"
        "        encoders: {id: {class_path: ItemIdEncoder, init_args: {dim: 8}}}\n        layers: [16]\n",
    ))
    result = run_cli(["test", "--config", prnn, "--ckpt_path", ckpt], capsys)
    assert_one_line(result, str(ckpt), "does not fit the model")


def test_eval_options_win_over_the_checkpoint(trained, capsys) -> None:
    config, ckpt = trained
    result = run_cli(["test", "--config", config, "--model.init_args.cutoffs", "[3, 7]",
                      "--model.init_args.tie_mode", "standard", "--ckpt_path", ckpt], capsys)
    assert result.code == 0, result.err[-2000:]
    metrics = parse_test_metrics(result.out)
    assert set(metrics) == {"test_recall@3", "test_recall@7", "test_mrr@3", "test_mrr@7"}


# ---- 6. preflight ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["default_root_dir", "dirpath", "logger"])
def test_output_folder_under_a_file(small: Path, tmp_path: Path, capsys, where: str) -> None:
    config = tiny_config(tmp_path / "c.yaml", small / "prepared", tmp_path / "run")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    extra = {
        "default_root_dir": ["--trainer.default_root_dir", blocker / "run"],
        "dirpath": ["--trainer.callbacks.dirpath", blocker / "ckpt"],
        "logger": ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", blocker / "logs"],
    }[where]
    result = run_cli(["fit", "--config", config, *extra], capsys)
    assert_one_line(result, str(blocker), "is a file, not a folder")
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_output_folder_not_writable(small: Path, tmp_path: Path, capsys) -> None:
    config = tiny_config(tmp_path / "c.yaml", small / "prepared", tmp_path / "run")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        result = run_cli(["fit", "--config", config, "--trainer.default_root_dir", locked / "run"], capsys)
    finally:
        locked.chmod(0o700)
    assert_one_line(result, "trainer.default_root_dir", "not writable")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_cuda(trained, capsys) -> None:
    config, _ = trained
    result = run_cli(["fit", "--config", config, "--trainer.accelerator", "gpu"], capsys)
    assert_one_line(result, "trainer.accelerator", "--trainer.accelerator cpu")


@pytest.mark.parametrize("args, says", [
    (["--trainer.max_epochs", "-5"], "trainer.max_epochs must be an integer >= 0, or -1"),
    (["--trainer.devices", "0"], "trainer: `Trainer(devices='0')`"),  # Lightning's own check, one line
])
def test_trainer_options(trained, capsys, args: list[str], says: str) -> None:
    config, _ = trained
    assert_one_line(run_cli(["fit", "--config", config, *args], capsys), says)


def test_yaml_syntax_error_names_file_and_line(trained, tmp_path: Path, capsys) -> None:
    config, _ = trained
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: [1\n  logger: false\n")
    result = run_cli(["fit", "--config", config, "--config", bad], capsys)
    assert_one_line(result, str(bad), "invalid YAML at line 3")


# ---- 7. test / predict keep fit's config.yaml -----------------------------------------------------------
def test_evaluation_keeps_the_fit_config(trained, capsys) -> None:
    config, ckpt = trained
    run = ckpt.parent.parent
    fit_config = (run / "config.yaml").read_text()
    result = run_cli(["test", "--config", config, "--model.init_args.cutoffs", "[2]", "--ckpt_path", ckpt],
                     capsys)
    assert result.code == 0, result.err[-2000:]
    assert (run / "config.yaml").read_text() == fit_config
    assert "- 2" in (run / "config-test.yaml").read_text()
