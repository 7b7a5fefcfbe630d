"""Every YAML in configs/ parses against the real class signatures (no data needed).

Experiment files (configs/paper/) are checked run by run: each run's composed config must parse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import yaml

from sessrec.cli import main
from sessrec.experiment import compose, load_experiment

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted((CONFIG_DIR / "paper").glob("*.yaml"))
TUNES = sorted((CONFIG_DIR / "tune").glob("*.yaml"))  # tune files: parsed in tests/tune
CONFIGS = sorted(set(CONFIG_DIR.rglob("*.yaml")) - set(EXPERIMENTS) - set(TUNES))
OVERLAYS = {  # path under configs/ -> (subcommand, base config): used on top of another config
    "predict.yaml": ("predict", "gru4rec/synthetic.yaml"),
    "logger/wandb.yaml": ("fit", "gru4rec/synthetic.yaml"),
}


def test_configs_exist():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(config, capsys):
    subcommand, base = "test" if "baselines" in config.parts else "fit", []
    name = config.relative_to(CONFIG_DIR).as_posix()
    if name in OVERLAYS:
        subcommand, base_name = OVERLAYS[name]
        base = ["--config", str(CONFIG_DIR / base_name)]
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, *base, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path" in printed and "data_dir" in printed


def _experiment_runs() -> list[tuple[Path, str]]:
    return [(path, run["name"]) for path in EXPERIMENTS for run in yaml.safe_load(path.read_text())["runs"]]


@pytest.mark.parametrize(
    ("experiment", "run"), _experiment_runs(), ids=lambda v: v.stem if isinstance(v, Path) else v
)
def test_experiment_run_parses(experiment, run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(CONFIG_DIR.parent)  # run config paths are relative to the working directory
    spec = load_experiment(experiment)
    (chosen,) = spec.select([run])
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(compose(spec, chosen)))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out
