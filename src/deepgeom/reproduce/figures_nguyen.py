"""Figures of the Nguyen, Raghu & Kornblith (2021) reproduction, from the tables its claims are judged on.

The grid's studies are named ``grid_…`` (together: every width × depth, all seeds), the training-set
studies ``data_n<size>``, the wide-vs-deep study ``predict``. Captions say what is plotted, never what
it is expected to show.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import yaml

from ..claims import Tables
from ..viz import plt

__all__ = ["NGUYEN_CAPTIONS", "NGUYEN_FIGURES", "NGUYEN_CLAIM_FIGURES"]

NGUYEN_CAPTIONS: dict[str, str] = {
    "nguyen_grid": "Minibatch linear CKA between every pair of layers (input at the bottom left) of one seed of "
                   "each ResNet of the width × depth grid, on Fashion-MNIST test images; dashed cyan squares: "
                   "the blocks the detector found (hidden layers, pairwise CKA ≥ 0.9, every layer's first PC ≥ "
                   "0.5 of its variance); dotted white: runs of ≥ 3 hidden layers at CKA ≥ 0.9 alone. Title: width, depth (residual blocks), the runs with a block out of "
                   "all seeds, mean test accuracy.",
    "nguyen_block_size": "Share of hidden layers inside a block (solid) and inside a CKA-only run (dotted: ≥ 3 "
                         "layers at pairwise CKA ≥ 0.9, no PC1 condition) against width (left, one line per "
                         "depth), depth (middle, one line per width) and training-set size (right): mean over "
                         "seeds (line), lowest to highest seed (band).",
    "nguyen_pc1": "First-PC variance fraction of every hidden layer against relative depth for each model of "
                  "the grid (seed means; thick: the largest model); right: the largest model's heatmap (lowest "
                  "seed) with each layer's first PC projected out.",
    "nguyen_seeds": "Left: CKA of each hidden layer with the same layer of another seed of the same "
                    "architecture (every seed pair of the grid, one line each; marker filled where the layer is "
                    "inside a block in either seed). Right: CKA between a wide and a deep model of similar "
                    "accuracy (seed 0 of each).",
    "nguyen_predictions": "Wide vs deep ResNets, several seeds each: share of test examples predicted "
                          "differently by two seeds of one architecture and by two models of different "
                          "architectures (left, one point per pair), and per-class test accuracy of each "
                          "architecture (right; mean over seeds, bars: seed range).",
}

NGUYEN_CLAIM_FIGURES: dict[str, str] = {
    "block_share": "nguyen_grid", "block_coverage": "nguyen_grid", "block_coverage_slope": "nguyen_block_size",
    "block_coverage_contrast": "nguyen_block_size", "pc1_block_contrast": "nguyen_pc1",
    "block_vanish_share": "nguyen_pc1", "pc1_projection_block_cka": "nguyen_pc1",
    "seed_block_contrast": "nguyen_seeds", "architecture_block_contrast": "nguyen_seeds",
    "architecture_test_p": "nguyen_predictions",
}


def _grid_studies(t: Tables) -> list[str]:
    return sorted(s for s in t.studies if s.startswith("grid_"))


def _stack(t: Tables, studies: list[str], name: str) -> pd.DataFrame:
    frames = [t.get(name, s).assign(study=s) for s in studies
              if (t.studies[s] / "tables" / f"{name}.parquet").is_file()]
    if not frames:
        raise ValueError(f"no {name} table in {studies}")
    return pd.concat(frames, ignore_index=True)


def _n_train(t: Tables, study: str) -> float:
    """The study's training-set size, from the config it ran (``data.options.<dataset>.n_train``)."""
    cfg = yaml.safe_load((t.studies[study] / "config.yaml").read_text(encoding="utf-8"))
    sizes = [o.get("n_train") for o in ((cfg.get("data") or {}).get("options") or {}).values()]
    return float(sizes[0]) if sizes and sizes[0] is not None else np.nan


def _coverage(t: Tables, studies: list[str], column: str = "in_block") -> pd.DataFrame:
    """Per run: the share of its hidden layers inside a block (``in_block``) or a CKA-only run
    (``in_cka_run``)."""
    pc1 = _stack(t, studies, "cka_pc1")
    pc1 = pc1[~pc1["layer"].isin(["input", "output"])]
    cov = pc1.groupby(["study", "run", "width", "depth", "seed"])[column].mean().rename("coverage")
    return cov.reset_index()


