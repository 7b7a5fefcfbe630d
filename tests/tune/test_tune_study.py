"""A tiny study in this process: outputs, the test split never read, failed trials, pruning."""

from __future__ import annotations

import csv
import json
import shutil
from types import SimpleNamespace

import optuna
import pytest
import yaml

from tune_helpers import GRU4REC as GRU4REC_CONFIG
from tune_helpers import write_tune
from sessrec.cli import main
from sessrec.data.prepared import PreparedData
from sessrec.tune.study import TrialReport


def _tune(path) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["tune", "--config", str(path)])
    assert stop.value.code == 0


def _rows(out) -> list[dict[str, str]]:
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def no_test_split(small, tmp_path, monkeypatch):
    """A copy of the prepared folder whose test.parquet is garbage, and a spy on the splits read."""
    prepared = tmp_path / "prepared"
    shutil.copytree(small / "prepared", prepared)
    (prepared / "test.parquet").write_bytes(b"not parquet: reading the test split fails the trial")
    read: list[str] = []
    original = PreparedData.split

    def spy(self, name):
        read.append(name)
        return original(self, name)

    monkeypatch.setattr(PreparedData, "split", spy)
    return prepared, read


def test_study_writes_best_yaml_and_never_reads_test(tmp_path, no_test_split, capsys):
    prepared, read = no_test_split
    _tune(write_tune(tmp_path, prepared, n_trials=3))
    out = tmp_path / "out"
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert set(read) == {"train", "valid"}  # "test" (and train_full) never opened while tuning
    best = yaml.safe_load((out / "best.yaml").read_text())
    values = [float(r["value_val_mrr@20"]) for r in rows]
    best_row = rows[values.index(max(values))]
    assert best["model"]["init_args"]["lr"] == pytest.approx(float(best_row["params_model.init_args.lr"]))
    assert best["model"]["init_args"]["net"]["init_args"]["layers"] == [
        int(best_row["params_model.init_args.net.init_args.layers.0"])]
    assert best["data"]["train_split"] == "train_full" and best["data"]["data_dir"] == str(prepared)
    assert (out / "history.png").stat().st_size > 0 and (out / "importances.png").stat().st_size > 0
    assert (out / "trials" / "0" / "trial.yaml").is_file() and not (out / "test.json").exists()
    printed = capsys.readouterr()
    assert "best: trial" in printed.out
    with pytest.raises(SystemExit) as stop:  # best.yaml is a config the real CLI accepts
        main(["fit", "--config", str(out / "best.yaml"), "--print_config"])
    assert stop.value.code in (0, None)
    assert "train_full" in capsys.readouterr().out
    # A rerun finds the study finished: nothing trains, outputs are rewritten.
    _tune(write_tune(tmp_path, prepared, n_trials=3))
    assert len(_rows(out)) == 3


def test_refit_tests_once(tmp_path, small):
    _tune(write_tune(tmp_path, small / "prepared", n_trials=2, refit=True,
                     space={"model.init_args.lr": {"categorical": [0.05, 0.1]}}))
    result = json.loads((tmp_path / "out" / "test.json").read_text())
    assert 0 < result["metrics"]["test_recall@20"] <= 1 and result["epochs"] == 2
    assert result["params"]["model.init_args.lr"] in (0.05, 0.1)
    assert (tmp_path / "out" / "refit" / "checkpoints" / "last.ckpt").is_file()


