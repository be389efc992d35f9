"""Figures of feature-kernel spectra (Nam et al. 2024): they take result objects and return figures.

* :func:`plot_eigenvalues_through_training` — top eigenvalues ρ_k against epoch (log y).
* :func:`plot_dominant_count` — dominant count against epoch beside accuracy, with the class count.
* :func:`plot_spectrum` / :func:`plot_checkpoint_spectrum` — one spectrum (log-log) with the Π*(k)/Π(k) curves.
* :func:`save_spectrum_figures` — all of them for a :class:`SpectraThroughTraining`, as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import ScalarFormatter

from ..analysis.kernel_dynamics import SpectraThroughTraining
from ..errors import InputError
from ..functional.spectrum import DominantCount, Spectrum
from ._common import plt, save_figure

__all__ = ["plot_eigenvalues_through_training", "plot_dominant_count", "plot_spectrum", "plot_checkpoint_spectrum",
           "save_spectrum_figures"]


def _check_result(result: Any) -> SpectraThroughTraining:
    if not isinstance(result, SpectraThroughTraining):
        raise InputError(f"expected the result of spectra_through_training; got {type(result).__name__}")
    return result


def plot_eigenvalues_through_training(result: SpectraThroughTraining, *, top: int = 20, ax: Any = None):
    """ρ_k against epoch for k = 1..``top`` on a log scale; the first C (classification) in colour."""
    result = _check_result(result)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    ev = result.eigenvalues
    C = result.n_classes or 0
    cmap = plt.get_cmap("viridis")
    for k in range(1, top + 1):
        d = ev[ev["k"] == k].sort_values("epoch")
        if d.empty:
            continue
        vals = d["eigenvalue"].to_numpy()
        vals = np.where(vals > 0, vals, np.nan)
        dominant = k <= max(C, 1)
        ax.plot(d["epoch"], vals, color=cmap(k / (top + 1)) if dominant else "0.6",
                lw=1.6 if dominant else 0.8, marker="o" if len(d) < 30 else None, ms=3,
                label=f"k={k}" if dominant and k <= 12 else None)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"eigenvalue $\rho_k$ of $\Phi^\top\Phi/n$")
    ax.set_title("feature-kernel eigenvalues" + (" (centred)" if result.centered else ""))
    if C:
        ax.legend(fontsize=7, ncol=2, title=f"top C={C} in colour", title_fontsize=7)
    return fig


def plot_dominant_count(result: SpectraThroughTraining, *, ax: Any = None):
    """Dominant count against epoch (left axis, with y = C dashed) beside accuracy (right axis)."""
    result = _check_result(result)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    s = result.summary.sort_values("epoch")
    ax.plot(s["epoch"], s["dominant"], "o-", color="C0", label="dominant count")
    if result.n_classes:
        ax.axhline(result.n_classes, color="C0", ls="--", lw=0.8, label=f"C = {result.n_classes}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("dominant eigenfunctions", color="C0")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax2 = ax.twinx()
    if "accuracy" in s:
        ax2.plot(s["epoch"], s["accuracy"], "s-", color="C1", ms=3, label="train accuracy")
    if "test_acc" in s:
        ax2.plot(s["epoch"], s["test_acc"], "^-", color="C2", ms=3, label="test accuracy")
    if "mse" in s:
        ax2.plot(s["epoch"], s["mse"], "s-", color="C1", ms=3, label="train MSE")
        ax2.set_ylabel("MSE", color="C1")
    else:
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("accuracy", color="C1")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    ax.set_title("dominant count (MF ≈ C, EF ≫ C)")
    return fig


def _spectrum_figure(lam: np.ndarray, pi_t: np.ndarray | None, pi_o: np.ndarray | None, *,
                     count: int | None, rule: str, title: str):
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    lam = np.asarray(lam, dtype=float)
    lam = lam[lam > 0]
    k = np.arange(1, len(lam) + 1)
    a1.loglog(k, lam, ".-", color="C0")
    if count is not None:
        a1.axvline(count + 0.5, color="C3", ls="--", lw=1, label=f"dominant = {count} ({rule})")
        a1.legend(fontsize=8)
    a1.set_ylabel(r"$\rho_k$")
    a1.set_title(title)
    for curve, name, c in ((pi_t, r"$\Pi^*(k)$ targets", "C1"), (pi_o, r"$\Pi(k)$ outputs", "C2")):
        if curve is not None and len(curve):
            m = min(len(curve), len(k))
            a2.semilogx(np.arange(1, m + 1), np.asarray(curve)[:m], color=c, label=name)
    a2.axhline(0.9, color="0.7", lw=0.6)
    a2.axhline(0.99, color="0.7", lw=0.6, ls=":")
    a2.set_ylim(0, 1.02)
    a2.set_xlabel("k")
    a2.set_ylabel("captured share")
    if pi_t is not None or pi_o is not None:
        a2.legend(fontsize=8, loc="lower right")
    return fig


def plot_spectrum(spectrum: Spectrum, dominant: DominantCount | None = None, *, top: int | None = None,
                  title: str = ""):
    """Eigenvalues ρ_k against k (log-log) and, below, Π*(k) of the targets and Π(k) of the outputs."""
    if not isinstance(spectrum, Spectrum):
        raise InputError(f"plot_spectrum needs a Spectrum; got {type(spectrum).__name__}")
    m = spectrum.rank if top is None else min(top, spectrum.rank)
    return _spectrum_figure(spectrum.eigenvalues[:m], spectrum.target_alignment, spectrum.output_alignment,
                            count=None if dominant is None else dominant.count,
                            rule="" if dominant is None else dominant.rule,
                            title=title or ("feature-kernel spectrum" + (" (centred)" if spectrum.centered else "")))


def plot_checkpoint_spectrum(result: SpectraThroughTraining, epoch: int | None = None):
    """:func:`plot_spectrum` for one epoch of a :class:`SpectraThroughTraining` (default: the last)."""
    result = _check_result(result)
    epochs = sorted(result.summary["epoch"].tolist())
    epoch = epochs[-1] if epoch is None else int(epoch)
    if epoch not in epochs:
        raise InputError(f"epoch {epoch} not analysed; analysed epochs: {epochs}")
    ev = result.eigenvalues[result.eigenvalues["epoch"] == epoch].sort_values("k")
    al = result.alignment[result.alignment["epoch"] == epoch].sort_values("k")
    row = result.summary[result.summary["epoch"] == epoch].iloc[0]
    return _spectrum_figure(ev["eigenvalue"].to_numpy(), al["pi_targets"].to_numpy(), al["pi_outputs"].to_numpy(),
                            count=int(row["dominant"]), rule=str(row["rule"]),
                            title=f"spectrum at epoch {epoch}" + (" (centred)" if result.centered else ""))


def save_spectrum_figures(result: SpectraThroughTraining, out_dir: str | Path) -> list[Path]:
    """Write eigenvalues vs epoch, dominant count vs epoch and the last checkpoint's spectrum (PNG + SVG)."""
    out = Path(out_dir)
    paths = save_figure(plot_eigenvalues_through_training(result), out / "spectrum_eigenvalues")
    paths += save_figure(plot_dominant_count(result), out / "spectrum_dominant")
    paths += save_figure(plot_checkpoint_spectrum(result), out / "spectrum_last")
    return paths
