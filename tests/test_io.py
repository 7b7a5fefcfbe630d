"""sessrec.io: output checks, the output lock, stale temporaries of killed runs, modes under a umask."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sessrec.errors import DataError
from sessrec.io import atomic_dir, atomic_write, check_output, claim_output, output_lock


def test_check_output_refuses_inputs_and_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "root" / "data"
    data.mkdir(parents=True)
    log = data / "events.tsv"
    log.write_text("x")
    (tmp_path / "link").symlink_to(data)
    (tmp_path / "work" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    cases = {
        log: "is the input",
        tmp_path / "link" / "events.tsv": "is the input",  # through a symlink
        data: "contains the input",
        tmp_path / "root": "contains the input",
        data / "events.tsv" / "sub": "lies inside the input",
    }
    for out, reason in cases.items():
        with pytest.raises(DataError, match=f"^--out {out}: {reason} {log}"):
            check_output(out, [log])
    for out in (Path("."), Path(".."), Path("sub/.."), tmp_path / "work", tmp_path / "link" / ".." / ".."):
        with pytest.raises(DataError, match="working directory"):
            check_output(out, [])
    with pytest.raises(DataError, match="contains the input"):  # ".." after a symlink: its target's parent
        check_output(data, [tmp_path / "link" / ".." / "data" / "events.tsv"])
    assert check_output(tmp_path / "prepared", [log]) == tmp_path / "prepared"
    assert check_output("sibling.tsv", [log, None]) == Path("sibling.tsv")


def test_hard_link_to_an_input_is_the_input(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text("x")
    os.link(tmp_path / "a.tsv", tmp_path / "b.tsv")
    with pytest.raises(DataError, match="is the input"):
        check_output(tmp_path / "b.tsv", [tmp_path / "a.tsv"], option="--prices")


def test_second_writer_is_refused_and_the_lock_file_goes_away(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sessrec.io import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError) as err:
            with atomic_dir(out):
                pass
        assert str(err.value) == f"{out}: another sessrec run is writing here (lock {tmp_path}/.out.lock)"
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".out.lock"]
    finally:
        holder.kill()  # the kernel drops a dead process's lock: the next writer gets it
        holder.wait()
        holder.stdout.close()
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("new")
    assert (out / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    with claim_output(tmp_path / "x.npy", []):
        with atomic_write(tmp_path / "x.npy") as tmp:
            tmp.write_text("v")
        with output_lock(tmp_path / "x.npy"):
            pass
        assert (tmp_path / ".x.npy.lock").exists()
    assert not (tmp_path / ".x.npy.lock").exists() and (tmp_path / "x.npy").read_text() == "v"


def test_stale_temporaries_of_a_killed_run_are_removed_under_the_lock(tmp_path: Path) -> None:
    stale = [tmp_path / ".out.abcd_123.tmp", tmp_path / ".f.txt.zzzzzzzz.tmp"]
    stale[0].mkdir()
    (stale[0] / "half.parquet").write_text("half")
    stale[1].write_text("half")
    other = [tmp_path / ".out.npy.abcdefgh.tmp", tmp_path / ".outer.abcdefgh.tmp", tmp_path / "keep.tmp"]
    for path in other:  # another output's temporaries (maybe a live writer's) are not touched
        path.write_text("other")
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("a")
    with atomic_write(tmp_path / "f.txt") as tmp:
        tmp.write_text("f")
    assert not any(p.exists() for p in stale) and all(p.exists() for p in other)


def test_killed_between_the_two_renames_the_old_output_comes_back(tmp_path: Path) -> None:
    old = tmp_path / ".out.old"  # `out` was renamed away, the new one not yet renamed in
    old.mkdir()
    (old / "v").write_text("1")
    new = tmp_path / ".out.qwertyui.tmp"
    new.mkdir()
    with pytest.raises(DataError, match="output exists"):
        with atomic_dir(tmp_path / "out", overwrite=False):
            pass
    assert (tmp_path / "out" / "v").read_text() == "1" and not old.exists() and not new.exists()


MODES = """
import os, stat, sys
from pathlib import Path
from sessrec.io import atomic_dir, atomic_write
os.umask(int(sys.argv[2], 8))
root = Path(sys.argv[1])
with atomic_write(root / "f.txt") as tmp:
    tmp.write_text("x")
with atomic_dir(root / "d") as tmp:
    with atomic_write(tmp / "inner.txt") as inner:
        inner.write_text("y")
    (tmp / "plain.txt").write_text("z")
print(" ".join(oct(stat.S_IMODE(p.stat().st_mode)) for p in
               (root / "f.txt", root / "d", root / "d" / "inner.txt", root / "d" / "plain.txt")))
"""


@pytest.mark.parametrize("umask, expected", [("022", "0o644 0o755 0o644 0o644"),
                                             ("002", "0o664 0o775 0o664 0o664"),
                                             ("077", "0o600 0o700 0o600 0o600")])
def test_modes_follow_the_umask(tmp_path: Path, umask: str, expected: str) -> None:
    done = subprocess.run([sys.executable, "-c", MODES, str(tmp_path), umask],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
