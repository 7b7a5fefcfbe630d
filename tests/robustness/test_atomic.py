"""Outputs are written atomically: a failure part-way leaves the old output (or none) and no temp files.

Audited writers: prepared data (`write_prepared`, a folder), feature stores (`write_dense`/`write_sparse`:
matrix + ids file, renamed together; `write_properties`), extraction (image parts, progress file and
merge; TF-IDF vocabulary; webdataset shards, a folder), predictions (`write_topk`), experiment results
(sessrec.experiment.results, run.yaml) and the synthetic generator (a folder). Checkpoints are written by
Lightning, which saves to a temporary file and renames it (its `_atomic_save`); test_faults.py kills a
run after a checkpoint and resumes from it.
"""

from __future__ import annotations

import json

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import torch

from sessrec.data.prepared import PreparedData, write_prepared
from sessrec.errors import DataError
from sessrec.features.store import ids_path, load_dense, write_dense, write_properties, write_sparse
from sessrec.io import atomic_dir, atomic_write
from sessrec.evaluation.predict import write_topk

SRC = Path(__file__).resolve().parents[2] / "src" / "sessrec"


class Boom(Exception):
    pass


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]


def _splits() -> dict[str, pd.DataFrame]:
    train = pd.DataFrame({"session": np.array([0, 0, 1, 1], np.int64),
                          "item": np.array([0, 1, 1, 0], np.int32),
                          "time": [1.0, 2.0, 3.0, 4.0]})
    return {"train_full": train, "train": train, "valid": train.iloc[:0], "test": train}


def _fail_on_call(monkeypatch, module, name: str, n: int) -> None:
    """Make `module.name` raise Boom on its n-th call (after writing a few bytes, when it writes)."""
    real, calls = getattr(module, name), []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            target = args[1] if len(args) > 1 else args[0]
            if hasattr(target, "write"):
                target.write(b"partial")
            elif isinstance(target, (str, Path)):
                Path(target).write_bytes(b"partial")
            raise Boom
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fake)


def test_prepared_folder_old_or_nothing(tmp_path: Path, monkeypatch) -> None:
    import sessrec.data.prepared as prepared

    out = tmp_path / "prepared"
    _fail_on_call(monkeypatch, prepared.pq, "write_table", 3)
    with pytest.raises(Boom):
        write_prepared(out, _splits(), np.array(["a", "b"], dtype=object), {})
    assert not out.exists() and not _leftovers(tmp_path)

    monkeypatch.undo()
    write_prepared(out, _splits(), np.array(["a", "b"], dtype=object), {"version": 1})
    _fail_on_call(monkeypatch, prepared.pq, "write_table", 2)
    with pytest.raises(Boom):
        write_prepared(out, _splits(), np.array(["a", "b"], dtype=object), {"version": 2}, overwrite=True)
    assert PreparedData.load(out).meta["version"] == 1  # the old folder, whole
    assert not _leftovers(tmp_path)


def test_dense_store_old_or_new_never_mixed(tmp_path: Path, monkeypatch) -> None:
    import sessrec.features.store as store

    path = write_dense(tmp_path / "vec.npy", np.ones((3, 2), np.float32), ["a", "b", "c"])
    _fail_on_call(monkeypatch, store.np, "save", 1)
    with pytest.raises(Boom):
        write_dense(path, np.zeros((4, 2), np.float32), ["d", "c", "b", "a"])
    assert ids_path(path).read_text().split() == ["a", "b", "c"]  # the ids file was not replaced alone
    assert load_dense(path, np.array(["a", "b", "c"], dtype=object)).values.sum() == 6.0
    assert not _leftovers(tmp_path)


def test_sparse_and_properties_old_or_nothing(tmp_path: Path, monkeypatch) -> None:
    import sessrec.features.store as store

    _fail_on_call(monkeypatch, store.sp, "save_npz", 1)
    with pytest.raises(Boom):
        write_sparse(tmp_path / "text.npz", sp.identity(3, format="csr"), ["a", "b", "c"])
    assert not (tmp_path / "text.npz").exists() and not (tmp_path / "text.ids.txt").exists()

    frame = pd.DataFrame({"item_id": ["a", "b"], "price": [1.0, 2.0]})
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda self, p, **kw: (Path(p).write_bytes(b"x"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        write_properties(tmp_path / "props.parquet", frame)
    assert not (tmp_path / "props.parquet").exists() and not _leftovers(tmp_path)


def test_predictions_old_or_nothing(tmp_path: Path, monkeypatch) -> None:
    parts = [(torch.tensor([0]), torch.tensor([[1, 0]]), torch.tensor([[0.5, 0.1]]))]
    out = tmp_path / "recs.csv"
    write_topk(out, parts, np.array(["x", "y"], dtype=object))
    before = out.read_text()
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, p, **kw: (Path(p).write_text("half"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        write_topk(out, parts, np.array(["x", "y"], dtype=object))
    assert out.read_text() == before and not _leftovers(tmp_path)


def test_atomic_helpers_refuse_to_replace_the_wrong_kind(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="folder: is a folder, not a file"):
        with atomic_write(tmp_path / "folder"):
            pass
    (tmp_path / "events.tsv").write_text("keep me")
    with pytest.raises(DataError, match="events.tsv: is a file, not an output folder"):
        with atomic_dir(tmp_path / "events.tsv", overwrite=True):
            pass
    assert (tmp_path / "events.tsv").read_text() == "keep me" and not _leftovers(tmp_path)


WRITE = re.compile(r"\.write_text\(|\.write_bytes\(|\.to_parquet\(|\.to_csv\(|pq\.write_table\(|np\.save\(|"
                   r"sp\.save_npz\(|torch\.save\(|open\([^)]*[\"'][wa]b?[\"']|tarfile\.open\([^)]*[\"']w")
ALLOWED = {  # writes that need no atomicity
    ("experiment/runner.py", "error_log.write_text("),  # the traceback of a failed run, for the user
    ("tune/study.py", '"error.log").write_text('),  # the traceback of a failed trial, for the user
    ("tune/report.py", "to_csv(index=False)"),  # to a string, written by atomic_write
    ("tune/study.py", '.lock"), "a")'),  # an empty lock file, opened to hold an flock
}


def test_every_file_write_in_the_library_goes_through_a_temporary_file() -> None:
    """A grep audit: each write in src/ targets a temporary path (`tmp`, from atomic_write/atomic_dir)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if not WRITE.search(code) or "def to_csv(" in code:
                continue
            if "tmp" in code or "(fh," in code:  # fh: a handle whose open(...) line is audited itself
                continue
            if any(rel == f and snippet in code for f, snippet in ALLOWED):
                continue
            offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "writes outside atomic_write/atomic_dir:\n" + "\n".join(offenders)


def test_generated_and_prepared_folders_have_no_leftovers(small: Path) -> None:
    assert not _leftovers(small)
    meta = json.loads((small / "prepared" / "meta.json").read_text())
    assert pq.read_table(small / "prepared" / "items.parquet").num_rows == meta["n_items"] > 0
