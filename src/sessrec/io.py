"""Atomic output: write to a temporary sibling, then rename, so a failure never leaves partial output."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sessrec.errors import DataError


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise DataError(f"{path.parent}: cannot write in the output folder ({err.strerror or err})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    _check_parent_writable(path)
    if path.exists() and not overwrite:
        raise DataError(f"{path}: output exists (pass --overwrite to replace it)")
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: is a file, not an output folder (not replaced)")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise DataError(f"{path.parent}: cannot write in the output folder ({err.strerror or err})") from None
    try:
        yield tmp
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
