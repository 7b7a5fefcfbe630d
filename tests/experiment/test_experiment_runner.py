"""The experiment runner on tiny data: results, tables, skip on rerun, failures, W&B offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from sessrec.cli import main
from sessrec.errors import ConfigError, SessrecError
from sessrec.experiment import runner
from sessrec.experiment.runner import run_experiment
from sessrec.experiment.spec import parse_experiment
from sessrec.training.loggers import wandb_mode

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
ID_ONLY = str(CONFIGS / "prnn" / "id-shared.yaml")  # an ID-only p-RNN as one file
IKNN = str(CONFIGS / "baselines" / "iknn.yaml")
RESIDUAL = str(CONFIGS / "prnn" / "residual.yaml")
SCHEDULE = "sessrec.training.schedules.TrainingSchedule"


def tiny(data: Path, out: Path, runs: list[dict], **over) -> dict:
    """An experiment on the tiny data: 2 training blocks of 4 steps per epoch, 1 epoch."""
    base = {"data.data_dir": str(data), "data.steps_per_block": 4, "trainer.max_epochs": 1,
            "trainer.limit_train_batches": 2, "trainer.enable_progress_bar": False,
            "trainer.log_every_n_steps": 1}
    return {"name": "tiny", "out_dir": str(out), "base": base, "runs": runs, **over}


RUNS = [
    {"name": "iknn", "label": "item-kNN", "config": IKNN},
    {"name": "id100", "config": ID_ONLY, "set": {"model.init_args.sample_cache_size": 10_000}},
    {"name": "residual", "config": RESIDUAL, "set": {"trainer.max_epochs": 2, "trainer.callbacks": [
        {"class_path": SCHEDULE,
         "init_args": {"mode": "residual", "order": ["id", "image"], "epochs_per_phase": 1}}]}},
]


@pytest.fixture(scope="module")
def finished(tiny_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "out"
    experiment = parse_experiment(tiny(tiny_prepared, out, RUNS, reference="id100"))
    return experiment, run_experiment(experiment, command="cmd"), out


def test_runs_are_trained_tested_and_tabulated(finished):
    experiment, outcome, out = finished
    assert outcome.trained == ["iknn", "id100", "residual"] and outcome.skipped == []
    results = {r["name"]: json.loads((out / r["name"] / "result.json").read_text()) for r in RUNS}
    assert results["iknn"]["epochs"] == 0 and results["iknn"]["fit_seconds"] == 0  # a baseline only tests
    assert results["id100"]["epochs"] == 1 and results["residual"]["epochs"] == 2
    for result in results.values():
        assert 0 < result["metrics"]["test_mrr@20"] <= result["metrics"]["test_recall@20"] <= 1
        assert result["test_events"] == results["iknn"]["test_events"] > 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["iknn", "id100", "residual"]
    for row in rows:  # the CSV holds exactly the result.json values
        for metric, value in results[row["name"]]["metrics"].items():
            assert float(row[metric]) == value
    markdown = (out / "results.md").read_text()
    ref = results["id100"]["metrics"]
    for name, result in results.items():
        m = result["metrics"]
        change = f"{100 * (m['test_recall@20'] / ref['test_recall@20'] - 1):+.1f}%"
        assert f"| `{name}` | {m['test_recall@20']:.4f} | {change} | {m['test_mrr@20']:.4f} |" in markdown
    assert next(line for line in markdown.splitlines() if "`iknn`" in line).endswith("| - | - |")


def test_run_folders_hold_config_curves_and_checkpoint(finished):
    _, _, out = finished
    run = out / "residual"
    composed = yaml.safe_load((run / "run.yaml").read_text())
    assert composed["trainer"]["default_root_dir"] == str(run)
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert "config" in yaml.safe_load((run / "hparams.yaml").read_text())  # the full config, for loggers
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs = [r for r in rows if r["train_loss_epoch"]]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    assert [float(r["schedule/phase_index_epoch"]) for r in epochs] == [0.0, 1.0]  # id, then image
    assert sum(1 for r in rows if r["train_loss_step"]) == 4  # 2 blocks x 2 epochs
    assert any(r["test_recall@20"] for r in rows)
    assert not (out / "iknn" / "checkpoints").exists() or not any((out / "iknn" / "checkpoints").iterdir())


def test_rerun_skips_finished_runs_and_force_reruns(tiny_prepared, tmp_path):
    experiment = parse_experiment(tiny(tiny_prepared, tmp_path / "out", RUNS[:2]))
    first = run_experiment(experiment)
    stamps = {n: (tmp_path / "out" / n / "result.json").stat().st_mtime_ns for n in ("iknn", "id100")}
    again = run_experiment(experiment)
    assert again.trained == [] and again.skipped == ["iknn", "id100"]
    assert {n: (tmp_path / "out" / n / "result.json").stat().st_mtime_ns for n in stamps} == stamps
    forced = run_experiment(experiment, only=["id100"], force=True)
    assert first.trained == ["iknn", "id100"] and forced.trained == ["id100"] and forced.skipped == []
    assert (tmp_path / "out" / "iknn" / "result.json").stat().st_mtime_ns == stamps["iknn"]
    assert (tmp_path / "out" / "id100" / "result.json").stat().st_mtime_ns != stamps["id100"]
    assert len(forced.rows) == 2  # the table still lists every finished run


def test_failing_run_is_one_line_and_leaves_no_result(tiny_prepared, tmp_path, capsys):
    runs = [RUNS[0], {"name": "broken", "config": IKNN, "set": {"data.data_dir": str(tmp_path / "missing")}}]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny(tiny_prepared, tmp_path / "out", runs)))
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "--config", str(path)])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sessrec")]
    assert len(err) == 1 and err[0].startswith("sessrec: error: run 'broken': ") and "missing" in err[0]
    assert not (tmp_path / "out" / "broken" / "result.json").exists()
    assert (tmp_path / "out" / "iknn" / "result.json").is_file()
    assert "`iknn`" in (tmp_path / "out" / "results.md").read_text()


def test_unexpected_exception_is_reported_with_its_traceback_file(tiny_prepared, tmp_path, monkeypatch):
    def explode(config):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("sessrec.experiment.train.train_and_test", explode)
    experiment = parse_experiment(tiny(tiny_prepared, tmp_path / "out", RUNS[:1]))
    with pytest.raises(SessrecError) as info:
        run_experiment(experiment)
    message = str(info.value)
    assert "\n" not in message and message.startswith("run 'iknn' failed: RuntimeError: boom second line")
    assert "RuntimeError: boom" in (tmp_path / "out" / "iknn" / "error.log").read_text()
    assert not (tmp_path / "out" / "iknn" / "result.json").exists()


def test_config_errors_stop_before_any_training(tiny_prepared, tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(runner, "_train", lambda *args: trained.append(args) or {})
    runs = [RUNS[0], {"name": "typo", "config": ID_ONLY, "set": {"model.init_args.lrr": 0.1}}]
    experiment = parse_experiment(tiny(tiny_prepared, tmp_path / "out", runs))
    with pytest.raises(ConfigError) as info:
        run_experiment(experiment)
    message = str(info.value)
    assert message.startswith("run 'typo': ") and "lrr" in message and "\n" not in message
    assert trained == []


def test_wandb_offline_logs_each_run_and_the_table_once(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    wandb = {"project": "t", "log_model": True}
    experiment = parse_experiment(tiny(tiny_prepared, out, RUNS[:2], wandb=wandb))
    run_experiment(experiment)
    (table_file,) = out.glob("wandb/offline-run-*/files/media/table/results_*.table.json")
    table = json.loads(table_file.read_text())
    with open(out / "results.csv") as f:
        rows = list(csv.reader(f))
    assert table["columns"] == rows[0]
    assert [[str(v) for v in row] for row in table["data"]] == rows[1:]
    (run_log,) = out.glob("id100/wandb/offline-run-*/run-*.wandb")
    logged = run_log.read_bytes()
    for key in (b"train_loss_epoch", b"test_recall@20", b"seed_everything", b"model.ckpt"):
        assert key in logged  # per-epoch metric, test metric, the full config, the checkpoint artifact
    run_experiment(experiment)  # nothing new: the same table is not logged twice
    assert len(list(out.glob("wandb/offline-run-*"))) == 1


def test_wandb_disabled_writes_no_wandb_files(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "out"
    run_experiment(parse_experiment(tiny(tiny_prepared, out, RUNS[:1], wandb={"project": "t"})))
    assert (out / "iknn" / "result.json").is_file() and (out / "results.csv").is_file()
    assert not list(out.rglob("wandb")) and not (out / ".wandb-table").exists()


def test_wandb_mode_is_offline_unless_asked(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled" and wandb_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE must be offline, online or disabled"):
        wandb_mode()


def test_a_folder_it_did_not_write_is_never_cleared(tiny_prepared, tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(runner, "_train", lambda *args: trained.append(args) or {})
    notes = tmp_path / "out" / "id100" / "notes.txt"  # a folder named like a run, not written by one
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    (tmp_path / "out" / "iknn").mkdir()  # an empty folder may be used
    experiment = parse_experiment(tiny(tiny_prepared, tmp_path / "out", RUNS[:2]))
    with pytest.raises(SessrecError, match=r"id100: exists and was not written by this experiment") as info:
        run_experiment(experiment)
    assert "\n" not in str(info.value)
    assert notes.read_text() == "mine" and trained == []
    assert not (tmp_path / "out" / "iknn" / "run.yaml").exists()  # checked before any folder is touched
