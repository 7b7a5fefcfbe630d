"""Safe input and output: YAML files read with one-line errors; validated paths, one writer at a time, atomic replacement, modes that follow the umask.

Every command that writes calls `claim_output` (or the atomic helpers below, which claim their own path):

- `check_output` refuses an output that is, contains or lies inside an input, or that is or contains
  the working directory, before any work is done (paths are compared after resolving symlinks);
- `output_lock` holds ``fcntl.flock`` on ``<parent>/.<name>.lock`` (non-blocking: a second writer to
  the same output fails at once; the kernel drops the lock when its process dies, even by kill -9).
  The lock file is removed on release while still locked; a waiter that locked a removed file sees
  that the path no longer names it and takes a fresh one. A kill -9 leaves an empty lock file behind,
  reused by the next run;
- while it holds the lock, a run removes what a killed run left next to its output:
  ``.<name>.XXXXXXXX.tmp`` temporaries and ``.<name>.old`` (put back as ``<name>`` when the kill fell
  between the two renames of `atomic_dir`, so the previous output is never lost);
- `atomic_write` / `atomic_dir` write to a temporary sibling and rename it over the output, so a
  failure leaves the old output or none; the result gets 0666 / 0777 masked by the umask, as a file
  or folder created by ``open`` / ``mkdir`` would (mkstemp and mkdtemp create 0600 / 0700).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from sessrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_HELD: dict[Path, int] = {}  # lock file -> depth of nested claims in this process
_HELD_GUARD = threading.Lock()


def _resolve(path: Path) -> Path:
    return Path(path).resolve()  # absolute, symlinks followed before each "..", like the kernel does


def _same(a: Path, b: Path) -> bool:
    """One path after resolving symlinks, or two names (hard links) of one existing file."""
    if _resolve(a) == _resolve(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    option: str | None = "--out",
    companions: Iterable[str | os.PathLike] = (),
) -> Path:
    """Refuse (DataError naming `option`) an output that would replace, delete or hold an input or the cwd.

    Refused: `out` (or one of the `companions` files written beside it) is an input, contains one
    (replacing the folder would delete it) or lies inside an input folder; `out` is the working
    directory or one of its parents. None among `inputs` is skipped. Returns `out` as a Path.
    """
    out = Path(out)
    name = f"{option} {out}" if option else str(out)
    inputs = [Path(p) for p in inputs if p is not None]
    _check_one(out, inputs, name)
    for companion in companions:
        _check_one(Path(companion), inputs, f"{name} (writes {companion})")
    return out


def _check_one(out: Path, inputs: list[Path], name: str) -> None:
    real = _resolve(out)
    cwd = _resolve(Path.cwd())
    if real == cwd:
        raise DataError(f"{name}: is the working directory; choose a new folder for the output")
    if real in cwd.parents:
        raise DataError(f"{name}: contains the working directory; choose a new folder for the output")
    for given in inputs:
        source = _resolve(given)
        if _same(out, given):
            raise DataError(f"{name}: is the input {given}; writing it would replace the input")
        if real in source.parents:
            raise DataError(f"{name}: contains the input {given}; replacing it would delete the input")
        if source in real.parents:
            raise DataError(f"{name}: lies inside the input {given}; choose an output outside it")


def _lock_path(path: Path) -> Path:
    return _resolve(path.parent) / f".{path.name}.lock"


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (no window for other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_locked(path: Path, lock: Path) -> int:
    """An fd holding an exclusive flock on `lock`, which the path still names; DataError when taken."""
    for _ in range(100):  # retried only when a finishing writer removed the file we had opened
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
        except OSError as err:  # e.g. a read-only or pseudo file system
            reason = err.strerror or err
            raise DataError(f"{path.parent}: cannot write in the output folder ({reason})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataError(f"{path}: another sessrec run is writing here (lock {lock})") from None
            raise DataError(f"{lock}: cannot lock ({err.strerror or err})") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise DataError(f"{path}: cannot take the lock {lock} (it keeps being replaced)")


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of output `path` (re-entrant in one process); yields the lock file's path.

    The first claim also removes what a killed run left beside `path` (see the module docstring).
    """
    path = Path(path)
    lock = _lock_path(path)
    with _HELD_GUARD:
        nested = lock in _HELD
        if nested:
            _HELD[lock] += 1
    if nested:
        try:
            yield lock
        finally:
            with _HELD_GUARD:
                _HELD[lock] -= 1
        return
    fd = _open_locked(path, lock)
    with _HELD_GUARD:
        _HELD[lock] = 1
    try:
        _clean_stale(path)
        yield lock
    finally:
        with _HELD_GUARD:
            del _HELD[lock]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # still locked: a waiter holding the old file sees it is gone and retries
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clean_stale(path: Path) -> None:
    """With the lock held: restore or drop ``.<name>.old``, remove ``.<name>.XXXXXXXX.tmp`` siblings."""
    old = path.with_name(f".{path.name}.old")
    if os.path.lexists(old):
        if os.path.lexists(path):
            _remove(old)
        else:  # killed between "output -> .old" and "temporary -> output": the old output comes back
            os.replace(old, path)
            log.warning("%s: restored the previous output left as %s by an interrupted run", path, old.name)
    if not path.parent.is_dir():
        return
    stale = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")  # tempfile's 8-character names
    left = [p for p in path.parent.iterdir() if stale.fullmatch(p.name)]
    for p in left:
        _remove(p)
    if left:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", path, len(left))


@contextlib.contextmanager
def claim_output(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    option: str | None = "--out",
    companions: Iterable[str | os.PathLike] = (),
    folder: bool = False,
) -> Iterator[Path]:
    """Check `out` before any work, then hold its lock throughout (the atomic writes inside re-enter it).

    `folder`: `out` is a folder output (an existing file there is refused), else a file output (an
    existing folder is refused). Then `check_output` for `out` and its `companions` (sidecar files).
    """
    out = Path(out)
    name = f"{option} {out}" if option else str(out)
    if folder and out.exists() and not out.is_dir():
        raise DataError(f"{name}: is a file, not an output folder (not replaced)")
    if not folder and out.is_dir():
        raise DataError(f"{name}: is a folder, not a file")
    check_output(out, inputs, option, companions)
    _check_parent_writable(Path(out))
    with output_lock(out):
        yield Path(out)


def _check_parent_writable(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{parent}: cannot create output folder ({err.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise DataError(f"{parent}: output folder is not writable")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    _check_parent_writable(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    with output_lock(path):
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as err:
            reason = err.strerror or err
            raise DataError(f"{path.parent}: cannot write in the output folder ({reason})") from None
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    check_output(path, (), option=None)
    _check_parent_writable(path)
    with output_lock(path):
        if path.exists() and not overwrite:
            raise DataError(f"{path}: output exists (pass --overwrite to replace it)")
        if path.exists() and not path.is_dir():
            raise DataError(f"{path}: is a file, not an output folder (not replaced)")
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        except OSError as err:
            reason = err.strerror or err
            raise DataError(f"{path.parent}: cannot write in the output folder ({reason})") from None
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def read_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    """The content of a YAML file; ConfigError '<file>: invalid YAML at line L, column C: <problem>' or
    '<file>: cannot read the <what> (<reason>)'."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the {what} ({reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
