"""Checks on user input, shared by every estimator: clear errors instead of silent wrong numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._checks import check_fraction, check_positive_int  # noqa: F401 - re-exported
from .errors import InputError

ArrayLike = Any  # numpy array, numpy memmap, torch tensor, or nested sequence


def is_memmap(X: Any) -> bool:
    """True for a numpy memmap (data captured to disk) or a :class:`MemmapRows` selection of one,
    which callers stream instead of loading."""
    return isinstance(X, (np.memmap, MemmapRows))


class MemmapRows:
    """Rows ``idx`` of a memmap, read lazily: the estimators' view of the distinct rows of data on disk.

    Slicing reads only what is asked for — ``V[a:b]`` those rows, ``V[:, c0:c1]`` that strip of
    columns of the selected rows — so a search that streams a memmap streams this view the same
    way, instead of reading every kept row into memory at once.
    """

    def __init__(self, X: np.memmap, idx: Any):
        self.X = X
        self.idx = np.asarray(idx, dtype=np.int64)
        self.shape = (int(self.idx.size),) + tuple(X.shape[1:])
        self.ndim = X.ndim
        self.dtype = X.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = (key if isinstance(key, tuple) else (key, slice(None))) if key is not Ellipsis else \
            (slice(None), slice(None))
        sel = self.idx[rows]
        if isinstance(cols, slice) and cols == slice(None):
            return np.asarray(self.X[sel])
        return np.asarray(self.X[:, cols][sel])  # the column strip first: only its bytes are read

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self.X[self.idx])
        return out if dtype is None else out.astype(dtype)


def check_matrix(X: ArrayLike, name: str = "X", *, min_rows: int = 1, check_finite: bool = True) -> ArrayLike:
    """Validate an (N, D) numeric array without copying it; returns it as numpy or torch.

    Raises :class:`InputError` for 1-D or >2-D input, non-numeric dtype, fewer than ``min_rows``
    rows, zero columns, or NaN/Inf entries (memmaps are checked block by block).
    """
    if not isinstance(X, (np.ndarray, torch.Tensor, MemmapRows)):
        try:
            X = np.asarray(X)
        except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
            raise InputError(f"{name} must be an array of shape (N, D); got {type(X).__name__}") from exc
    if X.ndim != 2:
        raise InputError(
            f"{name} must be 2-D of shape (N, D) with one row per point; got shape {tuple(X.shape)}"
            + (" (reshape 1-D data with X[:, None])" if X.ndim == 1 else "")
        )
    if isinstance(X, (np.ndarray, MemmapRows)):
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.iscomplexobj(X):
            raise InputError(f"{name} must be real and numeric; got dtype {X.dtype}")
    elif X.is_complex() or X.dtype == torch.bool:
        raise InputError(f"{name} must be real and numeric; got dtype {X.dtype}")
    n, d = X.shape
    if n < min_rows:
        raise InputError(f"{name} needs at least {min_rows} points (rows); got {n}")
    if d < 1:
        raise InputError(f"{name} has no features (shape {tuple(X.shape)})")
    if check_finite:
        check_finite_values(X, name)
    return X


def check_finite_values(X: ArrayLike, name: str = "X", block_rows: int | None = None) -> None:
    """Raise :class:`InputError` if X holds NaN or Inf, naming the bad rows (the first ten) and their count.

    Rows are checked in blocks of about 64 MiB (fewer rows when D is large), so a wide memmap is
    streamed from disk instead of being read into memory in one piece.
    """
    if block_rows is None:
        width = max(1, int(X.shape[1]) if X.ndim > 1 else 1)
        block_rows = int(max(1, min(4096, (64 * 2**20) // (8 * width))))
    found: list[int] = []
    count = 0
    for start in range(0, X.shape[0], block_rows):
        blk = X[start : start + block_rows]
        bad = ~torch.isfinite(blk) if isinstance(blk, torch.Tensor) else ~np.isfinite(np.asarray(blk))
        if bad.ndim > 1:
            bad = bad.reshape(bad.shape[0], -1).any(1)
        if bad.any():
            rows = (bad.nonzero()[0] if isinstance(bad, np.ndarray) else bad.nonzero()[:, 0].cpu())
            count += len(rows)
            found += [int(r) + start for r in rows[: 10 - len(found)]]
    if count:
        which = (", the only such row" if count == 1 else
                 f" in {count} rows: " + ", ".join(map(str, found)) + (", ..." if count > len(found) else ""))
        raise InputError(f"{name} contains NaN or Inf (first in row {found[0]}){which}; "
                         "remove or impute those rows first")


def load_npy(path: Any, what: str = "array", *, mmap: bool = True, numeric: bool = True) -> np.ndarray:
    """A ``.npy`` file, memory-mapped read-only by default (large captures are streamed, not loaded).

    Every way a file can be unreadable is one :class:`InputError` naming it: missing, a directory,
    empty, truncated (fewer bytes than its header promises), garbage, pickled objects (refused:
    unpickling runs code), and — with ``numeric`` — strings or complex numbers.
    """

    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a directory, not a .npy file")
    if not p.is_file():
        raise InputError(f"{what} file {p} does not exist")
    with open(p, "rb") as fh:
        head = fh.read(6)
    if head != b"\x93NUMPY":
        raise InputError(f"{what} {p} is not a .npy file (" + ("it is empty" if not head else "no NumPy header")
                         + "); save arrays with np.save")
    try:
        a = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        msg = str(exc).split("\n")[0]
        if "pickle" in msg or "Python objects" in msg:
            msg = "it holds pickled Python objects, which are refused (loading them runs code)"
        elif isinstance(exc, EOFError) or "mmap length" in msg or "read all data" in msg:
            msg = "it is empty or truncated (fewer bytes than its header promises)"
        raise InputError(f"{what} {p} is not a readable numeric .npy array: {msg}") from exc
    if not isinstance(a, np.ndarray):  # an .npz archive opened by np.load
        raise InputError(f"{what} {p} is not a .npy array (an .npz archive?); save one array with np.save")
    if numeric and (not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.iscomplexobj(a)):
        raise InputError(f"{what} {p} must hold real numbers; got dtype {a.dtype}")
    return a


def check_same_n(X: ArrayLike, Y: ArrayLike, names: tuple[str, str] = ("X", "Y")) -> int:
    """Both arrays must have one row per example, the same examples: return that N."""
    if X.shape[0] != Y.shape[0]:
        raise InputError(
            f"{names[0]} and {names[1]} must have the same number of examples (rows); "
            f"got {X.shape[0]} and {Y.shape[0]}"
        )
    return int(X.shape[0])


def check_labels(y: ArrayLike, n: int | None = None, *, n_classes: int | None = None,
                 name: str = "labels") -> tuple[np.ndarray, int]:
    """Integer class labels 0..C−1, one per example: returns ``(int64 array (N,), C)``.

    C is ``n_classes`` when given (every label must be below it), else ``max label + 1``. Floats are
    refused even when whole, with the cast that fixes them, so regression targets are never mistaken
    for classes.
    """
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D, one integer class per example; got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise InputError(f"features and {name} must have the same number of examples (rows); "
                         f"got {n} and {a.shape[0]}")
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() and (a == np.round(a)).all():
            raise InputError(f"{name} must have an integer dtype; got {a.dtype} (cast with {name}.astype(int))")
        raise InputError(f"{name} must be integer class indices; got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise InputError(f"{name} must be >= 0; got {int(a.min())}")
    c = (int(a.max()) + 1 if a.size else 0) if n_classes is None else int(n_classes)
    if a.size and a.max() >= c:
        raise InputError(f"{name} has label {int(a.max())}, out of range for {c} classes")
    return np.array(a, dtype=np.int64), c  # a copy: labels are small, and callers may write to it
