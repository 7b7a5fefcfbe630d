"""The command line: usage, one-line user errors, and the demo path end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sessrec.cli import main


def test_usage_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("fit", "test", "prepare", "generate"):
        assert name in out


def test_user_error_is_one_line_without_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.tsv"
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(missing), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sessrec: error:") and "nope.tsv" in err[0]
    assert not (tmp_path / "out").exists()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "sessrec", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _metric(output: str, name: str) -> float:
    for line in output.splitlines():
        if name in line:
            return float(line.replace("│", " ").split()[-1])
    raise AssertionError(f"{name} not in output:\n{output}")


def test_fit_then_test_beats_pop(tiny_prepared, tmp_path, repo_root):
    """GRU4Rec trained through the CLI on generated data ranks far better than POP."""
    cfg = str(repo_root / "configs" / "gru4rec" / "synthetic.yaml")
    common = ["--config", cfg, "--data.data_dir", str(tiny_prepared), "--trainer.callbacks.dirpath", str(tmp_path)]
    fit = _run(["fit", *common, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "2",
                "--trainer.enable_progress_bar", "false"], repo_root)
    assert fit.returncode == 0, fit.stderr[-3000:]
    test = _run(["test", *common, "--ckpt_path", str(tmp_path / "last.ckpt")], repo_root)
    assert test.returncode == 0, test.stderr[-3000:]
    pop = _run(["test", "--config", str(repo_root / "configs" / "baselines" / "pop.yaml"),
                "--data.data_dir", str(tiny_prepared)], repo_root)
    assert pop.returncode == 0, pop.stderr[-3000:]
    gru_recall, pop_recall = _metric(test.stdout, "test_recall@20"), _metric(pop.stdout, "test_recall@20")
    assert gru_recall > 2 * pop_recall and gru_recall > 0.2, (gru_recall, pop_recall)


# ---- helpful parse errors (issue 21, item 6) -------------------------------------------------------
def _parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sessrec: error: "), err
    return err[-1]


def test_misspelled_encoder_class_names_the_key_and_the_known_encoders(tmp_path, repo_root, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text((repo_root / "configs" / "prnn" / "residual.yaml").read_text()
                      .replace("class_path: DenseEncoder", "class_path: DenseEncodr"))
    line = _parse_error(["fit", "--config", str(config)], capsys)
    assert "model.net.encoders.image: unknown encoder class 'DenseEncodr'" in line
    assert "did you mean 'DenseEncoder'?" in line
    assert "known encoders: ConcatEncoder, DenseEncoder, ItemIdEncoder, PropertyEncoder, SparseTextEncoder" in line
    assert "typo.yaml" in line
    config.write_text(config.read_text().replace("DenseEncodr", "sparse_text"))  # a registry short name
    assert "did you mean 'SparseTextEncoder'?" in _parse_error(["fit", "--config", str(config)], capsys)


def test_unknown_option_gets_a_did_you_mean(repo_root, capsys):
    config = str(repo_root / "configs" / "prnn" / "residual.yaml")
    line = _parse_error(["fit", "--config", config, "--model.init_args.net.init_args.layrs", "[10]"], capsys)
    assert "Option 'layrs' is not accepted (did you mean 'layers'?)" in line
    line = _parse_error(["fit", "--config", config, "--trainer.callbacks.init_args.mdoe", "residual"], capsys)
    assert "TrainingSchedule': Option 'mdoe' is not accepted (did you mean 'mode'?)" in line
    line = _parse_error(["fit", "--config", config, "--model.init_args.nope", "1"], capsys)
    assert "Option 'nope' is not accepted (accepted: net, loss, " in line  # nothing close: the list
    line = _parse_error(["fit", "--config", config, "--data.batch_sze", "3"], capsys)
    assert "unrecognized arguments: --data.batch_sze 3 (did you mean --data.batch_size?)" in line


def test_one_line_parser_error_suggestions_by_hand():
    from sessrec.errors import one_line_parser_error

    message = """Parser key "model":
  Does not validate against any of the Union subtypes
  Errors:
    - Problem with given class_path 'sessrec.training.module.SessionRecModule':
        Option 'n_sampel' is not accepted
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='n_sampel', val=3)"""
    assert one_line_parser_error(message) == (
        "model: class_path 'sessrec.training.module.SessionRecModule': Option 'n_sampel' is not accepted "
        "(did you mean 'n_sample'?)")
    unknown_class = message.replace("sessrec.training.module.SessionRecModule", "nowhere.Nothing")
    assert one_line_parser_error(unknown_class).endswith("Option 'n_sampel' is not accepted")  # no guess


def test_top_level_usage_imports_no_command_module(repo_root):
    """`sessrec --help` reads the commands' one-line docs from their source: no torch, no Lightning."""
    code = ("import sys; from sessrec.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'lightning', 'polars', 'pandas', 'sessrec.commands.prepare') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout
    assert "prepare" in proc.stdout and "extract" in proc.stdout


def test_lightning_tips_and_hardware_lines_only_at_debug():
    """Lightning's litlogger/litmodels tips and GPU/TPU lines: hidden at INFO, shown at DEBUG
    (SESSREC_LOG_LEVEL=DEBUG)."""
    import logging

    from sessrec.runtime import quiet_lightning_notices

    quiet_lightning_notices()
    quiet_lightning_notices()  # once, however often a command builds a CLI
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    sessrec_log = logging.getLogger("sessrec")
    assert len(lightning.filters) == len({type(f) for f in lightning.filters})
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    saved = lightning.level, lightning.propagate, sessrec_log.level
    lightning.addHandler(handler)
    lightning.propagate = False
    lightning.setLevel(logging.INFO)
    try:
        for level in (logging.INFO, logging.DEBUG):
            sessrec_log.setLevel(level)
            records.clear()
            for message in ("💡 Tip: For seamless cloud logging ... litlogger",
                            "GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
                            "Restoring states from the checkpoint"):
                lightning.info(message)
            shown = [(r.levelname, r.getMessage().split()[1]) for r in records]
            if level == logging.INFO:
                assert shown == [("INFO", "states")]
            else:
                assert shown == [("DEBUG", "Tip:"), ("DEBUG", "available:"), ("DEBUG", "available:"),
                                 ("INFO", "states")]
    finally:
        lightning.removeHandler(handler)
        lightning.setLevel(saved[0])
        lightning.propagate = saved[1]
        sessrec_log.setLevel(saved[2])
