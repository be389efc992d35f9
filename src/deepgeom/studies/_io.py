"""Atomic file writes: write to a temporary sibling, then ``os.replace`` it into place.

A reader (or a rerun after a crash) therefore sees either the old file or the complete new one,
never a half-written file. Directories are published the same way: built under a temporary name,
then renamed, with the done-marker written inside before the rename.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "write_table", "publish_dir"]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _atomic_via(path: Path, writer) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_table(df: pd.DataFrame, path_stem: str | Path, formats: tuple[str, ...] = ("csv", "parquet")) -> list[Path]:
    """Write ``df`` as ``<stem>.csv`` and/or ``<stem>.parquet``, each atomically."""
    stem = Path(path_stem)
    out = []
    for fmt in formats:
        p = stem.with_name(stem.name + "." + fmt)
        if fmt == "csv":
            out.append(_atomic_via(p, lambda t: df.to_csv(t, index=False)))
        elif fmt == "parquet":
            out.append(_atomic_via(p, lambda t: df.to_parquet(t, index=False)))
        else:  # pragma: no cover - internal misuse
            raise ValueError(f"unknown table format {fmt!r}")
    return out


def publish_dir(tmp_dir: Path, final_dir: Path) -> Path:
    """Move a fully written ``tmp_dir`` to ``final_dir`` with one rename (replacing a stale partial one)."""
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    return final_dir
