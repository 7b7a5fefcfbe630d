"""Every YAML in configs/ parses against the real class signatures (no data needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessrec.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_configs_exist():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(config, capsys):
    subcommand = "test" if "baselines" in config.parts else "fit"
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path" in printed and "data_dir" in printed
