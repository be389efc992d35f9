r"""Intrinsic-dimension profiles: the ID of every analysed layer against relative depth
(Ansuini et al., NeurIPS 2019, Figs. 2–4).

:func:`id_profile` captures the layers of a model on some data (or reads a capture) and applies the
estimators of :mod:`deepgeom.functional.intrinsic_dim` layer by layer, returning one table row per
layer.  Relative depth is the capture's (``model.analysis_layers`` index / (L − 1), so the input is 0
and the output 1); Ansuini et al. plot the layer index over the number of analysed layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch.nn as nn

from .._io import atomic_write
from .._validation import check_matrix
from ..capture import capture, load_capture
from ..errors import InputError, UnknownNameError
from ..functional.intrinsic_dim import (
    find_duplicates,
    gride,
    is_constant,
    levina_bickel,
    pca_id,
    take_rows,
    twonn,
)
from ..functional.neighbors import knn

__all__ = ["id_profile", "save_table", "load_table", "ESTIMATORS"]

ESTIMATORS = ("twonn", "twonn_mle", "pca", "gride", "levina_bickel")


def _source(model_or_capture: Any, data: Any, layers: Any, batch_size: int, progress: bool,
            device: Any, reduce: str | None = None) -> tuple[Mapping[str, Any], dict[str, float]]:
    if isinstance(model_or_capture, (str, Path)):
        path = Path(model_or_capture)
        if not path.is_dir():
            raise InputError(f"capture directory {path} does not exist (write one with deepgeom capture)")
        cap = load_capture(path)
    elif isinstance(model_or_capture, Mapping):
        cap = model_or_capture
    else:
        if not isinstance(model_or_capture, nn.Module):
            raise InputError(
                "id_profile needs a torch.nn.Module (with data), a capture (mapping layer → (N, D) array) "
                f"or a capture directory; got {type(model_or_capture).__name__}"
            )
        if data is None:
            raise InputError("id_profile(model, data): data is required when a model is given")

        cap = capture(model_or_capture, data, layers, batch_size=batch_size, progress=progress,
                      device=device or "cpu", reduce=reduce)
        layers = None  # already selected
    names = list(cap.keys())
    if layers is not None:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        missing = [w for w in wanted if w not in cap]
        if missing:
            raise UnknownNameError("layer", missing[0], names)
        names = wanted
    if not names:
        raise InputError("the capture holds no layers")
    depth = dict(getattr(cap, "relative_depth", {}) or {})
    m = len(names)
    for i, name in enumerate(names):
        depth.setdefault(name, i / (m - 1) if m > 1 else 0.0)
    return {k: cap[k] for k in names}, depth


def _layer_matrix(name: str, X: Any) -> Any:
    """A layer's activations as a finite (N, D) matrix, or an :class:`InputError` naming the layer: a
    NaN/Inf layer is never reported as "constant", a 1-D array is never guessed at."""
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        try:
            X = np.asarray(X)
        except Exception as exc:  # noqa: BLE001 - anything that is not an array gets the same message
            raise InputError(f"layer {name!r} is not an array; got {type(X).__name__}") from exc
        ndim = X.ndim
    if ndim < 2:
        raise InputError(f"layer {name!r} must be an (N, D) array, one row per example; got shape {tuple(X.shape)}"
                         + (" (reshape 1-D activations with X[:, None])" if ndim == 1 else ""))
    if ndim > 2:
        X = X.reshape(X.shape[0], -1)
    return check_matrix(X, f"layer {name!r}")


def id_profile(
    model_or_capture: Any,
    data: Any = None,
    *,
    layers: Any = None,
    estimators: Sequence[str] = ("twonn", "pca"),
    fraction: float = 0.9,
    threshold: float = 0.9,
    standardize: bool = False,
    batch_size: int = 256,
    progress: bool = False,
    device: Any = None,
    reduce: str | None = None,
) -> pd.DataFrame:
    r"""ID of each layer's representation, one row per layer (Ansuini et al. 2019).

    Args:
        model_or_capture: a ``torch.nn.Module`` (then ``data`` is required and the layers are captured
            with :func:`deepgeom.capture.capture`), a capture (mapping layer → (N, D) array, e.g. a
            :class:`deepgeom.capture.Capture`) or the path of a capture directory.
        data: inputs for the model (tensor, dataset or loader; see :func:`deepgeom.capture.capture`).
        layers: layer names/globs/types for capture (default ``model.analysis_layers``), or a subset
            of a capture's layers.
        estimators: any of ``"twonn"`` (LSQ, the paper's), ``"twonn_mle"``, ``"pca"`` (PC-ID),
            ``"gride"`` (GRIDE with n1=2, n2=4: one scale above TwoNN, less sensitive to noise),
            ``"levina_bickel"`` (k = 10..20).
        fraction: TwoNN fit fraction; threshold, standardize: PC-ID settings.
        reduce: how a layer output with a token axis becomes rows when a model is captured —
            ``"mean"`` (over real tokens), ``"cls"``, ``"tokens"`` or ``"flatten"``; None (default)
            flattens other outputs and refuses a token axis (see :func:`deepgeom.capture.stream`).

    Returns:
        DataFrame with columns ``layer, relative_depth, D, n, n_duplicates`` and, per estimator,
        ``twonn_id, twonn_err, twonn_underestimate``, ``twonn_mle_id, twonn_mle_err``,
        ``pca_id, pca_pr`` (participation ratio), ``gride_id, gride_err``,
        ``levina_bickel_id, levina_bickel_err``.  Layers that are constant on the data (e.g. dead
        ReLUs) get NaN estimates and a ``note``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 3))
        >>> df = id_profile(net, torch.randn(300, 5), layers=["input", "1", "output"])
        >>> df["layer"].tolist()
        ['input', '1', 'output']
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise UnknownNameError("estimator", unknown[0], ESTIMATORS)
    if not estimators:
        raise InputError("estimators is empty; choose from " + ", ".join(ESTIMATORS))
    arrays, depth = _source(model_or_capture, data, layers, batch_size, progress, device, reduce)
    rows = []
    for name, X in arrays.items():
        X = _layer_matrix(name, X)
        row: dict[str, Any] = dict(layer=name, relative_depth=float(depth[name]), D=int(X.shape[1]),
                                   n=int(X.shape[0]))
        info = find_duplicates(X)
        n_unique = X.shape[0] - info.n_duplicates
        row["n_duplicates"] = info.n_duplicates
        note = ""
        degenerate = n_unique < 5 or is_constant(X)
        nb = None
        if degenerate:
            note = "constant or nearly all-duplicate layer: no ID"
        else:
            # one exact neighbour search on the distinct rows serves every neighbour-based estimator
            k_lb = min(20, n_unique - 1)
            k = max([2] + [4 for e in estimators if e == "gride"] + [k_lb for e in estimators if e == "levina_bickel"])
            if any(e != "pca" for e in estimators):
                nb = knn(X if info.n_duplicates == 0 else take_rows(X, info.keep), k, device=device)
        for est in estimators:
            if est in ("twonn", "twonn_mle"):
                r = None if nb is None else twonn(neighbors=nb, fraction=fraction,
                                                  method="lsq" if est == "twonn" else "mle")
                row[f"{est}_id"] = np.nan if r is None else r.id
                row[f"{est}_err"] = np.nan if r is None else r.error
                if est == "twonn":
                    row["twonn_underestimate"] = False if r is None else r.likely_underestimate
            elif est == "pca":
                r = None if degenerate else pca_id(X, threshold=threshold, standardize=standardize, device=device)
                row["pca_id"] = np.nan if r is None else r.id
                row["pca_pr"] = np.nan if r is None else r.participation_ratio
            elif est == "gride":
                r = None if nb is None else gride(neighbors=nb, n1=2, n2=4)
                row["gride_id"] = np.nan if r is None else r.id
                row["gride_err"] = np.nan if r is None else r.error
            else:
                r = None if nb is None else levina_bickel(neighbors=nb, k1=min(10, k_lb), k2=k_lb)
                row["levina_bickel_id"] = np.nan if r is None else r.id
                row["levina_bickel_err"] = np.nan if r is None else r.error
        row["note"] = note
        rows.append(row)
    return pd.DataFrame(rows)


def save_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a results table as CSV (``.csv``) or Parquet (``.parquet``/``.pq``), chosen by suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    elif suffix in (".parquet", ".pq"):
        atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    else:
        raise InputError(f"table path must end in .csv or .parquet; got {path.name!r}")
    return path


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`save_table`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"table {path} does not exist")
    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path)
        if "note" in df:  # CSV cannot tell an empty note from a missing one
            df["note"] = df["note"].astype(object).where(df["note"].notna(), "").astype(str)
        return df
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise InputError(f"table path must end in .csv or .parquet; got {path.name!r}")
