"""Helpers shared by the subcommands (not a subcommand: the dispatcher only loads ``cmd_*`` modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError


def load_npy(path: str | Path, what: str = "array") -> Any:
    """A ``.npy`` file memory-mapped read-only (large captures are streamed, not loaded); pickles refused."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file {p} does not exist")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{what} {p} is not a readable numeric .npy array: {exc}") from exc
