"""User data from ``.npy``, ``.npz``, ``.csv``, ``.parquet``, ``.pt``/``.pth`` and ``.safetensors`` files.

Layouts understood (keys are matched exactly, first match wins):

- ``.npy``: one array of features, shape ``(N, D)`` or ``(N, *input_shape)``; no labels.
- ``.npz`` / ``.safetensors`` / a ``dict`` saved with ``torch.save``: features under ``x``, ``X`` or
  ``features``, optional labels under ``y``, ``labels`` or ``targets``; or explicit splits
  ``x_train``/``y_train`` and ``x_test``/``y_test`` (labels optional, but both splits or neither).
- ``.pt``/``.pth``: a tensor (features only), a dict as above, or a ``(x, y)`` tuple/list.
  Loaded with ``torch.load(weights_only=True)``: no pickled code is ever run.
- ``.csv`` / ``.parquet``: one row per example, numeric feature columns; the labels are the column
  named by ``label_column``, else a column called ``label``, ``labels``, ``y``, ``target`` or
  ``targets`` when there is one.

Labels may also come from a separate file, ``labels=FILE`` (``.npy``, ``.csv`` with one column, or
``.txt`` with one integer per line), one per example in the same order.

Every error names the file (and key) at fault.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file as st_load

from .._validation import check_fraction, load_npy
from ..errors import InputError
from ._dataset import Dataset, as_inputs, as_labels

__all__ = ["load_file", "FILE_SUFFIXES", "X_KEYS", "Y_KEYS"]

FILE_SUFFIXES = (".npy", ".npz", ".csv", ".parquet", ".pt", ".pth", ".safetensors")
X_KEYS = ("x", "X", "features")
Y_KEYS = ("y", "labels", "targets")
#: Column names read as labels in a table file when ``label_column`` is not given.
LABEL_COLUMNS = ("label", "labels", "y", "target", "targets")


def _read_table(path: Path, label_column: str | None) -> dict[str, Any]:
    """A CSV/Parquet table → ``{"x": (N, D) float array, "y": labels or absent}``."""
    import pandas as pd  # lazy: `deepgeom data list` must not import pandas

    df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if label_column is not None and label_column not in df.columns:
        raise InputError(f"{str(path)!r} has no column {label_column!r}; columns: {list(map(str, df.columns))}")
    ycol = label_column or next((c for c in LABEL_COLUMNS if c in df.columns), None)
    feats = df.drop(columns=[ycol]) if ycol is not None else df
    bad = [str(c) for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if bad:
        raise InputError(f"{str(path)!r}: feature columns must be numeric; {bad} are not (name the label "
                         "column with label_column=NAME, or drop text columns)")
    out: dict[str, Any] = {"x": feats.to_numpy(dtype=np.float64)}
    if ycol is not None:
        out["y"] = df[ycol].to_numpy()
    return out


def read_labels(path: str | os.PathLike[str], what: str | None = None) -> Any:
    """Class labels from a file (``.npy``, a one-column ``.csv`` or ``.txt`` lines), checked as labels
    (:func:`~deepgeom.data._dataset.as_labels`; ``what`` names them in errors)."""
    return as_labels(_read_labels(path), what or f"labels {path}")


def _read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """A labels file: ``.npy`` array, ``.csv`` with one column (header allowed) or ``.txt`` lines."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"labels file {str(p)!r} not found")
    try:
        if p.suffix.lower() == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix.lower() in (".csv", ".parquet"):
            import pandas as pd  # lazy: `deepgeom data list` must not import pandas

            df = pd.read_csv(p) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
            if df.shape[1] != 1:
                raise InputError(f"labels file {str(p)!r} must have one column; it has {df.shape[1]}")
            return df.iloc[:, 0].to_numpy()
        return np.loadtxt(p, dtype=np.int64, ndmin=1)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file cannot be used
        raise InputError(f"cannot read labels {str(p)!r}: {type(exc).__name__}: {exc}") from exc