def _spans(flags: pd.Series) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a per-layer flag series indexed by layer position."""
    out, start = [], None
    for i, f in flags.items():
        if f and start is None:
            start = i
        if not f and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, int(flags.index[-1]) + 1))
    return out


def _final_acc(t: Tables, studies: list[str]) -> pd.DataFrame:
    h = _stack(t, studies, "history")
    h = h[h["epoch"] == h.groupby("run")["epoch"].transform("max")]
    return h[["run", "test_acc", "train_acc"]]


def _heat(ax, M: np.ndarray, blocks: pd.DataFrame, title: str, runs: list[tuple[int, int]] = ()):
    ax.imshow(M, origin="lower", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    for a, b in runs:
        ax.add_patch(plt.Rectangle((a - 0.5, a - 0.5), b - a, b - a, fill=False, edgecolor="white", lw=0.8,
                                   ls=":"))
    for _, b in blocks.iterrows():
        ax.add_patch(plt.Rectangle((b["start"] - 0.5, b["start"] - 0.5), b["size"], b["size"], fill=False,
                                   edgecolor="cyan", lw=1.5, ls="--"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7)


def _matrix(pairs: pd.DataFrame, run: str, removed: bool) -> np.ndarray:
    d = pairs[(pairs["run"] == run) & (pairs["pc1_removed"].astype(bool) == removed)]
    return d.pivot(index="i", columns="j", values="cka").to_numpy()


def _fig_grid(t: Tables):
    studies = _grid_studies(t)
    pairs = _stack(t, studies, "cka_pairs")
    blocks = _stack(t, studies, "cka_blocks")
    pc1 = _stack(t, studies, "cka_pc1")
    cov = _coverage(t, studies).merge(_final_acc(t, studies), on="run", how="left")
    widths, depths = sorted(cov["width"].unique()), sorted(cov["depth"].unique())
    fig, axes = plt.subplots(len(widths), len(depths), figsize=(2.3 * len(depths), 2.4 * len(widths)),
                             squeeze=False)
    for a, w in enumerate(widths):
        for b, dp in enumerate(depths):
            ax = axes[len(widths) - 1 - a, b]  # widest at the top
            c = cov[(cov["width"] == w) & (cov["depth"] == dp)]
            if c.empty:
                ax.axis("off")
                continue
            run = c.sort_values("seed")["run"].iloc[0]
            with_block = int((c["coverage"] > 0).sum())
            flags = pc1[pc1["run"] == run].set_index("layer_index")["in_cka_run"].astype(bool)
            _heat(ax, _matrix(pairs, run, False), blocks[blocks["run"] == run],
                  f"w{w} d{dp}: block {with_block}/{len(c)}, acc {c['test_acc'].mean():.2f}", _spans(flags))
    fig.tight_layout()
    return fig


def _fig_block_size(t: Tables):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for column, style, tag in (("in_block", "-", "block"), ("in_cka_run", ":", "CKA-only run")):
        cov = _coverage(t, _grid_studies(t), column)
        for ax, x, line in ((axes[0], "width", "depth"), (axes[1], "depth", "width")):
            ax.set_prop_cycle(None)
            for v, g in cov.groupby(line):
                s = g.groupby(x)["coverage"]
                xs = np.array(sorted(g[x].unique()), dtype=float)
                (ln,) = ax.plot(xs, s.mean().reindex(xs).values, marker="o", ls=style, label=f"{line} {v}, {tag}")
                ax.fill_between(xs, s.min().reindex(xs).values, s.max().reindex(xs).values, alpha=0.15,
                                color=ln.get_color())
    for ax, x in ((axes[0], "width"), (axes[1], "depth")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel("share of hidden layers")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=6)
    data = [s for s in t.studies if s.startswith("data_n")]
    for column, style, tag in (("in_block", "-", "block"), ("in_cka_run", ":", "CKA-only run")) if data else ():
        dc = _coverage(t, data + _grid_studies(t), column)
        dc["n_train"] = dc["study"].map({s: _n_train(t, s) for s in dc["study"].unique()})
        keep = dc.merge(dc[dc["study"].isin(data)][["width", "depth"]].drop_duplicates(), on=["width", "depth"])
        keep = keep.dropna(subset=["n_train"])
        for (w, dp), g in keep.groupby(["width", "depth"]):
            s = g.groupby("n_train")["coverage"]
            xs = np.array(sorted(g["n_train"].unique()), dtype=float)
            (ln,) = axes[2].plot(xs, s.mean().reindex(xs).values, marker="o", ls=style, label=f"w{w} d{dp}, {tag}")
            axes[2].fill_between(xs, s.min().reindex(xs).values, s.max().reindex(xs).values, alpha=0.15,
                                 color=ln.get_color())
        axes[2].set_xscale("log", base=2)
        axes[2].legend(fontsize=7)
    axes[2].set_xlabel("training images")
    axes[2].set_ylim(-0.05, 1.05)
    fig.tight_layout()
    return fig


def _fig_pc1(t: Tables):
    studies = _grid_studies(t)
    pc1 = _stack(t, studies, "cka_pc1")
    pc1 = pc1[~pc1["layer"].isin(["input", "output"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    big = (pc1["width"].max(), pc1[pc1["width"] == pc1["width"].max()]["depth"].max())
    for (w, dp), g in pc1.groupby(["width", "depth"]):
        m = g.groupby("relative_depth")["pc1_fraction"].mean()
        axes[0].plot(m.index, m.values, lw=2.5 if (w, dp) == big else 1, label=f"w{w} d{dp}")
    axes[0].axhline(0.5, ls="--", color="grey", lw=1)
    axes[0].set_xlabel("relative depth")
    axes[0].set_ylabel("first-PC variance fraction")
    axes[0].legend(fontsize=6, ncol=2)
    pairs = _stack(t, studies, "cka_pairs")
    runs = pc1[(pc1["width"] == big[0]) & (pc1["depth"] == big[1])].sort_values("seed")["run"]
    run = runs.iloc[0]
    axes[1].imshow(_matrix(pairs, run, True), origin="lower", cmap="magma", vmin=0, vmax=1)
    axes[1].set_title(f"w{big[0]} d{big[1]}, first PC removed", fontsize=9)
    fig.tight_layout()
    return fig


def _fig_seeds(t: Tables):
    studies = _grid_studies(t)
    pc1 = _stack(t, studies, "cka_pc1")
    inb = {(r, lay): bool(v) for r, lay, v in zip(pc1["run"], pc1["layer"], pc1["in_block"], strict=True)}
    depth_of = {(r, lay): d for r, lay, d in zip(pc1["run"], pc1["layer"], pc1["relative_depth"], strict=True)}
    across = _stack(t, studies, "cka_across")
    same = across[(across["layer_a"] == across["layer_b"]) & ~across["layer_a"].isin(["input", "output"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (ra, rb), g in same.groupby(["run_a", "run_b"]):
        blk = np.array([inb.get((ra, x), False) or inb.get((rb, x), False) for x in g["layer_a"]])
        xs = np.array([depth_of.get((ra, x), np.nan) for x in g["layer_a"]])
        (ln,) = axes[0].plot(xs, g["cka"], lw=0.8, alpha=0.6)
        axes[0].scatter(xs[blk], g["cka"].to_numpy()[blk], color=ln.get_color(), s=12)
        axes[0].scatter(xs[~blk], g["cka"].to_numpy()[~blk], facecolor="none", edgecolor=ln.get_color(), s=12)
    axes[0].set_xlabel("relative depth")
    axes[0].set_ylabel("CKA with the same layer, other seed")
    if "predict" in t.studies:
        x = t.get("cka_across", "predict")
        pair = x.groupby(["run_a", "run_b"]).size().index[0]
        d = x[(x["run_a"] == pair[0]) & (x["run_b"] == pair[1])]
        M = d.pivot(index="i", columns="j", values="cka").to_numpy()
        axes[1].imshow(M, origin="lower", cmap="magma", vmin=0, vmax=1, aspect="auto")
        axes[1].set_ylabel(f"layer of {d['label_a'].iloc[0]}", fontsize=8)
        axes[1].set_xlabel(f"layer of {d['label_b'].iloc[0]}", fontsize=8)
    fig.tight_layout()
    return fig


def _fig_predictions(t: Tables):
    pp = t.get("prediction_pairs", "predict")
    pc = t.get("per_class_accuracy", "predict")
    arch = pc.groupby("label")[["width", "depth"]].first()
    kind = {lab: f"w{int(r['width'])} d{int(r['depth'])}" for lab, r in arch.iterrows()}
    same = [kind[a] == kind[b] for a, b in zip(pp["a"], pp["b"], strict=True)]
    dis = 1 - pp["agreement"].to_numpy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    rng = np.random.default_rng(0)
    for k, (lab, mask) in enumerate((("same architecture (seeds)", np.array(same)),
                                     ("different architectures", ~np.array(same)))):
        axes[0].scatter(k + 0.08 * rng.standard_normal(mask.sum()), dis[mask], s=14, label=lab)
    axes[0].set_xticks([0, 1])
    axes[0].set_xticklabels(["seeds", "architectures"])
    axes[0].set_ylabel("share of test examples predicted differently")
    pc["arch"] = pc["label"].map(kind)
    for k, (a, g) in enumerate(pc.groupby("arch")):
        s = g.groupby("class")["accuracy"]
        xs = np.array(sorted(g["class"].unique())) + (k - 0.5) * 0.3
        axes[1].errorbar(xs, s.mean().values, yerr=[s.mean() - s.min(), s.max() - s.mean()], fmt="o", ms=4,
                         capsize=2, label=a)
    axes[1].set_xlabel("class")
    axes[1].set_ylabel("test accuracy")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


NGUYEN_FIGURES: dict[str, Callable] = {
    "nguyen_grid": _fig_grid, "nguyen_block_size": _fig_block_size, "nguyen_pc1": _fig_pc1,
    "nguyen_seeds": _fig_seeds, "nguyen_predictions": _fig_predictions,
}