def test_seeds_train_each_trial_once_per_seed_and_score_the_mean(tmp_path, small):
    _tune(write_tune(tmp_path, small / "prepared", n_trials=2, refit=True, seeds=[3, 7], pruner=False,
                     space={"model.init_args.lr": {"categorical": [0.05, 0.1]}}))
    out = tmp_path / "out"
    for row in _rows(out):
        per_seed = json.loads(row["user_attrs_seed_values"].replace("'", '"'))
        assert len(per_seed) == 2 and float(row["value_val_mrr@20"]) == pytest.approx(sum(per_seed) / 2)
        for seed in (3, 7):
            trial = yaml.safe_load((out / "trials" / row["number"] / f"seed-{seed}" / "trial.yaml").read_text())
            assert trial["seed_everything"] == seed and trial["data"]["test_split"] == "valid"
    assert any(len(set(json.loads(r["user_attrs_seed_values"]))) == 2 for r in _rows(out))  # seeds differ
    assert yaml.safe_load((out / "best.yaml").read_text())["seed_everything"] == 3
    result = json.loads((out / "test.json").read_text())
    assert result["seeds"] == [3, 7] and set(result["runs"]) == {"3", "7"}
    runs = [result["runs"][s]["metrics"]["test_mrr@20"] for s in ("3", "7")]
    assert result["metrics"]["test_mrr@20"] == pytest.approx(sum(runs) / 2)
    assert result["metrics_std"]["test_mrr@20"] == pytest.approx(abs(runs[0] - runs[1]) / 2 ** 0.5)
    for seed in (3, 7):
        refit = yaml.safe_load((out / "refit" / f"seed-{seed}.yaml").read_text())
        assert refit["seed_everything"] == seed and refit["data"]["train_split"] == "train_full"
        assert (out / "refit" / f"seed-{seed}" / "checkpoints" / "last.ckpt").is_file()


def test_a_small_validation_split_is_named_once(tmp_path, small, monkeypatch, caplog):
    from sessrec.tune import study

    prepared = PreparedData.load(small / "prepared")
    valid = prepared.split("valid")
    targets = valid.n_events - valid.n_sessions
    tune_file = write_tune(tmp_path, small / "prepared", n_trials=2, pruner=False)
    for threshold, expected in ((targets + 1, 1), (targets, 0)):  # warned only below the threshold
        monkeypatch.setattr(study, "SMALL_VALID", threshold)
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        caplog.clear()
        with caplog.at_level("WARNING", logger="sessrec.tune.study"):
            _tune(tune_file)
        said = [r.getMessage() for r in caplog.records if "targets of split" in r.getMessage()]
        assert len(said) == expected  # once for the two trials
        if said:
            assert f"mean over {targets} targets of split 'valid'" in said[0]
            assert f"{0.5 / targets ** 0.5:.3f}" in said[0]


def test_wandb_logs_each_trial_and_the_trials_table_offline(tmp_path, small, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tune_file = write_tune(tmp_path, small / "prepared", n_trials=2, pruner=False, seeds=[0, 1],
                           wandb={"project": "p"}, study_name="s")
    _tune(tune_file)
    out = tmp_path / "out"
    for trial in ("0", "1"):
        for seed in ("0", "1"):
            (run_log,) = (out / "trials" / trial / f"seed-{seed}").glob("wandb/offline-run-*/run-*.wandb")
            logged = run_log.read_bytes()
            for key in (b"val_mrr@20", b"seed_everything", f"s-trial-{trial}-seed-{seed}".encode(),
                        b"tune/state", b"COMPLETE"):
                assert key in logged  # per-epoch metric, the full config, the run name, the outcome
    (table_file,) = out.glob("wandb/offline-run-*/files/media/table/trials_*.table.json")
    table = json.loads(table_file.read_text())
    assert [row[table["columns"].index("number")] for row in table["data"]] == [0, 1]
    assert "W&B: trials table logged (project p, group s)" in capsys.readouterr().out
    _tune(tune_file)  # the finished study again: the same table is not logged twice
    assert len(list(out.glob("wandb/offline-run-*"))) == 1


def test_an_empty_validation_split_stops_before_any_trial(tmp_path, small, capsys):
    prepared = tmp_path / "prepared"  # valid empty: `prepare --valid-days 0`
    with pytest.raises(SystemExit) as stop:
        main(["prepare", str(small / "raw" / "events.tsv"), "--out", str(prepared), "--valid-days", "0"])
    assert stop.value.code == 0
    with pytest.raises(SystemExit) as stop:
        main(["tune", "--config", str(write_tune(tmp_path, prepared, n_trials=2))])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split 'valid' of" in err[0] and "has no targets" in err[0]
    assert not (tmp_path / "out" / "trials" / "0").exists()  # no trial ran


def test_later_seeds_only_measure():
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={"val_mrr@20": 0.5})
    report = TrialReport(None, "val_mrr@20")  # a trial's second seed: no report, so never pruned
    report.on_validation_end(trainer, None)
    assert report.value == 0.5 and report.reports == 0


