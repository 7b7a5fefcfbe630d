"""Where commands write: never over their inputs or the working directory, one writer per output.

Through the real CLI (in-process, or a subprocess where the umask or a second process matters): an
output that is, contains or lies inside an input is refused before any work with one `sessrec: error:`
line naming the option and the input, and the input is byte-identical afterwards; `--out .` is refused;
a second run on a locked output fails at once; a killed run's temporaries go away on the next run; the
output's modes follow the umask.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from robust_helpers import Result, run_cli, run_subprocess, subprocess_env

REPO = Path(__file__).resolve().parents[2]
IKNN = REPO / "configs" / "baselines" / "iknn.yaml"


def _digest(root: Path) -> dict[str, str]:
    """Every file under `root` (or `root` itself) -> sha1 of its bytes."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def _refused(result: Result, *says: str) -> None:
    assert result.code == 2, result.err[-2000:]
    assert result.err.strip().count("\n") == 0 and "Traceback" not in result.err, result.err
    assert result.last_line.startswith("sessrec: error: "), result.err
    for text in says:
        assert text in result.last_line, result.last_line


@pytest.fixture
def raw(small: Path, tmp_path: Path) -> Path:
    """A private copy of the generated raw folder (events.tsv, items.parquet, image.npy, text.npz)."""
    return Path(shutil.copytree(small / "raw", tmp_path / "raw"))


def test_prepare_never_writes_over_its_input_log(raw: Path, capsys) -> None:
    log = raw / "events.tsv"
    before = _digest(raw)
    cases = ((raw, "contains the input"), (log, "is a file, not an output folder"), (log / "x", "lies inside"))
    for out, reason in cases:
        result = run_cli(["prepare", log, "--out", out, "--overwrite"], capsys)
        _refused(result, f"--out {out}: {reason}")
    assert _digest(raw) == before


