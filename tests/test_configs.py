"""Every YAML in configs/ parses against the real class signatures (no data needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessrec.cli import main

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))
OVERLAYS = {"predict.yaml": ("predict", "gru4rec/synthetic.yaml")}  # name -> (subcommand, base config)


def test_configs_exist():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(config, capsys):
    subcommand, base = "test" if "baselines" in config.parts else "fit", []
    if config.parent == CONFIG_DIR and config.name in OVERLAYS:  # used on top of another config
        subcommand, base_name = OVERLAYS[config.name]
        base = ["--config", str(CONFIG_DIR / base_name)]
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, *base, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path" in printed and "data_dir" in printed