def _write_poison(folder) -> None:
    """A callback that makes the weights NaN before training: the loss is NaN from the first step."""
    (folder / "tune_poison.py").write_text(
        "import math\nfrom lightning.pytorch import Callback\n\n"
        "class PoisonWeights(Callback):\n"
        "    def on_train_start(self, trainer, pl_module):\n"
        "        for p in pl_module.parameters():\n"
        "            p.data.fill_(math.nan)\n")


def test_failed_trials_are_recorded_and_the_study_goes_on(tmp_path, small, monkeypatch):
    _write_poison(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    space = {
        "trainer.callbacks": {"categorical": [[], [{"class_path": "tune_poison.PoisonWeights"}]]},
        "model.init_args.optimizer": {"categorical": ["adagrad_momentum", "adam"]},
    }
    overrides = {"data.data_dir": str(small / "prepared"), "trainer.max_epochs": 1,
                 "model.init_args.n_sample": 64, "model.init_args.logq": 0.0, "model.init_args.momentum": 0.5}
    # seed 0 draws: poison + adagrad, poison + adam, none + adagrad, poison + adam
    _tune(write_tune(tmp_path, small / "prepared", space=space, overrides=overrides, n_trials=4, seed=0,
                     pruner=False))
    rows = _rows(tmp_path / "out")
    assert len(rows) == 4  # failed trials count toward n_trials
    errors = [r["user_attrs_error"] for r in rows if r["state"] == "FAIL"]
    assert any("nan" in e for e in errors), errors  # sessrec.training.module or TrialReport stops a NaN loss
    assert any("momentum is only used by optimizer='adagrad_momentum'" in e for e in errors), errors
    first_fail = min(int(r["number"]) for r in rows if r["state"] == "FAIL")
    assert any(int(r["number"]) > first_fail and r["state"] == "COMPLETE" for r in rows)  # went on
    for row in rows:
        error_log = tmp_path / "out" / "trials" / row["number"] / "error.log"
        assert error_log.is_file() == (row["state"] == "FAIL")  # the traceback of each failed trial


def test_report_prunes_on_the_validation_metric():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.should_prune = lambda: True
    report = TrialReport(trial, "val_mrr@20")
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=1, callback_metrics={"val_mrr@20": 0.25})
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1: val_mrr@20 0.2500"):
        report.on_validation_end(trainer, None)
    assert report.value == 0.25 and study.trials[0].intermediate_values == {0: 0.25}
    trainer.callback_metrics = {"val_recall@20": 0.5}
    with pytest.raises(Exception, match=r"objective val_mrr@20 was not logged \(validation metrics: "
                                        r"val_recall@20\)"):
        report.on_validation_end(trainer, None)


def _refused(path, capsys, *says: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["tune", "--config", str(path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(s in err[0] for s in says), err


def test_out_holding_something_else_or_the_data_is_refused(tmp_path, small, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "best.yaml").write_text("# my own config")
    _refused(write_tune(tmp_path, small / "prepared", out=str(mine)), capsys, "holds no study")
    assert (mine / "best.yaml").read_text() == "# my own config" and len(list(mine.iterdir())) == 1
    base = tmp_path / "base.yaml"  # the data folder named by the base config only, not by the tune file
    config = yaml.safe_load(GRU4REC_CONFIG.read_text())
    config["data"]["data_dir"] = str(small / "prepared")
    base.write_text(yaml.safe_dump(config))
    path = write_tune(tmp_path, small / "prepared", base=str(base), out=str(small / "prepared" / "study"))
    data = yaml.safe_load(path.read_text())
    del data["overrides"]["data.data_dir"]
    path.write_text(yaml.safe_dump(data))
    _refused(path, capsys, "lies inside the input")
    assert not (small / "prepared" / "study").exists()


def test_a_changed_objective_or_space_does_not_resume_the_study(tmp_path, small, capsys):
    _tune(write_tune(tmp_path, small / "prepared", n_trials=1))
    before = _rows(tmp_path / "out")
    _refused(write_tune(tmp_path, small / "prepared", n_trials=2, objective="val_recall@20"), capsys,
             "was run with another objective (objective val_mrr@20)")
    _refused(write_tune(tmp_path, small / "prepared", n_trials=2,
                        space={"model.init_args.lr": {"float": [0.3, 0.5]}}), capsys, "another search space")
    assert _rows(tmp_path / "out") == before
