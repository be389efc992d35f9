"""Helpers shared by the subcommands (not a subcommand: the dispatcher only loads ``cmd_*`` modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_npy(path: str | Path, what: str = "array") -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only (large captures are streamed, not loaded); pickles,
    truncated files, garbage and non-numeric dtypes refused (:func:`deepgeom._validation.load_npy`)."""
    from .._validation import load_npy as _load

    return _load(path, what)
