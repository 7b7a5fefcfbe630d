"""Batch sizes above the session count, empty splits, and constructor errors that name their option."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from robust_helpers import assert_one_line, run_cli, tiny_config

from sessrec.cli import main
from sessrec.data.datamodule import SessionDataModule

REPO = Path(__file__).resolve().parents[2]
VALIDATED = REPO / "configs" / "trainer" / "validated.yaml"


def _events(sessions: range) -> str:
    """3 events a session over items 0..4, one minute apart."""
    rows = [f"{s}\t{(s + i) % 5}\t{1_700_000_000 + 600 * s + 60 * i}" for s in sessions for i in range(3)]
    return "SessionId\tItemId\tTime\n" + "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def no_valid(tmp_path_factory) -> Path:
    """A prepared folder from pre-split files without --valid: its `valid` split is empty."""
    root = tmp_path_factory.mktemp("no_valid")
    (root / "tr.tsv").write_text(_events(range(40)))
    (root / "te.tsv").write_text(_events(range(40, 50)))
    with pytest.raises(SystemExit) as stop:
        main(["prepare", "--train", str(root / "tr.tsv"), "--test", str(root / "te.tsv"),
              "--out", str(root / "prepared")])
    assert stop.value.code == 0
    return root / "prepared"


@pytest.fixture()
def config(no_valid: Path, tmp_path: Path) -> Path:
    return tiny_config(tmp_path / "c.yaml", no_valid, tmp_path / "run")


# ---- batch sizes above the number of sessions -------------------------------------------------------
def test_batch_size_is_capped_at_the_sessions(small: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A batch of 100,000 slots over a few hundred sessions: a (B, B+S) score matrix of 40 GB before."""
    sessrec_log = logging.getLogger("sessrec")  # through caplog, whichever test set up the CLI's handler
    monkeypatch.setattr(sessrec_log, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(sessrec_log, "propagate", True)
    data = SessionDataModule(str(small / "prepared"), batch_size=100_000, eval_batch_size=100_000,
                             train_split="train_full")
    n_train = data.split("train").n_sessions
    with caplog.at_level(logging.WARNING, logger="sessrec"):
        block = next(iter(data.train_dataloader()))
    assert block.batch_size == n_train
    assert f"data.batch_size 100000 is larger than the {n_train} sessions of data.train_split 'train_full'" \
        in caplog.text
    caplog.clear()
    assert next(iter(data.test_dataloader())).batch_size == data.split("test").n_sessions
    assert not caplog.text  # evaluation: capped silently (the metrics do not change)


def test_normal_batch_sizes_are_unchanged(small: Path, caplog) -> None:
    data = SessionDataModule(str(small / "prepared"), batch_size=16, eval_batch_size=32)
    assert next(iter(data.train_dataloader())).batch_size == 16
    assert next(iter(data.val_dataloader())).batch_size == 32
    exact = SessionDataModule(str(small / "prepared"), batch_size=data.split("train").n_sessions)
    assert next(iter(exact.train_dataloader())).batch_size == data.split("train").n_sessions
    assert "larger than" not in caplog.text


# ---- empty splits ------------------------------------------------------------------------------------
def test_validating_on_an_empty_split_is_refused_before_training(config: Path, no_valid: Path, tmp_path: Path,
                                                                 capsys) -> None:
    """EarlyStopping on val_mrr@20 failed after a whole epoch with Lightning's RuntimeError."""
    result = run_cli(["fit", "--config", config, "--config", VALIDATED], capsys)
    assert_one_line(result, f"data.val_split 'valid' of {no_valid} is empty (0 sessions)", "limit_val_batches")
    assert not list(tmp_path.glob("run/**/*.ckpt"))


def test_an_empty_valid_split_is_fine_when_nothing_validates(config: Path, tmp_path: Path, capsys) -> None:
    result = run_cli(["fit", "--config", config, "--trainer.max_epochs", "1"], capsys)
    assert result.code == 0, result.err[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_training_on_an_empty_split_says_so(config: Path, no_valid: Path, capsys) -> None:
    """It said 'every item count is 0: nothing to sample'."""
    result = run_cli(["fit", "--config", config, "--data.train_split", "valid"], capsys)
    assert_one_line(result, f"data.train_split 'valid' of {no_valid} is empty (0 sessions)")


@pytest.mark.parametrize("command, option", [("test", "test_split"), ("validate", "val_split"),
                                             ("predict", "predict_split")])
def test_evaluating_an_empty_split_is_refused(config: Path, no_valid: Path, tmp_path: Path, capsys,
                                              command: str, option: str) -> None:
    """`test` and `validate` exited 0 without metrics, `predict` without writing a file."""
    scored = ["--trainer.limit_val_batches", "1.0"] if command == "validate" else []  # tiny_config: 0
    result = run_cli([command, "--config", config, f"--data.{option}", "valid", *scored], capsys)
    assert_one_line(result, f"data.{option} 'valid' of {no_valid} is empty (0 sessions)")


def test_validate_with_validation_turned_off_says_so(small: Path, tmp_path: Path, capsys) -> None:
    """`validate` with the configs' `limit_val_batches: 0` exited 0 without scoring anything."""
    config = tiny_config(tmp_path / "c.yaml", small / "prepared", tmp_path / "run")
    result = run_cli(["validate", "--config", config, "--trainer.limit_val_batches", "0"], capsys)
    assert_one_line(result, "trainer.limit_val_batches is 0", "--trainer.limit_val_batches 1.0")


# ---- constructor errors name the option as the config writes it ---------------------------------------
@pytest.mark.parametrize("option, value, says", [
    ("model.init_args.lr", "-0.1", "model.lr must be > 0, got -0.1"),
    ("model.init_args.n_sample", "-1", "model.n_sample must be an integer >= 0, got -1"),
    ("model.init_args.net.init_args.layers", "[0]", "model.net.layers must be a non-empty list of positive"),
    ("model.init_args.net.init_args.dropout_hidden", "2", "model.net.dropout_hidden must be in [0, 1)"),
    ("data.batch_size", "0", "data.batch_size must be a positive integer, got 0"),
    ("data.eval_batch_size", "-2", "data.eval_batch_size must be a positive integer, got -2"),
])
def test_constructor_errors_name_the_option(small: Path, tmp_path: Path, capsys, option: str, value: str,
                                            says: str) -> None:
    config = tiny_config(tmp_path / "c.yaml", small / "prepared", tmp_path / "run")
    result = run_cli(["fit", "--config", config, f"--{option}", value], capsys)
    assert_one_line(result, f"sessrec: error: {says}")


def test_other_constructor_errors_keep_their_message(tmp_path: Path, small: Path, capsys) -> None:
    config = tiny_config(tmp_path / "c.yaml", small / "prepared", tmp_path / "run")
    result = run_cli(["fit", "--config", config, "--data.data_dir", tmp_path / "absent"], capsys)
    assert_one_line(result, f"sessrec: error: {tmp_path / 'absent'}: prepared data folder not found")
