"""A bundled corpus of real English sentences, for capturing text models offline.

The sentences come from the Python Language Reference shipped with CPython (``pydoc_data``, PSF
License): prose written by people, split into sentences of 8–40 words with code symbols removed (the
file's header says how). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["sentences"]

_CORPUS = Path(__file__).with_name("corpus") / "sentences.txt"


def sentences(n: int | None = None, *, seed: int = 0) -> list[str]:
    """The bundled sentences (784), or a seeded random subset of ``n`` of them in corpus order."""
    lines = [s for s in _CORPUS.read_text(encoding="utf-8").splitlines() if s and not s.startswith("#")]
    if n is None or n >= len(lines):
        return lines
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer or None; got {n!r}")
    idx = np.sort(np.random.default_rng(seed).choice(len(lines), size=n, replace=False))
    return [lines[i] for i in idx]
