"""The report's "along the swept axes" section: each run's headline numbers against every axis the study
sweeps (width, depth, label-shuffle fraction, seed), averaged over seeds with their spread.

Per run, at its last checkpoint: test accuracy; TwoNN ID of the last hidden layer (Ansuini et al. 2019
relate it to accuracy and to label noise); the size of the largest CKA block (Nguyen et al. 2021 find
blocks growing with width and depth); the dominant-eigenfunction count of the feature kernel (Nam et
al. 2024). Runs that differ only by seed form one point: the mean, with error bars of one standard
deviation over seeds (and the seeds themselves as small dots).
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from ..viz import plt
from .context import NotRun, ReportContext, _p, html_table
from .sections import _last_hidden

__all__ = ["AXES", "METRICS", "run_measures", "section_swept"]

#: Sweep axes drawn, in this order, when the study has more than one value on them.
AXES = ("width", "depth", "shuffle_fraction", "seed")
#: column → axis label, for the numbers each run gets.
METRICS = {
    "test_acc": "test accuracy",
    "last_hidden_id": "last-hidden-layer ID (TwoNN)",
    "largest_block": "largest CKA block (layers)",
    "dominant": "dominant eigenfunctions",
}


def run_measures(ctx: ReportContext) -> pd.DataFrame:
    """One row per run: its sweep coordinates and, where the study measured them, the metrics above."""
    runs = ctx.runs
    if runs.empty:
        raise NotRun("the study has no runs")
    out = runs[[c for c in ("run", "label", "dataset", "model", *AXES) if c in runs.columns]].copy()
    if "final_test_acc" in runs:
        out["test_acc"] = runs["final_test_acc"].to_numpy()
    if ctx.has_table("id_profiles"):
        prof = ctx.table("id_profiles")
        last = _last_hidden(prof)
        last = last.sort_values("epoch").groupby("run").tail(1).set_index("run")
        out["last_hidden_id"] = out["run"].map(last["twonn_id"])
    if ctx.has_table("cka_pairs"):
        pairs = ctx.table("cka_pairs")
        measured = set(pairs["run"])
        blocks = ctx.table("cka_blocks") if ctx.has_table("cka_blocks") else pd.DataFrame(columns=["run", "size"])
        largest = blocks.groupby("run")["size"].max() if len(blocks) else pd.Series(dtype=float)
        out["largest_block"] = [float(largest.get(r, 0)) if r in measured else np.nan for r in out["run"]]
    if ctx.has_table("spectra"):
        spec = ctx.table("spectra").sort_values("epoch").groupby("run").tail(1).set_index("run")
        out["dominant"] = out["run"].map(spec["dominant"]).astype(float)
    return out


def _group_label(row: pd.Series, axis: str) -> str:
    parts = [f"{row['dataset']}/{row['model'].rpartition(':')[2]}"]
    for a, fmt in (("width", "w{}"), ("depth", "d{}"), ("shuffle_fraction", "shuf{:g}")):
        if a != axis and a in row:
            parts.append(fmt.format(row[a]))
    return " ".join(parts)


def _summary(df: pd.DataFrame, axis: str, metrics: list[str]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each metric, per (group, axis value)."""
    keys = [c for c in ("dataset", "model", "width", "depth", "shuffle_fraction") if c != axis and c in df]
    if axis == "seed":
        keys = [c for c in keys if c != "seed"]
    rows = []
    for gkey, g in df.groupby(keys + [axis], sort=True, dropna=False):
        row = dict(zip(keys + [axis], gkey if isinstance(gkey, tuple) else (gkey,), strict=True))
        row["group"] = _group_label(pd.Series(row), axis)
        row["seeds"] = int(g["seed"].nunique()) if "seed" in g else 1
        for m in metrics:
            v = g[m].dropna().to_numpy(dtype=float)
            row[m] = float(v.mean()) if len(v) else np.nan
            row[f"{m}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def plot_along_axis(df: pd.DataFrame, axis: str, metrics: list[str]):
    """One panel per metric against ``axis``: per group, the seed mean with ±1 s.d. bars, seeds as dots."""

    summ = _summary(df, axis, metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.3), squeeze=False)
    df = df.assign(_group=[_group_label(r, axis) for _, r in df.iterrows()])
    for ax, m in zip(axes[0], metrics, strict=True):
        for i, (grp, s) in enumerate(summ.groupby("group", sort=False)):
            c = f"C{i % 10}"
            s = s.sort_values(axis)
            if axis != "seed":
                ax.errorbar(s[axis], s[m], yerr=s[f"{m}_sd"].fillna(0), marker="o", ms=4, capsize=3, color=c,
                            label=grp)
            pts = df[df["_group"] == grp]
            ax.plot(pts[axis], pts[m], ".", color=c, alpha=0.5, ms=5,
                    label=grp if axis == "seed" else None)
        ax.set_xlabel(axis.replace("_", " "))
        ax.set_ylabel(METRICS[m])
        if axis == "width" and df[axis].max() / max(df[axis].min(), 1) >= 8:
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"against {axis.replace('_', ' ')} (mean ± s.d. over seeds; dots: single runs)", fontsize=10)
    fig.tight_layout()
    return fig


def section_swept(ctx: ReportContext) -> str:
    """The section: for each swept axis with two or more values, one figure and one table."""
    df = run_measures(ctx)
    axes = [a for a in AXES if a in df and df[a].nunique() > 1]
    if not axes:
        raise NotRun("the study sweeps no axis over two or more values (width, depth, shuffle_fraction, seed)")
    metrics = [m for m in METRICS if m in df and df[m].notna().any()]
    if not metrics:
        raise NotRun("no run has a measured number yet (history, id_profile, cka_matrix or spectrum tables)")
    parts = [_p("Each run's numbers at its last checkpoint against every axis the study sweeps: test accuracy, "
                "TwoNN ID of the last hidden layer (Ansuini et al. 2019), the largest CKA block in layers "
                "(Nguyen et al. 2021; 0 when the run has no block) and the dominant-eigenfunction count "
                "(Nam et al. 2024). Runs that differ only by seed are averaged; bars are ±1 standard "
                "deviation over seeds, dots the single runs.", "note")]
    for axis in axes:
        parts.append(f"<h3>Against {html.escape(axis.replace('_', ' '))}</h3>")
        parts.append(ctx.figure(f"swept_{axis}", lambda a=axis: plot_along_axis(df, a, metrics),
                                f"{', '.join(METRICS[m] for m in metrics)} against {axis.replace('_', ' ')}."))
        summ = _summary(df, axis, metrics)
        cols = ["group", axis, "seeds"] + [c for m in metrics for c in (m, f"{m}_sd")]
        parts.append(html_table(summ[cols]))
    return "\n".join(parts)
