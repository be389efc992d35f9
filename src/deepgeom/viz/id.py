"""Figures for intrinsic dimension: layer profiles (Ansuini et al. 2019, Fig. 2) and the TwoNN fit
(Facco et al. 2017, Fig. 1)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ._common import finish_figure, plt

__all__ = ["plot_id_profile", "plot_twonn_fit", "plot_twonn_scale"]


def _as_profiles(profiles: Any, labels: Sequence[str] | None) -> list[tuple[str, pd.DataFrame]]:
    if isinstance(profiles, pd.DataFrame):
        profiles = [profiles]
    profiles = list(profiles)
    if not profiles:
        raise InputError("plot_id_profile needs at least one profile table")
    if labels is None:
        labels = [""] * len(profiles) if len(profiles) == 1 else [f"profile {i}" for i in range(len(profiles))]
    if len(labels) != len(profiles):
        raise InputError(f"got {len(profiles)} profiles but {len(labels)} labels")
    for df in profiles:
        missing = {"relative_depth"} - set(df.columns)
        if missing or not ({"twonn_id", "pca_id"} & set(df.columns)):
            raise InputError("a profile table needs relative_depth and twonn_id and/or pca_id columns "
                             "(from deepgeom.analysis.id_profile.id_profile)")
    return list(zip(labels, profiles, strict=True))


def plot_id_profile(
    profiles: pd.DataFrame | Sequence[pd.DataFrame],
    labels: Sequence[str] | None = None,
    *,
    path: str | Path | None = None,
    pca: bool = True,
    title: str | None = None,
):
    """ID against relative depth: TwoNN (left axis, with error bars) and PC-ID (right axis, dashed).

    PC-ID is usually one to two orders of magnitude above TwoNN (curved manifolds; Ansuini et al.
    2019), so it gets its own log-scaled axis.  Several profiles (e.g. architectures, or trained
    vs. untrained) overlay with one colour each.

    Args:
        profiles: one table from :func:`deepgeom.analysis.id_profile.id_profile`, or a list.
        labels: legend labels, one per profile.
        path: if given, saved there as PNG and SVG (:func:`deepgeom.viz._common.save_figure`), and
            the figure is closed.
        pca: draw PC-ID when the column is present.

    Returns:
        The matplotlib figure.
    """
    items = _as_profiles(profiles, labels)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax2 = None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, df) in enumerate(items):
        c = colors[i % len(colors)]
        df = df.sort_values("relative_depth")
        if "twonn_id" in df:
            err = df["twonn_err"] if "twonn_err" in df else None
            ax.errorbar(df["relative_depth"], df["twonn_id"], yerr=err, marker="o", color=c, capsize=2,
                        label=f"{label} TwoNN".strip())
        if pca and "pca_id" in df:
            if ax2 is None:
                ax2 = ax.twinx()
                ax2.set_yscale("log")
                ax2.set_ylabel("PC-ID (90% variance), log scale")
            ax2.plot(df["relative_depth"], df["pca_id"], ls="--", marker="s", mfc="none", color=c,
                     label=f"{label} PC-ID".strip())
    ax.set_xlabel("relative depth")
    ax.set_ylabel("intrinsic dimension (TwoNN)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(bottom=0)
    handles, labs = ax.get_legend_handles_labels()
    if ax2 is not None:
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labs = handles + h2, labs + l2
    if handles:
        ax.legend(handles, labs, fontsize=8, loc="best")
    return finish_figure(fig, ax, title=title, path=path)


def plot_twonn_fit(result: Any, *, path: str | Path | None = None, title: str | None = None):
    r"""The TwoNN fit: :math:`-\log(1-F(\mu))` against :math:`\log\mu` with the line of slope d
    through the origin (Facco et al. 2017, Fig. 1); the fitted points are filled, the discarded
    tail (largest μ) is drawn hollow."""
    for attr in ("fit_x", "fit_y", "mu", "id"):
        if not hasattr(result, attr):
            raise InputError("plot_twonn_fit needs a TwoNNResult from deepgeom.functional.intrinsic_dim.twonn")
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    mu = np.asarray(result.mu)
    N = mu.size
    allx = np.log(mu[:-1])
    ally = -np.log1p(-np.arange(1, N) / N)
    ax.plot(allx, ally, "o", ms=2.5, mfc="none", color="0.6", label="all points")
    ax.plot(result.fit_x, result.fit_y, "o", ms=2.5, color="C0", label=f"fitted ({result.n})")
    xs = np.linspace(0, float(np.max(allx)) if allx.size else 1.0, 50)
    ax.plot(xs, result.id * xs, "-", color="C3", label=f"slope d = {result.id:.2f}")
    ax.set_xlabel(r"$\log \mu$")
    ax.set_ylabel(r"$-\log(1 - F(\mu))$")
    ax.legend(fontsize=8)
    return finish_figure(fig, ax, title=title, path=path)


def plot_twonn_scale(result: Any, *, path: str | Path | None = None, title: str | None = None):
    """TwoNN ID (mean ± std over disjoint blocks) against the number of points per block
    (:func:`deepgeom.functional.intrinsic_dim.twonn_scale`); a plateau means a well-defined ID."""
    table = getattr(result, "table", result)
    if not isinstance(table, pd.DataFrame) or "block_size" not in table:
        raise InputError("plot_twonn_scale needs a TwoNNScaleResult (or its table)")
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    ax.errorbar(table["block_size"], table["id_mean"], yerr=table["id_std"].fillna(0), marker="o", capsize=2)
    ax.set_xscale("log")
    ax.set_xlabel("points per block")
    ax.set_ylabel("TwoNN ID")
    return finish_figure(fig, ax, title=title, path=path)
