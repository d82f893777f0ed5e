"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

__all__ = ["atomic_write_text", "write_csv", "atomic_dir", "remove_leftovers"]

_UMASK = os.umask(0)
os.umask(_UMASK)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for people to read
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: name the file, so the one-line error says where
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove what a killed writer left in ``folder`` (recursively): ``.<name>.*.tmp`` and ``.<name>.old-<pid>``."""
    found = [p for pattern in (".*.tmp", ".*.old-*") for p in folder.rglob(pattern)] if folder.exists() else []
    for leftover in sorted(found, key=lambda p: len(p.parts), reverse=True):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return found


def _guard(value: object) -> object:
    """Keep spreadsheet programs from running a cell as a formula (CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(frame: pd.DataFrame, path: Path, verbatim: Collection[str] = ()) -> None:
    """Write ``frame`` atomically as CSV, string cells guarded against formula injection.

    Columns named in ``verbatim`` hold data that must round-trip exactly (such as class
    labels, which a reader compares with the training labels) and are written unguarded.
    """
    safe = frame.copy()
    for col in safe.columns:
        if col not in verbatim and not pd.api.types.is_numeric_dtype(safe[col]):
            safe[col] = safe[col].map(_guard)
    atomic_write_text(path, safe.to_csv(index=False))


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` atomically as Parquet: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` whole, on error it vanishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes 0700
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.filename is None:  # joblib and Keras writes on a full disk name no file
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
