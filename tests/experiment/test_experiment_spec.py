"""The experiment file: validation with messages that name the key, and how a run's config is composed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sessrec.errors import ConfigError
from sessrec.experiment.results import to_csv, to_markdown
from sessrec.experiment.spec import compose, load_experiment, parse_experiment

REPO = Path(__file__).resolve().parents[2]
ID_ONLY = str(REPO / "configs" / "prnn" / "id-shared.yaml")  # an ID-only p-RNN as one file
IKNN = str(REPO / "configs" / "baselines" / "iknn.yaml")


def spec(**over) -> dict:
    data = {"name": "exp", "out_dir": "out", "runs": [{"name": "a", "config": ID_ONLY}]}
    data.update(over)
    return data


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"runz": []}, "unknown key 'runz'"),
        ({"runs": []}, "runs: expected a non-empty list"),
        ({"runs": [{"name": "a"}]}, "runs[0]: missing 'config'"),
        ({"runs": [{"name": "a", "config": "nope.yaml"}]}, "config nope.yaml not found"),
        ({"runs": [{"name": "a/b", "config": ID_ONLY}]}, "a folder name"),
        ({"runs": [{"name": "a", "config": ID_ONLY}, {"name": "a", "config": IKNN}]}, "duplicate name a"),
        ({"runs": [{"name": "a", "config": ID_ONLY, "set": [1]}]}, "runs[0]: set: expected a mapping"),
        ({"reference": "b"}, "reference 'b' is not a run name"),
        ({"wandb": {"projekt": "x"}}, "wandb: unknown key 'projekt'"),
    ],
)
def test_invalid_experiment_names_the_key(over, message):
    with pytest.raises(ConfigError) as info:
        parse_experiment(spec(**over), "exp.yaml")
    assert message in str(info.value) and str(info.value).startswith("exp.yaml")


def test_load_experiment_reports_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML at line 2"):
        load_experiment(path)


def test_compose_replaces_dotted_keys_and_owns_the_outputs(tmp_path):
    encoders = {"only": {"class_path": "ItemIdEncoder", "init_args": {"dim": 8}}}
    experiment = parse_experiment(spec(
        out_dir=str(tmp_path),
        base={"data.data_dir": "d", "trainer.max_epochs": 7, "seed_everything": 1},
        runs=[{"name": "a", "config": str(REPO / "configs" / "prnn" / "prnn.yaml"),
               "set": {"trainer.max_epochs": 2, "model.init_args.net.init_args.encoders": encoders}}],
        wandb={"project": "p", "log_model": True},
    ))
    config = compose(experiment, experiment.runs[0])
    assert config["seed_everything"] == 1 and config["data"]["data_dir"] == "d"
    assert config["data"]["batch_size"] == 64  # untouched keys of the run's file stay
    assert config["trainer"]["max_epochs"] == 2  # `set` applies after `base`
    assert config["model"]["init_args"]["net"]["init_args"]["encoders"] == encoders  # replaced, not merged
    trainer = config["trainer"]
    assert trainer["default_root_dir"] == str(tmp_path / "a")
    csv_logger, wandb_logger = trainer["logger"]
    assert csv_logger["init_args"] == {"save_dir": str(tmp_path), "name": "a", "version": ""}
    assert wandb_logger["class_path"] == "sessrec.training.loggers.WandbLogger"
    assert wandb_logger["init_args"]["log_model"] is True and wandb_logger["init_args"]["group"] == "exp"
    (checkpoint,) = trainer["callbacks"]  # prnn.yaml's own ModelCheckpoint, moved into the run folder
    assert checkpoint["init_args"]["dirpath"] == str(tmp_path / "a" / "checkpoints")


def test_compose_adds_a_checkpoint_when_the_config_has_none(tmp_path):
    schedule = {"class_path": "sessrec.training.schedules.TrainingSchedule",
                "init_args": {"mode": "simultaneous"}}
    runs = [{"name": "a", "config": ID_ONLY, "set": {"trainer.callbacks": [schedule]}}]
    experiment = parse_experiment(spec(out_dir=str(tmp_path), runs=runs))
    checkpoint, kept = compose(experiment, experiment.runs[0])["trainer"]["callbacks"]
    assert checkpoint["class_path"].endswith("ModelCheckpoint")
    assert checkpoint["init_args"]["save_last"] is True
    assert kept == schedule


def test_compose_refuses_a_path_through_a_list(tmp_path):
    experiment = parse_experiment(spec(runs=[{"name": "a", "config": ID_ONLY,
                                              "set": {"trainer.callbacks.0.init_args.dirpath": "x"}}]))
    with pytest.raises(ConfigError, match="trainer.callbacks is not a mapping"):
        compose(experiment, experiment.runs[0])


def test_only_names_unknown_runs():
    experiment = parse_experiment(spec())
    assert [r.name for r in experiment.select(["a"])] == ["a"]
    with pytest.raises(ConfigError, match="--only: no run named zz"):
        experiment.select(["zz"])


def _row(name: str, recall: float, mrr: float) -> dict:
    metrics = {"test_recall@20": recall, "test_mrr@20": mrr, "test_recall@5": recall / 2}
    return {"name": name, "label": name.upper(), "metrics": metrics, "test_events": 1000, "epochs": 4,
            "fit_seconds": 12.3, "test_seconds": 1.0}


def test_tables_show_changes_against_the_reference():
    experiment = parse_experiment(spec(reference="a", runs=[{"name": "a", "config": ID_ONLY},
                                                             {"name": "b", "config": ID_ONLY}]))
    rows = [_row("a", 0.4, 0.2), _row("b", 0.5, 0.15)]
    markdown = to_markdown(experiment, rows, "cmd")
    assert "| B | `b` | 0.5000 | +25.0% | 0.1500 | -25.0% | 4 | 12 |" in markdown
    assert "| Recall@20 | vs a | MRR@20 | vs a |" in markdown and "Command: `cmd`" in markdown
    header, first, _ = to_csv(rows).splitlines()
    assert header.split(",")[:5] == ["name", "label", "test_recall@5", "test_recall@20", "test_mrr@20"]
    assert first.split(",")[2:5] == ["0.2", "0.4", "0.2"]


def test_paper_experiments_parse(monkeypatch):
    monkeypatch.chdir(REPO)  # run config paths are relative to the working directory
    for name in ("synthetic", "movielens"):
        experiment = load_experiment(REPO / "configs" / "paper" / f"{name}.yaml")
        names = [r.name for r in experiment.runs]
        assert names == ["iknn", "id100", "id200", "feature-only", "concat", "simultaneous", "residual",
                         "alternating", "interleaved"]
        callbacks = [c for r in experiment.runs for c in compose(experiment, r)["trainer"]["callbacks"]]
        modes = [c["init_args"]["mode"] for c in callbacks if "TrainingSchedule" in c["class_path"]]
        assert modes == ["simultaneous", "residual", "alternating", "interleaved"]
        assert yaml.safe_dump(compose(experiment, experiment.runs[0]))  # plain YAML types only


def test_a_run_config_may_be_a_stack_of_layers(monkeypatch):
    monkeypatch.chdir(REPO)
    stack = ["configs/trainer/default.yaml", "configs/data/synthetic.yaml", "configs/model/prnn.yaml",
             "configs/inputs/synthetic/id-image.yaml", "configs/schedule/residual.yaml"]
    experiment = parse_experiment({"name": "x", "out_dir": "/tmp/x", "runs": [
        {"name": "res", "config": stack, "set": {"model.init_args.lr": 0.01}}]})
    config = compose(experiment, experiment.runs[0])
    assert config["data"]["train_split"] == "train_full" and config["model"]["init_args"]["lr"] == 0.01
    assert set(config["model"]["init_args"]["net"]["init_args"]["encoders"]) == {"id", "image"}
    names = [c["class_path"].rsplit(".", 1)[-1] for c in config["trainer"]["callbacks"]]
    assert names == ["ModelCheckpoint", "TrainingSchedule"]  # the schedule layer's callbacks+ appended
    for bad, says in (([], "non-empty list"), (["configs/nope.yaml"], "config configs/nope.yaml not found")):
        with pytest.raises(ConfigError, match=says):
            parse_experiment({"name": "x", "out_dir": "/tmp/x", "runs": [{"name": "r", "config": bad}]})


def test_a_stack_may_take_a_required_value_from_base_or_set(monkeypatch):
    monkeypatch.chdir(REPO)
    stack = ["configs/trainer/default.yaml", "configs/model/prnn.yaml"]  # no data layer: no data_dir
    for base, run_set in (({"data.data_dir": "data/mine"}, {}), ({}, {"data.data_dir": "data/mine"})):
        experiment = parse_experiment({"name": "x", "out_dir": "/tmp/x", "base": base, "runs": [
            {"name": "r", "config": stack, "set": run_set}]})
        assert compose(experiment, experiment.runs[0])["data"]["data_dir"] == "data/mine"
