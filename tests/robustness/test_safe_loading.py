"""Checkpoints, weights and feature stores load without running pickled code (docs/design.md, "Safe loading").

A grep audit over src/ (every `torch.load` passes weights_only=True, every `np.load` allow_pickle=False,
no pickle/joblib/read_pickle at all), and files that WOULD run code when unpickled: each is refused with
a one-line DataError naming it, and the marker file its payload would create never appears.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sessrec.training.checkpoints import load_checkpoint
from sessrec.errors import DataError
from sessrec.features.store import load_dense, load_sparse

SRC = Path(__file__).resolve().parents[2] / "src" / "sessrec"
ITEMS = np.array(["a", "b"], dtype=object)


def _calls(pattern: str) -> list[tuple[str, str]]:
    """(file:line, the call's text up to its closing parenthesis) for each match of `pattern` in src/."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(pattern, text):
            depth, end = 0, m.end()
            for end in range(m.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{path.relative_to(SRC)}:{line}", text[m.start() : end + 1]))
    return found


def test_audit_loaders_in_the_library() -> None:
    torch_loads = _calls(r"torch\.load\(")
    assert torch_loads, "the audit found no torch.load at all: is SRC right?"
    for where, call in torch_loads:
        assert "weights_only=True" in call, f"{where}: {call}"
    for where, call in _calls(r"\bnp\.load\("):
        assert "allow_pickle=False" in call, f"{where}: {call}"
    unsafe = r"\b(pickle\.loads?|joblib\.load|read_pickle|dill\.loads?)\(|weights_only=False"
    for where, call in _calls(unsafe):
        raise AssertionError(f"{where}: {call}")


class Payload:
    """Unpickling this touches a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "extra": Payload(marker)}, path)  # a real torch zip with a pickled object
    with pytest.raises(DataError, match=r"evil\.ckpt: cannot load as a checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and not marker.exists()


def test_plain_checkpoint_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "sessrec_rng": {"cpu": torch.get_rng_state()}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    torch.save([1, 2], path)
    with pytest.raises(DataError, match="not a Lightning checkpoint"):
        load_checkpoint(path)


def test_feature_files_with_code_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    dense = tmp_path / "vec.npy"
    np.save(dense, np.array([Payload(marker), Payload(marker)], dtype=object), allow_pickle=True)
    (tmp_path / "vec.ids.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"vec\.npy: cannot read as \.npy"):
        load_dense(dense, ITEMS)
    sparse = tmp_path / "text.npz"
    np.savez(sparse, format=np.array(Payload(marker), dtype=object), shape=np.array([2, 2]))
    (tmp_path / "text.ids.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"text\.npz: cannot read"):
        load_sparse(sparse, ITEMS)
    assert not marker.exists()


def test_image_weights_with_code_are_refused(tmp_path: Path, capsys) -> None:
    from robust_helpers import run_cli

    marker = tmp_path / "ran"
    weights = tmp_path / "weights.pth"
    weights.write_bytes(pickle.dumps({"conv1.weight": Payload(marker)}, protocol=2))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"not read: the weights fail first")
    result = run_cli(["extract", "image", tmp_path / "images", "--out", tmp_path / "img.npy",
                      "--weights", weights, "--workers", "0"], capsys)
    assert result.code == 2 and result.last_line.startswith("sessrec: error: ")
    assert "weights.pth: cannot load weights" in result.last_line and "Traceback" not in result.err
    assert not marker.exists() and not (tmp_path / "img.npy").exists()
    assert not (tmp_path / "img.npy.parts").exists()