def test_out_dot_and_parents_of_the_working_directory_are_refused(raw: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(raw)
    before = _digest(raw.parent)
    for out in (".", "..", str(raw)):
        _refused(run_cli(["generate", "--out", out, "--overwrite", "--n-items", "20"], capsys),
                 f"--out {out}: ", "working directory")
        _refused(run_cli(["prepare", "events.tsv", "--out", out, "--overwrite"], capsys), f"--out {out}: ")
    _refused(run_cli(["extract", "shards", "/nonexistent", "--out", "..", "--overwrite"], capsys),
             "working directory")
    assert _digest(raw.parent) == before


def test_extract_never_writes_over_or_inside_its_inputs(raw: Path, tmp_path: Path, capsys) -> None:
    items = raw / "items.parquet"
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.jpg").write_bytes(b"not decoded: refused before")
    (tmp_path / "img.ids.txt").symlink_to(images)  # a link to the input where the ids file will go
    before = {**_digest(raw), **_digest(images)}
    cases = [
        (["properties", items, "--out", items, "--id-col", "item_id"], ": is the input"),
        (["properties", tmp_path / "x.csv", "--prices", items, "--out", items, "--price-col", "price"],
         ": is the input"),
        (["text", raw / "t.vocab.txt", "--out", raw / "t.npz", "--text-cols", "text"],
         f" (writes {raw / 't.vocab.txt'}): is the input"),
        (["text-embed", items, "--out", items / "x.npy", "--text-cols", "text"], ": lies inside the input"),
        (["image", images, "--out", images / "img.npy"], ": lies inside the input"),
        (["image", images / "1.jpg", "--out", images / "1.jpg"], ": is the input"),
        (["image", images, "--out", tmp_path / "img.npy"],
         f" (writes {tmp_path / 'img.ids.txt'}): is the input"),
        (["shards", images, "--out", images, "--overwrite"], ": is the input"),
        (["shards", images, "--out", tmp_path, "--overwrite"], ": contains the input"),
    ]
    (raw / "t.vocab.txt").write_text("item_id,text\n1,a\n")
    before[str(raw / "t.vocab.txt")] = _digest(raw / "t.vocab.txt")[str(raw / "t.vocab.txt")]
    for argv, reason in cases:
        result = run_cli(["extract", *argv], capsys)
        _refused(result, f"--out {argv[argv.index('--out') + 1]}{reason}")
    assert {**_digest(raw), **_digest(images)} == before


def _experiment(path: Path, out: Path, data: Path) -> Path:
    base = {"data.data_dir": str(data), "trainer.max_epochs": 1}
    runs = [{"name": "iknn", "config": str(IKNN)}]
    path.write_text(yaml.safe_dump({"name": "t", "out_dir": str(out), "base": base, "runs": runs}))
    return path


def test_a_matrix_never_takes_over_the_ids_file_of_another(raw: Path, tmp_path: Path, capsys) -> None:
    import numpy as np

    from sessrec.errors import DataError
    from sessrec.features.store import write_dense, write_sparse

    dense = write_dense(tmp_path / "ok.npy", np.ones((2, 3)), ["a", "b"])
    before = _digest(tmp_path)
    table = tmp_path / "products.csv"
    table.write_text("item_id,text\nb,red mug\na,blue cup\n")
    result = run_cli(["extract", "text", table, "--out", tmp_path / "ok.npz", "--text-cols", "text"], capsys)
    _refused(result, "ok.npz: ok.npy beside it shares the ids file ok.ids.txt")
    with pytest.raises(DataError, match="shares the ids file"):
        write_sparse(tmp_path / "ok.npz", np.eye(2), ["b", "a"])
    assert {k: v for k, v in _digest(tmp_path).items() if k != str(table)} == before
    assert dense.exists() and not (tmp_path / "ok.npz").exists()


def test_experiment_out_dir_never_holds_its_inputs(small: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    data = Path(shutil.copytree(small / "prepared", tmp_path / "data" / "prepared"))
    spec = tmp_path / "specs" / "exp.yaml"
    spec.parent.mkdir()
    cases = [
        (tmp_path / "data", "contains the input", str(data)),  # would hold runs next to (over) the data
        (data / "runs", "lies inside the input", str(data)),
        (spec.parent, "contains the input", str(spec)),
    ]
    for out, reason, named in cases:
        _experiment(spec, out, data)
        before = {**_digest(tmp_path / "data"), **_digest(spec.parent)}
        _refused(run_cli(["experiment", "--config", spec], capsys), f"{spec}: out_dir {out}: {reason}", named)
        assert {**_digest(tmp_path / "data"), **_digest(spec.parent)} == before
    monkeypatch.chdir(tmp_path / "data")
    _experiment(spec, Path(".."), data)
    _refused(run_cli(["experiment", "--config", spec], capsys), "working directory")


HOLD = """
import sys, time
from sessrec.io import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_a_locked_output_fails_at_once(small: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "prepared"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli(["prepare", small / "raw" / "events.tsv", "--out", out], capsys)
        _refused(result, f"{out}: another sessrec run is writing here (lock {tmp_path / '.prepared.lock'})")
        assert not out.exists()
    finally:
        holder.kill()  # its lock dies with it (as with kill -9): the next run takes it over
        holder.wait()
        holder.stdout.close()
    assert run_cli(["prepare", small / "raw" / "events.tsv", "--out", out], capsys).code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # the stale lock file removed


def test_stale_temporaries_go_and_modes_follow_the_umask(small: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".prepared.k1ll3d_x.tmp"  # what a kill -9 during `prepare` leaves
    stale.mkdir()
    (stale / "train.parquet").write_bytes(b"half")
    done = run_subprocess(["prepare", small / "raw" / "events.tsv", "--out", "prepared"], tmp_path,
                          umask=0o002)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
    out = tmp_path / "prepared"
    assert stat.S_IMODE(out.stat().st_mode) == 0o775
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o664}
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_dir()} == {0o775}  # arrays/
