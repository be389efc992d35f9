r"""Feature-kernel spectra through training (Nam et al. 2024), with neural-collapse metrics per checkpoint.

For each checkpoint of a run, the penultimate features Φ on the training set (captured with
:func:`deepgeom.capture.capture`) are eigen-decomposed (:func:`deepgeom.functional.spectrum.feature_spectrum`)
and summarised: the dominant count and the MF/EF call, Π of the targets and of the network's outputs,
the overlap of the top-k eigenfunction span with the previous checkpoint's, NC1–NC4 (Papyan et al.
2020), RankMe, the power-law exponent, the participation ratio, the richness 1 − CKA(K, K_ideal) and
the accuracy. A float target (regression, trained with MSE) gets the same kernel analysis with the
fraction of the target captured by the top-k eigenfunctions instead of the classification metrics.

Eigenbasis similarity between consecutive checkpoints ``a → b`` is the subspace overlap of their top-k
eigenfunction spans on the same points,

.. math:: O_k(a, b) = \tfrac1k \big\lVert \tfrac1n E_a^\top E_b \big\rVert_F^2 \in [0, 1],

the mean squared cosine of the principal angles between the spans (1: same span, 0: orthogonal).
It compares functions on the sample, so it needs no correspondence between neurons.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._io import atomic_write
from .._results import ResultMixin, to_jsonable
from ..capture import capture
from ..data import load
from ..errors import InputError
from ..functional import matrix
from ..functional.collapse import (
    class_kernel_distance,
    effective_rank,
    neural_collapse,
    participation_ratio,
    power_law_alpha,
    richness,
)
from ..functional.spectrum import (
    Spectrum,
    dominant_count,
    dominant_count_subsamples,
    feature_spectrum,
    regime,
)
from ..train import load_run

__all__ = ["SpectraThroughTraining", "spectra_through_training", "checkpoint_spectrum", "feature_report",
           "subspace_overlap"]


@dataclass
class SpectraThroughTraining(ResultMixin):
    """Tables of :func:`spectra_through_training`.

    Attributes:
        eigenvalues: tidy ``(epoch, k, eigenvalue)``, k from 1, the top ``keep_eigenvalues`` per epoch.
        alignment: tidy ``(epoch, k, pi_targets, pi_outputs)``: Π*(k) and Π(k) curves.
        summary: one row per epoch (columns described in :func:`spectra_through_training`).
        task: ``"classification"`` or ``"regression"``. n_classes: C (classification) or None.
        k_top: the k used for the eigenbasis overlap and the "captured by the top-k" columns.
        centered: whether spectra were centred.
    """

    eigenvalues: pd.DataFrame
    alignment: pd.DataFrame
    summary: pd.DataFrame
    task: str
    n_classes: int | None
    k_top: int
    centered: bool
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, max_array: int | None = None) -> dict[str, Any]:  # noqa: ARG002 - tables as records

        return to_jsonable({
            "task": self.task, "n_classes": self.n_classes, "k_top": self.k_top, "centered": self.centered,
            "summary": self.summary.to_dict(orient="records"), "meta": self.meta,
        })

    def save(self, out_dir: str | os.PathLike, *, fmt: str = "csv") -> list[Path]:
        """Write ``eigenvalues``, ``alignment`` and ``summary`` as CSV or Parquet into ``out_dir``."""
        if fmt not in ("csv", "parquet"):
            raise InputError(f"fmt must be 'csv' or 'parquet'; got {fmt!r}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("eigenvalues", "alignment", "summary"):
            p = out / f"spectrum_{name}.{fmt}"
            df = getattr(self, name)
            atomic_write(p, lambda tmp, df=df: df.to_csv(tmp, index=False) if fmt == "csv"
                         else df.to_parquet(tmp, index=False))
            paths.append(p)
        return paths


def subspace_overlap(E_a: np.ndarray, E_b: np.ndarray, k: int) -> float:
    r"""Overlap :math:`\frac1k\lVert\frac1n E_a^\top E_b\rVert_F^2` of two top-k eigenfunction spans (see module)."""
    n = E_a.shape[0]
    if E_b.shape[0] != n:
        raise InputError(f"eigenfunctions must be on the same points; got {n} and {E_b.shape[0]} rows")
    k = min(k, E_a.shape[1], E_b.shape[1])
    if k < 1:
        return float("nan")
    M = E_a[:, :k].T @ E_b[:, :k] / n
    return float((M**2).sum() / k)


def _features_and_outputs(model: nn.Module, x: Any, layer: str | None, batch_size: int,
                          device: str, reduce: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    name = layer or getattr(model, "penultimate", None)
    if not name:
        raise InputError("the model has no .penultimate attribute; pass layer= (the module whose output is Φ)")
    cap = capture(model, x, [name, "output"], batch_size=batch_size, device=device, progress=False,
                  memory_budget="4GB", reduce=reduce)
    return np.asarray(cap[name]), np.asarray(cap["output"])


def checkpoint_spectrum(
    features: Any,
    outputs: Any,
    targets: Any,
    *,
    weights: Any = None,
    bias: Any = None,
    center: bool = False,
    n_classes: int | None = None,
    k_top: int | None = None,
    k_max_count: int = 64,
    min_gap_decades: float = 0.25,
    min_slope_ratio: float = 3.0,
    count_subsamples: int = 0,
    seed: int = 0,
) -> tuple[Spectrum, dict[str, Any]]:
    """Spectrum and the summary row for one checkpoint's features Φ, outputs and targets.

    Classification when ``targets`` are integer labels (NC metrics, regime, accuracy), regression when
    they are floats (Π of the target at ``k_top``, mean squared error, R², and the regime: MF when
    :func:`~deepgeom.functional.spectrum.regime` calls the count MF against m + 1 modes for m target
    functions and R² ≥ 0.5). ``outputs`` may be None: then
    they are ``Φ Wᵀ + b`` when ``weights`` are given, else the output columns are left out.
    ``count_subsamples`` > 0 adds the dominant count on that many random 80% subsamples of the points
    (:func:`deepgeom.functional.spectrum.dominant_count_subsamples`, seeded by ``seed``): columns
    ``dominant_sub_min``, ``dominant_sub_median``, ``dominant_sub_max``, and for classification
    ``mf_sub_fraction`` (share of subsamples whose count alone would be called MF at this accuracy).
    Returns ``(spectrum, row)``.
    """
    t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    classification = np.issubdtype(t.dtype, np.integer)
    if outputs is None and weights is not None:
        W = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
        if W.ndim != 2 or W.shape[1] != features.shape[1]:
            raise InputError(f"weights must have shape (C, {features.shape[1]}) like nn.Linear.weight; got {W.shape}")
        outputs = matrix.gram(features, torch.from_numpy(W)).numpy()
        if bias is not None:
            outputs = outputs + np.asarray(bias.detach().cpu() if isinstance(bias, torch.Tensor) else bias,
                                           dtype=np.float64).reshape(1, -1)
    out = None
    if outputs is not None:
        out = np.asarray(outputs.detach().cpu() if isinstance(outputs, torch.Tensor) else outputs, dtype=np.float64)
        if out.ndim == 1:
            out = out[:, None]
    # eigenvectors u_k are not needed here; on the N×N route they cost a second N²D product
    sp = feature_spectrum(features, center=center, targets=t, outputs=out, n_classes=n_classes, eigenvectors=False)
    dc = dominant_count(sp, k_max=k_max_count, min_gap_decades=min_gap_decades, min_slope_ratio=min_slope_ratio)
    C = sp.n_classes if classification else None
    k = int(k_top or (C if classification else (t.shape[1] if t.ndim == 2 else 1) + 1))
    kk = min(k, sp.n_modes)
    nan = float("nan")
    row: dict[str, Any] = {
        "n_samples": sp.n_samples, "n_features": sp.n_features, "rank": sp.rank,
        "dominant": dc.count, "rule": dc.rule, "gap_k": dc.gap_k, "gap_decades": dc.gap_decades,
        "gap_slope": dc.gap_slope, "median_slope": dc.median_slope,
        "effective_dim": dc.effective_dim, "top_eigenvalue": float(sp.eigenvalues[0]),
        "pi_targets_top_k": float(sp.target_alignment[kk - 1]) if kk else nan,
        "pi_outputs_top_k": float(sp.output_alignment[kk - 1]) if kk and out is not None else nan,
        "k90_targets": dc.k90_targets, "k99_targets": dc.k99_targets,
        "k90_outputs": dc.k90_outputs, "k99_outputs": dc.k99_outputs,
        "effective_rank": effective_rank(sp),
        "participation_ratio": participation_ratio(sp),
    }
    try:
        row["alpha"] = power_law_alpha(sp, k_min=1 if center else 2).alpha
    except InputError:
        row["alpha"] = nan
    row["richness"] = nan
    if out is not None:
        try:
            row["richness"] = richness(features, out)
        except InputError:
            pass
    subs = None
    if count_subsamples:
        subs = dominant_count_subsamples(features, replicates=count_subsamples, seed=seed, center=center,
                                         k_max=k_max_count, min_gap_decades=min_gap_decades,
                                         min_slope_ratio=min_slope_ratio)
        sc = np.array([d.count for d in subs])
        row.update(dominant_sub_min=int(sc.min()), dominant_sub_median=float(np.median(sc)),
                   dominant_sub_max=int(sc.max()))
    if classification:
        row["n_classes"] = C
        row["accuracy"] = float(np.mean(out.argmax(1) == t)) if out is not None and out.shape[1] == C else nan
        acc = row["accuracy"] if np.isfinite(row["accuracy"]) else None
        row["regime"] = regime(dc, C, accuracy=acc) if C and C >= 2 else None
        if subs is not None and C and C >= 2:
            row["mf_sub_fraction"] = float(np.mean([regime(d, C, accuracy=acc) == "MF" for d in subs]))
        try:
            row["kernel_class_distance"] = class_kernel_distance(features, t, n_classes=C)
        except InputError:
            row["kernel_class_distance"] = nan
        try:
            preds = out.argmax(1) if (weights is None and out is not None and out.shape[1] == C) else None
            nc = neural_collapse(features, t, weights=weights, bias=bias, predictions=preds, n_classes=C)
            row.update(nc1=nc.nc1, nc2=nc.nc2, nc2_equinorm=nc.nc2_equinorm, nc2_equiangular=nc.nc2_equiangular,
                       nc3=nc.nc3, nc4=nc.nc4)
        except InputError as exc:  # e.g. a class absent from a subsample: say so in the row, not silently
            row.update(nc1=nan, nc2=nan, nc3=nan, nc4=nan, nc_error=str(exc))
    else:
        y = t[:, None] if t.ndim == 1 else t
        fits = out is not None and out.shape == y.shape
        row["mse"] = float(((out - y) ** 2).sum(1).mean()) if fits else nan
        # R² over all outputs: 1 − SSE / total variance of the targets
        ss = float(((y - y.mean(0)) ** 2).sum())
        row["r2"] = 1.0 - float(((out - y) ** 2).sum()) / ss if fits and ss > 0 else nan
        # the MF call for m target functions: a gap at m + 1 modes (the constant plus the m targets, as
        # C classes give the constant plus C − 1 directions), once the fit explains half the variance
        m = y.shape[1]
        learned = bool(np.isfinite(row["r2"]) and row["r2"] >= 0.5)
        row["regime"] = regime(dc, m + 1) if learned else "EF"
    return sp, row


def feature_report(
    features: Any,
    labels: Any,
    *,
    weights: Any = None,
    bias: Any = None,
    outputs: Any = None,
    center: bool = False,
    n_eigenvalues: int = 20,
) -> dict[str, Any]:
    """Everything ``deepgeom spectrum FEATURES.npy --labels LABELS.npy`` prints, as a plain dict.

    The row of :func:`checkpoint_spectrum` (dominant count and its rule's numbers, regime, Π, NC1–NC4,
    RankMe, α, participation ratio, richness) plus the top ``n_eigenvalues`` eigenvalues and
    ``centered``. ``labels`` must be integer class labels; NC3/NC4 need ``weights`` (or ``outputs`` for NC4).
    """
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integer class labels; got dtype {y.dtype}"
                         + (" (cast them with labels.astype(int))" if np.issubdtype(y.dtype, np.floating) else ""))
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D, one class per example; got shape {y.shape}")
    sp, row = checkpoint_spectrum(features, outputs, y, weights=weights, bias=bias, center=center,
                                  n_classes=None if weights is None else int(np.shape(weights)[0]))
    row["centered"] = bool(center)
    row["eigenvalues"] = sp.eigenvalues[:n_eigenvalues].tolist()
    return row


def _checkpoint_list(checkpoints: Any, build: Callable[[], nn.Module] | None) -> tuple[list[tuple[int, Any]], Any]:
    """Normalise to [(epoch, model-or-state)] and return the Run when given a run directory."""
    run = None
    if isinstance(checkpoints, (str, os.PathLike)):
        run = load_run(checkpoints)
        if not run.checkpoints:
            raise InputError(f"run {checkpoints} has no checkpoints")
        return [(e, None) for e in run.checkpoints], run
    if hasattr(checkpoints, "states") and hasattr(checkpoints, "model_config"):  # a TrainResult
        return sorted(checkpoints.states.items()), checkpoints
    if isinstance(checkpoints, dict):
        checkpoints = sorted(checkpoints.items())
    try:
        items = [(int(e), m) for e, m in checkpoints]
    except (TypeError, ValueError) as exc:
        raise InputError("checkpoints must be a run directory, a TrainResult, or a list of (epoch, model) or "
                         "(epoch, state_dict) pairs") from exc
    if not items:
        raise InputError("checkpoints is empty")
    if any(not isinstance(m, nn.Module) for _, m in items) and build is None:
        raise InputError("state dicts need build= (a function returning a fresh model to load them into)")
    return sorted(items, key=lambda em: em[0]), None


def _model_for(epoch: int, obj: Any, build: Callable[[], nn.Module] | None, source: Any) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj.eval()
    if obj is None and source is not None and hasattr(source, "load_model"):
        return source.load_model(epoch)
    if hasattr(source, "model_at"):
        return source.model_at(epoch)
    model = build()
    model.load_state_dict(obj)
    return model.eval()


def _split_data(data: Any, targets: Any) -> tuple[Any, Any]:
    if data is None:
        raise InputError("data is required (inputs and targets) unless checkpoints is a run directory")
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        x, y = data.x_train, data.y_train
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    if targets is not None:
        y = targets
    if y is None:
        raise InputError("targets are needed: pass data=(inputs, targets), a Dataset, or targets=")
    return x, y


def spectra_through_training(
    checkpoints: Any,
    data: Any = None,
    *,
    targets: Any = None,
    build: Callable[[], nn.Module] | None = None,
    layer: str | None = None,
    center: bool = False,
    k_top: int | None = None,
    k_max_count: int = 64,
    min_gap_decades: float = 0.25,
    min_slope_ratio: float = 3.0,
    keep_eigenvalues: int = 200,
    count_subsamples: int = 0,
    max_points: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    device: str = "cpu",
    reduce: str | None = None,
) -> SpectraThroughTraining:
    """Feature-kernel spectrum, dominant count, Π, eigenbasis overlap and NC metrics per checkpoint.

    Nam et al. (2024): Φ = the penultimate post-activations (``model.penultimate``, or ``layer``); the
    kernel is diagonalised on the training points at each checkpoint (see :mod:`deepgeom.functional.spectrum`).

    Args:
        checkpoints: a training run directory written by :func:`deepgeom.train.train` (its checkpoints are
            loaded with ``load_model`` and its own training set is used when ``data`` is None), a
            ``TrainResult``, or a list / dict of ``(epoch, model)`` or ``(epoch, state_dict)`` (then ``build``).
        data: ``(inputs, targets)``, a Dataset (its training split), or inputs with ``targets=``.
        targets: integer class labels (classification) or float targets ``(N,)``/``(N, m)`` (regression).
        build: ``build() -> nn.Module`` into which state dicts are loaded.
        layer: module name of Φ (default ``model.penultimate``); the head is ``model.head`` if present.
        center: centred spectra (default uncentred, the constant mode counts).
        k_top: k for the eigenbasis overlap and the ``pi_*_top_k`` columns (default C; regression m+1).
        k_max_count, min_gap_decades, min_slope_ratio: passed to :func:`deepgeom.functional.spectrum.dominant_count`.
        keep_eigenvalues: eigenvalues per epoch kept in the tidy table.
        count_subsamples: dominant count on this many random 80% subsamples per checkpoint (its spread;
            see :func:`checkpoint_spectrum`); 0 = off.
        max_points: analyse a seeded random subset of this many training points (None: all).
        seed: seed of that subset. batch_size, device: for the forward passes; reduce: how an output
            with a token axis becomes rows (see :func:`deepgeom.capture.stream`).

    Returns:
        :class:`SpectraThroughTraining` whose ``summary`` has, per epoch: ``epoch, n_samples, n_features,
        rank, dominant, rule, gap_k, gap_decades, effective_dim, top_eigenvalue, pi_targets_top_k,
        pi_outputs_top_k, k90_/k99_targets, k90_/k99_outputs, effective_rank, participation_ratio, alpha,
        richness, basis_overlap`` (with the previous checkpoint) and, for classification, ``n_classes,
        regime, accuracy, nc1, nc2, nc2_equinorm, nc2_equiangular, nc3, nc4`` (plus ``test_acc`` from a run's
        history), for regression ``mse``, ``r2``, ``regime``; ``kernel_class_distance`` beside the NC metrics.
    """
    items, source = _checkpoint_list(checkpoints, build)
    meta: dict[str, Any] = {}
    history = None
    if data is None and source is not None and hasattr(source, "config") and hasattr(source, "out_dir"):
        cfg = source.config
        data = load(cfg.dataset, seed=cfg.seed, shuffle_fraction=cfg.shuffle_fraction, **cfg.dataset_options)
        meta.update(run_dir=str(source.out_dir), dataset=cfg.dataset, shuffle_fraction=cfg.shuffle_fraction,
                    family=cfg.family)
    if source is not None and hasattr(source, "history"):
        history = source.history
    x, y = _split_data(data, targets)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    y_np = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y_np.shape[0] != x.shape[0]:
        raise InputError(f"inputs and targets must have the same number of examples; got {x.shape[0]} and "
                         f"{y_np.shape[0]}")
    if max_points is not None and max_points < x.shape[0]:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], int(max_points), replace=False))
        x, y_np = x[torch.from_numpy(idx)], y_np[idx]
    classification = np.issubdtype(y_np.dtype, np.integer)
    n_classes = int(y_np.max()) + 1 if classification else None

    ev_rows, al_rows, rows = [], [], []
    prev_E = None
    k_used = None
    for epoch, obj in items:
        model = _model_for(epoch, obj, build, source)
        Phi, out = _features_and_outputs(model, x, layer, batch_size, device, reduce)
        head = getattr(model, "head", None)
        W = b = None
        if classification and isinstance(head, nn.Linear) and head.out_features == n_classes \
                and layer in (None, getattr(model, "penultimate", None)):
            W = head.weight.detach().cpu().double().numpy()
            b = None if head.bias is None else head.bias.detach().cpu().double().numpy()
        sp, row = checkpoint_spectrum(Phi, out, y_np, weights=W, bias=b, center=center, n_classes=n_classes,
                                      k_top=k_top, k_max_count=k_max_count, min_gap_decades=min_gap_decades,
                                      min_slope_ratio=min_slope_ratio, count_subsamples=count_subsamples,
                                      seed=seed)
        k_used = int(k_top or (n_classes if classification else (y_np.shape[1] if y_np.ndim == 2 else 1) + 1))
        row["basis_overlap"] = subspace_overlap(prev_E, sp.eigenfunctions, k_used) if prev_E is not None else float("nan")
        prev_E = sp.eigenfunctions
        row = {"epoch": int(epoch), **row}
        if history is not None and "test_acc" in history and (history["epoch"] == epoch).any():
            row["test_acc"] = float(history.loc[history["epoch"] == epoch, "test_acc"].iloc[0])
        rows.append(row)
        m = min(keep_eigenvalues, len(sp.eigenvalues))
        ev_rows.append(pd.DataFrame({"epoch": int(epoch), "k": np.arange(1, m + 1), "eigenvalue": sp.eigenvalues[:m]}))
        al_rows.append(pd.DataFrame({"epoch": int(epoch), "k": np.arange(1, sp.n_modes + 1),
                                     "pi_targets": sp.target_alignment, "pi_outputs": sp.output_alignment}))
    meta.update(n_points=int(x.shape[0]))
    return SpectraThroughTraining(
        eigenvalues=pd.concat(ev_rows, ignore_index=True),
        alignment=pd.concat(al_rows, ignore_index=True),
        summary=pd.DataFrame(rows),
        task="classification" if classification else "regression",
        n_classes=n_classes,
        k_top=int(k_used),
        centered=bool(center),
        meta=meta,
    )