def _read(path: Path, label_column: str | None = None) -> Any:
    suffix = path.suffix.lower()
    if label_column is not None and suffix not in (".csv", ".parquet"):
        raise InputError(f"label_column applies to .csv/.parquet files; {str(path)!r} is {suffix}")
    try:
        if suffix in (".csv", ".parquet"):
            return _read_table(path, label_column)
        if suffix == ".npy":
            return load_npy(path, "data file", mmap=False, numeric=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix in (".pt", ".pth"):
            return torch.load(path, map_location="cpu", weights_only=True)
        if suffix == ".safetensors":
            return st_load(str(path))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file cannot be used
        raise InputError(f"cannot read {str(path)!r} as {suffix}: {type(exc).__name__}: {exc}") from exc
    raise InputError(f"{str(path)!r}: unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for k in keys:
        if k in d:
            return k, d[k]
    return None, None


def _features(a: Any, where: str) -> Any:
    if not isinstance(a, (np.ndarray, torch.Tensor)):
        raise InputError(f"{where}: expected an array of features; got {type(a).__name__}")
    if a.ndim < 2:
        raise InputError(f"{where}: features must be (N, D) with one row per example; got shape "
                         f"{tuple(a.shape)}" + (" (save 1-D data as x[:, None])" if a.ndim == 1 else ""))
    if a.shape[0] < 1 or int(np.prod(a.shape[1:])) < 1:
        raise InputError(f"{where}: features must have at least one row and one column; got shape {tuple(a.shape)}")
    return a


def _splits(obj: Any, where: str) -> tuple[Any, Any, Any, Any]:
    """(x_train, y_train, x_test, y_test) from whatever the file held; test parts may be None."""
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _features(obj, where), None, None, None
    if isinstance(obj, (tuple, list)) and 1 <= len(obj) <= 2:
        x = _features(obj[0], f"{where}[0]")
        return x, (obj[1] if len(obj) == 2 else None), None, None
    if isinstance(obj, dict):
        keys = sorted(map(str, obj))
        if "x_train" in obj:
            has_y = ("y_train" in obj, "y_test" in obj)
            if has_y[1] and "x_test" not in obj:
                raise InputError(f"{where}: has y_test but no x_test (keys {keys})")
            if "x_test" in obj and has_y[0] != has_y[1]:
                raise InputError(f"{where}: labels for one split only (keys {keys}); give y_train and y_test or neither")
            return (_features(obj["x_train"], f"{where}:x_train"), obj.get("y_train"),
                    _features(obj["x_test"], f"{where}:x_test") if "x_test" in obj else None, obj.get("y_test"))
        kx, x = _first(obj, X_KEYS)
        if kx is None:
            raise InputError(f"{where}: no features found; expected a key among {list(X_KEYS)} or "
                             f"'x_train'/'x_test'; the file has {keys}")
        return _features(x, f"{where}:{kx}"), _first(obj, Y_KEYS)[1], None, None
    raise InputError(f"{where}: expected an array, a dict of arrays or an (x, y) pair; got {type(obj).__name__}")


def load_file(
    path: str | os.PathLike[str], *, seed: int = 0, test_fraction: float = 0.0, name: str | None = None,
    labels: str | os.PathLike[str] | None = None, label_column: str | None = None,
) -> Dataset:
    """Load a user's features (and labels) from a file into a :class:`Dataset`.

    Args:
        path: a ``.npy``, ``.npz``, ``.csv``, ``.parquet``, ``.pt``/``.pth`` or ``.safetensors`` file
            (layouts in the module doc).
        seed: seed of the random train/test split (only with ``test_fraction > 0``).
        test_fraction: when the file has no explicit test split, hold out this share of examples
            (a seeded random, disjoint split); 0 keeps everything in train and leaves test empty.
        name: dataset name (default: the path).
        labels: a separate labels file (``.npy``, one-column ``.csv``, ``.txt``), one label per example.
        label_column: the labels column of a ``.csv``/``.parquet`` file (default: ``label``, ``labels``,
            ``y``, ``target`` or ``targets`` if present, else unlabelled).

    Raises:
        InputError: missing or unreadable file, features not (N, D...), label count not equal to the
            number of examples, labels that are not integer class ids, NaN/Inf — always naming the file.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "f.npz"
        >>> np.savez(p, x=np.ones((4, 3)), y=np.array([0, 1, 1, 0]))
        >>> ds = load_file(p)
        >>> ds.x_train.shape, ds.n_classes
        (torch.Size([4, 3]), 2)
    """
    path = Path(path).expanduser()
    where = str(path)
    if not path.is_file():
        raise InputError(f"data file {where!r} not found" + ("" if path.parent.is_dir() else
                                                                f" (no directory {str(path.parent)!r})"))
    x_tr, y_tr, x_te, y_te = _splits(_read(path, label_column), where)
    if labels is not None:
        if y_tr is not None or x_te is not None:
            raise InputError(f"{where} already holds labels or an explicit split; labels= is for files of "
                             "features only")
        y_tr = _read_labels(labels)
    if x_te is not None and tuple(x_te.shape[1:]) != tuple(x_tr.shape[1:]):
        raise InputError(f"{where}: x_train has examples of shape {tuple(x_tr.shape[1:])} but x_test "
                         f"{tuple(x_te.shape[1:])}")
    xt = as_inputs(x_tr, f"{where}: features")
    yt = None if y_tr is None else as_labels(y_tr, f"{where}: labels")
    xe = None if x_te is None else as_inputs(x_te, f"{where}: test features")
    ye = None if y_te is None else as_labels(y_te, f"{where}: test labels")
    for x, y, what in ((xt, yt, "train"), (xe, ye, "test")):
        if x is not None and y is not None and y.shape[0] != x.shape[0]:
            raise InputError(f"{where}: {y.shape[0]} labels for {x.shape[0]} {what} examples; "
                             "there must be one label per row")
    meta: dict[str, Any] = {"source": "file", "path": where, "seed": int(seed)}
    tf = check_fraction(test_fraction, "test_fraction", high=1.0, open_high=True)
    if xe is None:
        if tf > 0:
            n = xt.shape[0]
            n_te = int(round(tf * n))
            if n_te < 1 or n_te >= n:
                raise InputError(f"{where}: test_fraction={tf} leaves {n_te} of {n} examples for testing; "
                                 "need at least one in each split")
            perm = np.random.default_rng(seed).permutation(n)
            te, tr = np.sort(perm[:n_te]), np.sort(perm[n_te:])
            meta.update(test_fraction=tf, train_indices=tr, test_indices=te)
            xe, xt = xt[torch.from_numpy(te)], xt[torch.from_numpy(tr)]
            if yt is not None:
                ye, yt = yt[torch.from_numpy(te)], yt[torch.from_numpy(tr)]
        else:
            xe = xt.new_empty((0, *xt.shape[1:]))
            ye = None if yt is None else yt.new_empty((0,))
    elif tf > 0:
        raise InputError(f"{where} already has an explicit test split (x_test); test_fraction must be 0")
    labels = [t for t in (yt, ye) if t is not None and t.numel()]
    n_classes = int(max(int(t.max()) for t in labels)) + 1 if labels else 0
    return Dataset(name=name or where, x_train=xt, y_train=yt, x_test=xe, y_test=ye, n_classes=n_classes,
                   input_shape=tuple(int(s) for s in xt.shape[1:]), meta=meta)
