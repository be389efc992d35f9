"""Study-level figures that compare *runs* (the per-analysis figures come from :mod:`deepgeom.viz`).

Each function takes the study's tidy tables and returns a matplotlib figure; nothing is computed here
beyond selecting rows and, for the ID–accuracy panel, Pearson's r of the plotted points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..viz import plt

__all__ = ["plot_learning_curves", "plot_id_vs_accuracy", "plot_id_during_training", "plot_metric_through_training",
           "pearson_r"]


def _label(row: Any, ctx: Any) -> str:
    return ctx.label_of(row) if ctx is not None else str(row)


def plot_learning_curves(history: pd.DataFrame, ctx: Any = None):
    """Train (dashed) and test (solid) accuracy against epoch, one colour per run."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (run, h) in enumerate(history.groupby("run", sort=False)):
        h = h.sort_values("epoch")
        c = f"C{i % 10}"
        ax.plot(h["epoch"], h["test_acc"], "-", color=c, label=_label(run, ctx))
        ax.plot(h["epoch"], h["train_acc"], "--", color=c, lw=0.9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("learning curves (solid: test, dashed: train)", fontsize=10)
    fig.tight_layout()
    return fig


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two samples (NaN with fewer than 3 finite pairs or zero variance)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def plot_id_vs_accuracy(points: pd.DataFrame):
    """Last-hidden-layer TwoNN ID against test accuracy (Ansuini et al. 2019, Fig. 4), one marker per
    run; shuffled-label runs hollow; Pearson r of the true-label runs printed when they share one
    dataset. ``points`` has ``label, twonn_id, test_acc, shuffled`` (and optionally ``dataset``)."""
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for i, row in enumerate(points.itertuples(index=False)):
        c = f"C{i % 10}"
        ax.scatter(row.test_acc, row.twonn_id, s=46, color=c, facecolors="none" if row.shuffled else c,
                   label=row.label)
    clean = points[~points["shuffled"]]
    r = pearson_r(clean["test_acc"], clean["twonn_id"])
    if np.isfinite(r) and points.get("dataset", pd.Series([0])).nunique() == 1:
        ax.text(0.02, 0.96, f"Pearson r = {r:.2f} (n = {len(clean)} true-label runs)", transform=ax.transAxes,
                va="top", fontsize=8)
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("TwoNN ID of the last hidden layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("last-hidden-layer ID vs test accuracy", fontsize=10)
    fig.tight_layout()
    return fig


def plot_id_during_training(table: pd.DataFrame, ctx: Any = None):
    """Left: TwoNN ID of the last hidden layer against epoch. Right: test accuracy against epoch."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 3.9))
    for i, (run, d) in enumerate(table.groupby("run", sort=False)):
        d = d.sort_values("epoch")
        c = f"C{i % 10}"
        a1.errorbar(d["epoch"], d["twonn_id"], yerr=d.get("twonn_err"), marker="o", ms=3, capsize=2, color=c,
                    label=_label(run, ctx))
        if "test_acc" in d:
            a2.plot(d["epoch"], d["test_acc"], "o-", ms=3, color=c)
    a1.set_xlabel("epoch")
    a1.set_ylabel("TwoNN ID (last hidden layer)")
    a1.set_ylim(bottom=0)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=7)
    a2.set_xlabel("epoch")
    a2.set_ylabel("test accuracy")
    a2.set_ylim(0, 1.02)
    a2.grid(alpha=0.3)
    fig.suptitle("intrinsic dimension during training", fontsize=10)
    fig.tight_layout()
    return fig


def plot_metric_through_training(table: pd.DataFrame, columns: list[str], ctx: Any = None, *, log: bool = True,
                                 title: str = ""):
    """One panel per column of ``table`` (e.g. NC1..NC4) against epoch, one line per run."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.3 * len(columns), 3.4), squeeze=False)
    for ax, col in zip(axes[0], columns, strict=True):
        for i, (run, d) in enumerate(table.groupby("run", sort=False)):
            d = d.sort_values("epoch")
            vals = d[col].astype(float)
            ax.plot(d["epoch"], vals, "o-", ms=3, color=f"C{i % 10}", label=_label(run, ctx))
        if log and (table[col].astype(float) > 0).any():
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(col, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
