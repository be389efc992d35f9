"""Atomic file writes, the one implementation every package uses.

A file is written to a temporary sibling, flushed to disk (``fsync``), moved into place with
``os.replace`` and the directory entry is flushed too (``fsync`` of the directory), so a reader — or
a rerun after a crash, even after a power loss — sees either the old file or the complete new one,
never a half-written file or a rename that was lost.  Directories are published the same way:
built under a temporary name, then renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "write_table",
           "publish_dir", "replace_durably", "fsync_dir"]


def fsync_dir(directory: str | Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk; a no-op where the platform
    cannot open directories (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``; elsewhere the usual 0o022)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: str | Path, path: str | Path) -> None:
    """Move a fully written ``tmp`` onto ``path``: fsync the file, ``os.replace`` it, fsync the
    directory (for writers that fill their temporary file themselves, e.g. block by block)."""
    _fsync_file(str(tmp))
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``; fsync it, move it into place with
    ``os.replace`` and fsync the directory.  On any error the temporary file is removed and ``path``
    keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp's file is private (0600); the published one gets the mode a plain open() would give
        # it, or keeps the mode of the file it replaces
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        replace_durably(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (non-JSON values as ``str``)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table(df: Any, path_stem: str | Path, formats: tuple[str, ...] = ("csv", "parquet")) -> list[Path]:
    """Write a DataFrame as ``<stem>.csv`` and/or ``<stem>.parquet``, each atomically."""
    stem = Path(path_stem)
    out = []
    for fmt in formats:
        p = stem.with_name(stem.name + "." + fmt)
        if fmt == "csv":
            out.append(atomic_write(p, lambda t: df.to_csv(t, index=False)))
        elif fmt == "parquet":
            out.append(atomic_write(p, lambda t: df.to_parquet(t, index=False)))
        else:  # pragma: no cover - internal misuse
            raise ValueError(f"unknown table format {fmt!r}")
    return out


def publish_dir(tmp_dir: Path, final_dir: Path) -> Path:
    """Move a fully written ``tmp_dir`` to ``final_dir`` with one rename (replacing a stale partial
    one), then fsync the parent directory."""
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)
    return final_dir
