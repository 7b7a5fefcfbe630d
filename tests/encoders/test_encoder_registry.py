"""Encoder registry: built-ins, duplicate names, plug-ins from encoders/ and entry points, the command."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser

from sessrec.commands import encoders as encoders_command
from sessrec.encoders import Catalogue, DenseEncoder, FeatureEncoder, ItemIdEncoder
from sessrec.encoders import registry as registry_module
from sessrec.encoders.registry import ENTRY_POINT_GROUP, Registry, default_name
from sessrec.errors import ConfigError

PLUGIN = '''
import torch
from sessrec.encoders import FeatureEncoder


class {cls}(FeatureEncoder):
    """Constant vectors of size `size`."""

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = size

    def build(self, catalogue) -> int:
        return self.size

    def forward(self, items):
        return torch.ones(items.shape[0], self.size)
'''


@pytest.fixture()
def isolated(monkeypatch):
    """Restore sys.path and drop the `encoders.*` modules a test imported."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name == "encoders" or name.startswith("encoders.") or name.startswith("ep_plugin"):
            del sys.modules[name]


def _write_plugin(root: Path, module: str, cls: str, extra: str = "") -> Path:
    (root / "encoders").mkdir(parents=True, exist_ok=True)
    path = root / "encoders" / f"{module}.py"
    path.write_text(PLUGIN.format(cls=cls) + textwrap.dedent(extra))
    return path


def test_builtins_by_short_name() -> None:
    reg = Registry()
    assert reg.get("dense") is DenseEncoder and reg.get("id") is ItemIdEncoder
    assert reg.get("DenseEncoder") is DenseEncoder  # the class name, as a config names it
    assert set(reg.available()) >= {"id", "dense", "sparse_text", "properties"}
    assert all(source == "built-in" for _, source in reg.available().values())


def test_unknown_name_lists_available(tmp_path: Path, monkeypatch, isolated) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    with pytest.raises(ConfigError, match=r"unknown encoder 'nope' \(available: ConcatEncoder, DenseEncoder, "):
        Registry().get("nope")


def test_duplicate_names_are_refused_naming_both_sources() -> None:
    reg = Registry()

    class OtherDense(FeatureEncoder):
        """Another dense."""

    match = r"'dense' registered twice: sessrec.encoders.dense.DenseEncoder \(built-in\)"
    with pytest.raises(ConfigError, match=match):
        reg.register("dense", OtherDense, "mine")
    reg.register("dense", DenseEncoder, "again")  # the same class again is not a conflict
    with pytest.raises(ConfigError, match="not a FeatureEncoder"):
        reg.register("thing", int)


def test_default_names() -> None:
    class TextTransformerEncoder(FeatureEncoder): ...

    class CNNImage(FeatureEncoder): ...

    assert default_name(TextTransformerEncoder) == "text_transformer"
    assert default_name(CNNImage) == "cnn_image"
    assert default_name(DenseEncoder) == "dense"


def test_plugin_folder_discovery_and_config(tmp_path: Path, isolated) -> None:
    _write_plugin(tmp_path, "reg_plugin_a", "ConstantVecEncoder")
    reg = Registry()
    assert reg.discover(tmp_path, entry_points=False) == ["constant_vec"]
    cls, source = reg.available()["constant_vec"]
    assert cls.__module__ == "encoders.reg_plugin_a" and source.startswith("encoders folder")

    def model(encoders: dict[str, FeatureEncoder]) -> None: ...

    parser = ArgumentParser()
    parser.add_function_arguments(model, "model")
    cfg = parser.parse_object(
        {
            "model": {
                "encoders": {
                    "a": {"class_path": "encoders.reg_plugin_a.ConstantVecEncoder", "init_args": {"size": 2}},
                    "b": {"class_path": "ConstantVecEncoder"},
                }
            }
        }
    )
    built = parser.instantiate(cfg).model.encoders
    catalogue = Catalogue(np.array(["x", "y"], dtype=object), tmp_path)
    for enc in built.values():
        enc.bind(catalogue)
    assert built["a"](torch.tensor([0, 1])).shape == (2, 2) and built["b"].output_size == 3


def test_plugin_name_clash_with_builtin(tmp_path: Path, isolated) -> None:
    _write_plugin(tmp_path, "reg_plugin_b", "ClashEncoder", extra="ClashEncoder.name = 'dense'\n")
    match = r"'dense' registered twice: .*\(built-in\) and .*ClashEncoder \(encoders folder"
    with pytest.raises(ConfigError, match=match):
        Registry().discover(tmp_path, entry_points=False)


def test_broken_plugin_names_the_file(tmp_path: Path, isolated) -> None:
    (tmp_path / "encoders").mkdir()
    (tmp_path / "encoders" / "reg_plugin_broken.py").write_text("raise RuntimeError('boom')\n")
    match = r"reg_plugin_broken.py: cannot import encoder plug-in \(RuntimeError: boom\)"
    with pytest.raises(ConfigError, match=match):
        Registry().discover(tmp_path, entry_points=False)


def test_entry_point_discovery(tmp_path: Path, monkeypatch, isolated) -> None:
    (tmp_path / "ep_plugin_mod.py").write_text(PLUGIN.format(cls="EpVecEncoder"))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint("ep_vec", "ep_plugin_mod:EpVecEncoder", ENTRY_POINT_GROUP)]
    def entry_points(group: str) -> list:
        return eps if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    reg = Registry()
    assert reg.discover(tmp_path / "no_project") == ["ep_vec"]
    cls, source = reg.available()["ep_vec"]
    assert cls.__name__ == "EpVecEncoder"
    assert source.startswith("entry point ep_vec = ep_plugin_mod:EpVecEncoder")
    eps.append(importlib.metadata.EntryPoint("id", "ep_plugin_mod:EpVecEncoder", ENTRY_POINT_GROUP))
    match = r"'id' registered twice: .*ItemIdEncoder \(built-in\) and .*EpVecEncoder \(entry point id"
    with pytest.raises(ConfigError, match=match):
        Registry().discover_entry_points()
    eps[:] = [importlib.metadata.EntryPoint("bad", "ep_plugin_missing:X", ENTRY_POINT_GROUP)]
    match = r"entry point bad = ep_plugin_missing:X: cannot load \(ModuleNotFoundError"
    with pytest.raises(ConfigError, match=match):
        Registry().discover_entry_points()


def test_encoders_command_lists_sources(tmp_path: Path, monkeypatch, capsys, isolated) -> None:
    _write_plugin(tmp_path, "reg_plugin_c", "ListedVecEncoder")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(registry_module, "REGISTRY", Registry())  # the command imports it when it runs
    parser = argparse.ArgumentParser()
    encoders_command.add_arguments(parser)
    assert encoders_command.run(parser.parse_args(["--root", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    assert "listed_vec" in out and "encoders.reg_plugin_c.ListedVecEncoder" in out
    assert "[encoders folder:" in out and "Constant vectors of size" in out
    assert "SparseTextEncoder" in out and "[built-in; short name sparse_text]" in out
    rows = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert "ListedVecEncoder" in rows and "DenseEncoder" in rows

