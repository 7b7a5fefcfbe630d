"""The tune file: one-line errors naming the key, before any training; the parser check of the space."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tune_helpers import GRU4REC, REPO, write_tune
from sessrec.cli import main
from sessrec.errors import ConfigError
from sessrec.tune import load_tune, parse_tune
from sessrec.tune.compose import base_config, best_config, check, set_key, trial_config

SPACE = {"model.init_args.lr": {"float": [0.01, 0.1]}}


def _parse(**fields):
    data = {"base": str(GRU4REC), "space": SPACE, "n_trials": 2, "out": "runs/x", **fields}
    return parse_tune(data, "t.yaml")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n_trail": 3}, "t.yaml: unknown key 'n_trail'"),
        ({"space": {"model.init_args.lr": {"float": [0.1, 0.01]}}},
         "t.yaml: space: model.init_args.lr: float: empty or inverted range [0.1, 0.01]"),
        ({"space": {"model.init_args.lr": {"float": [0.1, 0.1]}}}, "empty or inverted range"),
        ({"space": {"model.init_args.lr": {"float": [0.0, 0.1], "log": True}}},
         "t.yaml: space: model.init_args.lr: log range needs low > 0"),
        ({"space": {"model.init_args.lr": {"uniform": [0.0, 0.1]}}},
         "t.yaml: space: model.init_args.lr: expected exactly one of float, int, categorical"),
        ({"space": {"model.init_args.lr": {"categorical": []}}}, "categorical: expected a non-empty list"),
        ({"space": {"x.layers": {"int": [1.5, 4]}}}, "t.yaml: space: x.layers: int: bounds must be integers"),
        ({"space": {"model.init_args.lr": {"float": [0.01, 0.1], "log": True, "step": 0.01}}},
         "t.yaml: space: model.init_args.lr:"),  # Optuna's own rule: no step on a log range
        ({"space": {"model.init_args.bpreg": {"float": [0, 1], "when": {"model.init_args.loss": "bpr-max"}}}},
         "t.yaml: space: model.init_args.bpreg: when: model.init_args.loss is not an earlier key"),
        ({"space": {"model.init_args.loss": {"categorical": ["top1"]},
                    "model.init_args.bpreg": {"float": [0, 1], "when": {"model.init_args.loss": "bpr-max"}}}},
         "when: model.init_args.loss never takes the value 'bpr-max'"),
        ({"space": {"data.train_split": {"categorical": ["train", "train_full"]}}},
         "t.yaml: data.train_split: set by tune"),
        ({"overrides": {"trainer.logger": True}}, "t.yaml: trainer.logger: set by tune"),
        ({"objective": "test_mrr@20"}, "t.yaml: objective: expected a validation metric"),
        ({"n_trials": None}, "t.yaml: set n_trials or timeout"),
        ({"n_trials": 0}, "t.yaml: n_trials: expected a positive int"),
        ({"base": "missing.yaml"}, "t.yaml: base: missing.yaml not found"),
        ({"seeds": []}, "t.yaml: seeds: expected a non-empty list of non-negative integers"),
        ({"seeds": [0, -1]}, "t.yaml: seeds: expected a non-empty list of non-negative integers"),
        ({"seeds": 3}, "t.yaml: seeds: expected a non-empty list"),
        ({"seeds": [1, 1]}, "t.yaml: seeds: duplicate seeds"),
        ({"seeds": [0, 1], "overrides": {"seed_everything": 3}}, "t.yaml: seed_everything: set by seeds"),
        ({"wandb": True}, "t.yaml: wandb: expected {project: NAME}"),
        ({"wandb": {"project": "p", "log_model": True}}, "t.yaml: wandb: expected {project: NAME}"),
        ({"wandb": {"project": " "}}, "t.yaml: wandb: project: expected a non-empty string"),
    ],
)
def test_file_errors_name_the_key(fields, message):
    with pytest.raises(ConfigError) as err:
        _parse(**fields)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_defaults_and_labels():
    spec = _parse(space={"model.init_args.net.init_args.layers": {"categorical": [[100], [100, 100]]}})
    assert spec.objective == "val_mrr@20" and spec.pruner and not spec.refit
    assert spec.storage_url == "sqlite:///runs/x/study.db" and spec.study_name == "t"
    assert spec.wandb is None and _parse(wandb={}).wandb == "sessrec" and _parse(wandb={"project": "p"}).wandb == "p"
    (param,) = spec.space
    assert param.labels == ("[100]", "[100, 100]")  # Optuna stores scalars: lists as their YAML text
    assert param.value("[100, 100]") == [100, 100]


def test_set_key_indexes_lists():
    config = {"model": {"layers": [100, 50]}}
    set_key(config, "model.layers.1", 70)
    set_key(config, "model.lr", 0.1)
    assert config == {"model": {"layers": [100, 70], "lr": 0.1}}
    with pytest.raises(ConfigError, match="model.layers.2: no entry 2 in model.layers, a list of 2"):
        set_key(config, "model.layers.2", 1)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = write_tune(tmp_path, tmp_path, n_trail=3)
    with pytest.raises(SystemExit) as stop:
        main(["tune", "--config", str(path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sessrec: error: ") and "unknown key 'n_trail'" in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing written before the file is valid


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"model.init_args.lrr": {"float": [0.01, 0.1]}},
         "space: model.init_args.lrr: 0.01 rejected: model: class_path 'sessrec.training.module.SessionRecModule': "
         "Option 'lrr' is not accepted"),
        ({"trainer.max_epoch": {"int": [1, 3]}}, "space: trainer.max_epoch: 1 rejected:"),
        ({"model.init_args.net.init_args.layers.1": {"int": [10, 20]}},
         "space: model.init_args.net.init_args.layers.1: 10 rejected: model.init_args.net.init_args.layers.1: "
         "no entry 1 in model.init_args.net.init_args.layers, a list of 1"),
        ({"model.init_args.loss": {"categorical": ["cross-entropy", "bpr-maxx"]}},
         "space: model.init_args.loss: 'bpr-maxx' rejected:"),
    ],
)
def test_space_keys_are_checked_by_the_real_parser(tmp_path, small, space, message):
    spec = load_tune(write_tune(tmp_path, small / "prepared", space=space))
    with pytest.raises(ConfigError) as err:
        check(spec, base_config(spec))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "tune.yaml"))


def test_objective_must_be_a_logged_cutoff(tmp_path, small):
    spec = load_tune(write_tune(tmp_path, small / "prepared", objective="val_recall@50"))
    with pytest.raises(ConfigError, match=r"objective: val_recall@50 is not logged: the model's cutoffs"):
        check(spec, base_config(spec))


def test_trial_and_best_configs(tmp_path, small):
    spec = load_tune(write_tune(tmp_path, small / "prepared"))
    base = base_config(spec)
    trial = trial_config(spec, base, {"model.init_args.lr": 0.07}, tmp_path / "t0")
    assert trial["data"]["train_split"] == "train" and trial["data"]["val_split"] == "valid"
    assert trial["data"]["test_split"] == trial["data"]["predict_split"] == "valid"  # test never reachable
    assert trial["trainer"]["logger"] is False and trial["trainer"]["enable_checkpointing"] is False
    assert trial["trainer"]["limit_val_batches"] == 1.0 and trial["trainer"]["callbacks"] == []
    best = best_config(spec, base, {"model.init_args.lr": 0.07})
    assert best["data"]["train_split"] == "train_full" and best["data"]["test_split"] == "test"
    assert best["model"]["init_args"]["lr"] == 0.07 and best["trainer"]["max_epochs"] == 2
    checkpoint = best["trainer"]["callbacks"][0]["init_args"]
    assert checkpoint["dirpath"] == str(Path(spec.out) / "refit" / "checkpoints")


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_tune_files_check(path):
    spec = load_tune(path)
    base = yaml.safe_load(path.read_text())["base"]
    assert all(b.startswith("../") for b in (base if isinstance(base, list) else [base]))
    check(spec, base_config(spec))  # every space key at its ends / choices parses against the real classes


def test_schedule_keys_index_the_base_callback_list(tmp_path, small):
    """prnn-schedules.yaml: `trainer.callbacks.1` is the base's TrainingSchedule (after its checkpoint),
    in the trial (which drops the checkpoint) and in best.yaml; per-subnet widths and lr scales land in
    their mappings. The check finds such keys; a misspelt option under them still fails."""
    spec = load_tune(REPO / "configs" / "tune" / "prnn-schedules.yaml")
    values = {"trainer.callbacks.1.init_args.mode": "residual",
              "trainer.callbacks.1.init_args.epochs_per_phase": [3, 1],
              "model.init_args.net.init_args.layers.image.0": 150, "model.init_args.lr_scale.id": 2.0}
    base = base_config(spec)
    trial, best = trial_config(spec, base, values, Path("t0")), best_config(spec, base, values)
    assert len(trial["trainer"]["callbacks"]) == 1
    assert best["trainer"]["callbacks"][0]["class_path"].endswith("ModelCheckpoint")
    for config, position in ((trial, 0), (best, 1)):
        schedule = config["trainer"]["callbacks"][position]
        assert schedule["class_path"].endswith("TrainingSchedule")
        assert schedule["init_args"]["mode"] == "residual"
        assert schedule["init_args"]["epochs_per_phase"] == [3, 1]
        assert config["model"]["init_args"]["net"]["init_args"]["layers"] == {"id": [100], "image": [150]}
        assert config["model"]["init_args"]["lr_scale"] == {"id": 2.0}
    space = {"trainer.callbacks.1.init_args.mode": {"categorical": ["residual", "alternating"]}}
    base_file = REPO / "configs" / "prnn" / "residual.yaml"
    spec = load_tune(write_tune(tmp_path, small / "prepared", space=space, base=str(base_file)))
    check(spec, base_config(spec))
    spec = load_tune(write_tune(tmp_path, small / "prepared", base=str(base_file),
                                space={"trainer.callbacks.1.init_args.mdoe": {"categorical": ["residual"]}}))
    with pytest.raises(ConfigError, match="trainer.callbacks.1.init_args.mdoe: 'residual' rejected"):
        check(spec, base_config(spec))


def test_same_as_ties_a_key_to_an_earlier_one():
    import optuna

    from sessrec.tune.report import best_params
    from sessrec.tune.study import suggest

    width = "model.init_args.net.init_args.layers.0"
    spec = _parse(space={width: {"int": [64, 512], "step": 64},
                  "model.init_args.net.init_args.embedding": {"same_as": width}})
    trial = optuna.trial.FixedTrial({width: 192})
    values = suggest(trial, spec)
    assert values == {width: 192, "model.init_args.net.init_args.embedding": 192}
    grid = optuna.distributions.IntDistribution(64, 512, step=64)
    frozen = optuna.trial.create_trial(params={width: 192}, distributions={width: grid}, value=0.1)
    assert best_params(spec, frozen)["model.init_args.net.init_args.embedding"] == 192  # best.yaml has it too
    with pytest.raises(ConfigError, match="same_as: model.nope is not an earlier key"):
        _parse(space={"model.init_args.lr": {"same_as": "model.nope"}})
    with pytest.raises(ConfigError, match="same_as takes no log or step"):
        _parse(space={width: {"int": [64, 512]}, "model.init_args.lr": {"same_as": width, "log": True}})
