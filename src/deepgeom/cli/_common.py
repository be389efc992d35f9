"""Helpers shared by the subcommands (not a subcommand: the dispatcher only loads ``cmd_*`` modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_npy(path: str | Path, what: str = "array", ndim: int | None = None) -> Any:
    """A ``.npy`` file memory-mapped read-only (large captures are streamed, not loaded); pickles,
    truncated files, garbage and non-numeric dtypes refused (:func:`deepgeom._validation.load_npy`),
    and with ``ndim`` an array of another rank, naming the file."""
    from .._validation import load_npy as _load
    from ..errors import InputError

    a = _load(path, what)
    if ndim is not None and a.ndim != ndim:
        shape = {1: "(N,), one value per example", 2: "(N, D), one row per example"}.get(ndim, f"{ndim}-D")
        raise InputError(f"{what} {path} has shape {a.shape}; expected {shape}")
    return a
