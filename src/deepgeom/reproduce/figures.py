"""The reproduction's figures, drawn from the same tables the claims are judged on.

Every curve that averages seeds shows the spread: mean over seeds with a band from the lowest to the
highest seed (TwoNN and PC-ID alike); single-model curves show their subsample interval. Captions (in
:data:`CAPTIONS`) say what is plotted, never what it is expected to show.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write_json
from ..claims import Tables
from ..claims.statistics import final_runs
from ..viz import plt, save_figure
from .figures_nguyen import NGUYEN_CAPTIONS, NGUYEN_CLAIM_FIGURES, NGUYEN_FIGURES

__all__ = ["draw_figures", "CAPTIONS", "CLAIM_FIGURES", "FIGURES"]

CAPTIONS: dict[str, str] = {
    "profiles": "TwoNN ID (left) and PC-ID (right) of each analysed layer against relative depth, for the "
                "width-16 VGG on Fashion-MNIST training images: trained (final epoch) and the same networks "
                "untrained (epoch 0). Line: mean over seeds; band: lowest to highest seed.",
    "id_training": "TwoNN ID of every analysed layer (rows, input at the top) at each checkpoint (columns) of "
                   "the width-16 VGG, mean over seeds.",
    "decimation": "TwoNN ID of the last hidden layer of the width-16 VGG on disjoint blocks of N, N/2, N/4, … "
                  "training images: mean over blocks (points) with the blocks' standard deviation, one line per seed.",
    "id_accuracy": "Last-hidden-layer TwoNN ID against test accuracy of every architecture of the ID–accuracy "
                   "study, each trained until it fit its training set or hit the epoch limit (seed means; bars: "
                   "seed range; label: width, depth and the epochs trained; hollow: a seed ended below the "
                   "claim's training-accuracy precondition). Title: Pearson r with its 95% Fisher interval.",
    "shuffle": "Left: last-hidden-layer TwoNN ID against the fraction of shuffled training labels (mean over "
               "seeds, bars: seed range). Right: the lowest final training accuracy reached at each fraction.",
    "shuffle_profiles": "TwoNN ID profiles of the width-8 VGG trained with each fraction of shuffled labels "
                        "(mean over seeds; band: seed range).",
    "transformer": "TwoNN ID of all-MiniLM-L6-v2's hidden states (embeddings, then the 6 encoder layers) on "
                   "the bundled sentences, mean-pooled (left) and token-level (right): all examples (line) and "
                   "the 2.5–97.5% range over random 80% subsamples of sentences (band).",
}


def _band(ax, x, groups: pd.DataFrame, col: str, label: str, color=None, marker="o"):
    g = groups.groupby(x)[col]
    xs = np.asarray(sorted(groups[x].unique()), dtype=float)
    mean, lo, hi = g.mean().reindex(xs), g.min().reindex(xs), g.max().reindex(xs)
    (line,) = ax.plot(xs, mean.values, marker=marker, label=label, color=color)
    ax.fill_between(xs, lo.values, hi.values, alpha=0.2, color=line.get_color())


def _fig_profiles(t: Tables):
    df = t.get("id_profiles", "profiles")
    df = df[(df["model"] == "vgg") & (df["width"] == df[df["model"] == "vgg"]["width"].max())]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    last = df["epoch"].max()
    for ax, col, name in zip(axes, ("twonn_id", "pca_id"), ("TwoNN ID", "PC-ID"), strict=True):
        for ep, lab in ((last, f"trained (epoch {last})"), (0, "untrained (epoch 0)")):
            _band(ax, "relative_depth", df[df["epoch"] == ep], col, lab)
        ax.set_xlabel("relative depth")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    fig.tight_layout()
    return fig


def _fig_id_training(t: Tables):
    df = t.get("id_training", "profiles")
    df = df[(df["model"] == "vgg") & (df["width"] == df[df["model"] == "vgg"]["width"].max())]
    piv = df.groupby(["relative_depth", "epoch"])["twonn_id"].mean().unstack("epoch").sort_index()
    layers = df.drop_duplicates("relative_depth").set_index("relative_depth")["layer"].reindex(piv.index)
    fig, ax = plt.subplots(figsize=(7, 4))
    im = ax.imshow(piv.values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(piv.shape[1]), [str(c) for c in piv.columns])
    ax.set_yticks(range(piv.shape[0]), list(layers))
    for (i, j), v in np.ndenumerate(piv.values):
        ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xlabel("epoch")
    fig.colorbar(im, ax=ax, label="TwoNN ID")
    fig.tight_layout()
    return fig


def _fig_decimation(t: Tables):
    df = t.get("id_scale", "profiles")
    df = df[(df["model"] == "vgg") & (df["width"] == df[df["model"] == "vgg"]["width"].max())]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for seed, d in df.groupby("seed"):
        d = d.sort_values("block_size")
        ax.errorbar(d["block_size"], d["id_mean"], yerr=d["id_std"].fillna(0), marker="o", capsize=3,
                    label=f"seed {seed}")
    ax.set_xscale("log")
    ax.set_xlabel("points per block")
    ax.set_ylabel("TwoNN ID")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_id_accuracy(t: Tables, claims: pd.DataFrame | None):
    row = None if claims is None else claims[claims["statistic"] == "id_accuracy_correlation"]
    row = row.iloc[0] if row is not None and len(row) else None
    params = json.loads(row["params"]) if row is not None and isinstance(row.get("params"), str) else {}
    study = params.get("study") or ("accuracy" if "accuracy" in t.studies else "profiles")
    min_fit = params.get("min_train_acc")
    m = final_runs(t, study, {"shuffle_fraction": 0.0}, ("test_acc", "train_acc", "epoch"))
    m = m.rename(columns={"test_acc": "acc"})
    g = m.groupby(["model", "width", "depth"])
    agg = g.agg(id=("id", "mean"), id_lo=("id", "min"), id_hi=("id", "max"), acc=("acc", "mean"),
                acc_lo=("acc", "min"), acc_hi=("acc", "max"), fit=("train_acc", "min"),
                e_lo=("epoch", "min"), e_hi=("epoch", "max")).reset_index()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    any_unfit = False
    for i, (model, d) in enumerate(agg.groupby("model")):
        color = f"C{i}"
        ax.errorbar(d["acc"], d["id"], xerr=[d["acc"] - d["acc_lo"], d["acc_hi"] - d["acc"]],
                    yerr=[d["id"] - d["id_lo"], d["id_hi"] - d["id"]], fmt="none", capsize=3, color=color)
        unfit = (d["fit"] < min_fit) if min_fit is not None else pd.Series(False, index=d.index)
        any_unfit |= bool(unfit.any())
        ax.scatter(d["acc"], d["id"], color=color, label=model, zorder=3)
        if unfit.any():
            ax.scatter(d["acc"][unfit], d["id"][unfit], color="white", edgecolors=color, zorder=4)
        for r in d.itertuples():
            ep = f"{r.e_lo}" if r.e_lo == r.e_hi else f"{r.e_lo}–{r.e_hi}"
            ax.annotate(f"w{r.width} d{r.depth}, {ep} ep", (r.acc, r.id), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("last-hidden TwoNN ID")
    if row is not None:
        ax.set_title(f"r = {row.measured:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}], n = {row.n}", fontsize=9)
    if any_unfit:
        ax.scatter([], [], color="white", edgecolors="grey", label=f"a seed below train acc {min_fit:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_shuffle(t: Tables):
    m = final_runs(t, "shuffle", None, ("train_acc",))
    g = m.groupby("shuffle_fraction")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    mean = g["id"].mean()
    axes[0].errorbar(mean.index, mean.values, yerr=[mean - g["id"].min(), g["id"].max() - mean], marker="o",
                     capsize=3)
    axes[0].set_xlabel("fraction of shuffled training labels")
    axes[0].set_ylabel("last-hidden TwoNN ID")
    axes[1].plot(g["train_acc"].min().index, g["train_acc"].min().values, marker="o")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("fraction of shuffled training labels")
    axes[1].set_ylabel("lowest final training accuracy")
    fig.tight_layout()
    return fig


def _fig_shuffle_profiles(t: Tables):
    df = t.get("id_profiles", "shuffle")
    df = df[df["epoch"] == df.groupby("run")["epoch"].transform("max")]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for f, d in df.groupby("shuffle_fraction"):
        _band(ax, "relative_depth", d, "twonn_id", f"{f:g} shuffled")
    ax.set_xlabel("relative depth")
    ax.set_ylabel("TwoNN ID")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_transformer(t: Tables):
    df = t.get("transformer_id", "transformer")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, mode in zip(axes, ("mean", "tokens"), strict=True):
        d = df[df["reduce"] == mode]
        full = d[d["replicate"] == 0].sort_values("layer_index")
        reps = d[d["replicate"] > 0].groupby("layer_index")["twonn_id"]
        ax.plot(full["layer_index"], full["twonn_id"], marker="o", label="all examples")
        if reps.ngroups:
            ax.fill_between(reps.quantile(0.025).index, reps.quantile(0.025).values, reps.quantile(0.975).values,
                            alpha=0.25, label="subsample 95% range")
        ax.set_xticks(range(7), ["emb", "L1", "L2", "L3", "L4", "L5", "L6"])
        ax.set_title(f"{'mean-pooled' if mode == 'mean' else 'token-level'} (n = {int(full['n'].iloc[0])})", fontsize=9)
        ax.set_ylabel("TwoNN ID")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


#: The figure that shows the evidence behind each statistic (linked beside the claim in REPRODUCTION.md).
CLAIM_FIGURES: dict[str, str] = {
    "id_over_dimension": "profiles", "hunchback": "profiles", "hunchback_contrast": "profiles",
    "profile_flatness": "profiles", "pcid_over_twonn": "profiles", "id_accuracy_correlation": "id_accuracy",
    "shuffle_id_slope": "shuffle", "id_training_ratio": "id_training", "decimation_deviation": "decimation",
    "subsample_hunchback": "transformer",
}

_ANSUINI: dict[str, Callable] = {
    "profiles": _fig_profiles, "id_training": _fig_id_training, "decimation": _fig_decimation,
    "id_accuracy": _fig_id_accuracy, "shuffle": _fig_shuffle, "shuffle_profiles": _fig_shuffle_profiles,
    "transformer": _fig_transformer,
}

# ------------------------------------------------------------------------------------- nam2024
NAM_CAPTIONS: dict[str, str] = {
    "nam_counts": "Dominant eigenfunction count of the penultimate (uncentred) feature kernel against epoch, "
                  "cross-entropy (top) and MSE (bottom), one panel per dataset and architecture: mean over "
                  "seeds (line), lowest to highest seed (band), the lowest and highest count over 80% "
                  "subsamples of the points (dotted); filled markers where every seed is called MF; dashed: C.",
    "nam_collapse": "Every checkpoint of the collapse studies (the MF studies' MLPs trained 150 epochs; mean "
                    "over seeds; one line per dataset and loss; log-scaled epoch axis): the dominant count, NC1 (log scale), NC2 (equal norms and angles of the "
                    "class means; 0 = simplex ETF), the kernel's distance to the block-constant rank-C class "
                    "kernel 1 − CKA(K, K_class), and the training accuracy.",
    "nam_ef": "mnist1d MLPs and Fashion-MNIST MLPs with shuffled labels: dominant count (left, dashed: C), "
              "training and test accuracy (right) against epoch; one line per seed.",
    "nam_sweep": "SGD learning-rate sweep (MLP, Fashion-MNIST): final test accuracy (left) and final dominant "
                 "count (right) against the learning rate, one marker per seed; filled: called MF, open: EF.",
    "nam_richness": "Richness D_LR = 1 − CKA(K, K_ideal) through training for each learning rate of the sweep "
                    "(mean over seeds, band: seed range), from the lazy (smallest lr) to the rich end.",
    "nam_regression": "Regression with 3 known target functions: share Π*(4) of the targets in the span of the "
                      "top 4 eigenfunctions (left), dominant count (middle, dashed: m + 1 = 4) and R² on the "
                      "training points (right) against epoch; one line per seed.",
}


def _nam_spectra(t: Tables, studies) -> pd.DataFrame:
    frames = []
    for s in studies:
        if s in t.studies and (t.studies[s] / "tables" / "spectra.parquet").is_file():
            frames.append(t.get("spectra", s).assign(study=s))
    if not frames:
        raise FileNotFoundError(f"no spectra table in {list(studies)}")
    return pd.concat(frames, ignore_index=True)


def _fig_nam_counts(t: Tables):
    df = _nam_spectra(t, ["mf_ce", "mf_mse"])
    setups = sorted(df.groupby(["dataset", "model"]).groups)
    fig, axes = plt.subplots(2, len(setups), figsize=(3.2 * len(setups), 6), squeeze=False, sharey=True)
    for i, study in enumerate(("mf_ce", "mf_mse")):
        for j, (ds, model) in enumerate(setups):
            ax = axes[i, j]
            d = df[(df["study"] == study) & (df["dataset"] == ds) & (df["model"] == model)]
            if d.empty:
                ax.set_axis_off()
                continue
            _band(ax, "epoch", d, "dominant", "dominant count")
            if "dominant_sub_min" in d.columns:
                g = d.groupby("epoch")
                ax.plot(g["dominant_sub_min"].min().index, g["dominant_sub_min"].min().values, ":", color="grey")
                ax.plot(g["dominant_sub_max"].max().index, g["dominant_sub_max"].max().values, ":", color="grey")
            allmf = d.groupby("epoch")["regime"].apply(lambda r: bool((r == "MF").all()))
            mean = d.groupby("epoch")["dominant"].mean()
            ax.plot(allmf.index[allmf.values], mean[allmf.values], "o", color="black", ms=4)
            ax.axhline(int(d["n_classes"].iloc[0]), ls="--", color="red", lw=1)
            ax.set_yscale("log")
            ax.set_title(f"{study.split('_')[1].upper()}: {ds} {model}", fontsize=9)
            ax.set_xlabel("epoch")
        axes[i, 0].set_ylabel("dominant count")
    fig.tight_layout()
    return fig


def _fig_nam_collapse(t: Tables):
    long = [s for s in ("collapse", "collapse_mse") if s in t.studies]
    df = _nam_spectra(t, long or ["mf_ce", "mf_mse"])
    df = df[df["model"] == "mlp"]
    cols = [("dominant", "dominant count", True), ("nc1", "NC1", True), ("nc2", "NC2", False),
            ("kernel_class_distance", "1 − CKA(K, K_class)", False), ("accuracy", "training accuracy", False)]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.3 * len(cols), 3.4))
    for (study, ds), d in df.groupby(["study", "dataset"]):
        lab = f"{ds} {'MSE' if 'mse' in study else 'CE'}"
        for ax, (col, name, log) in zip(axes, cols, strict=True):
            m = d.groupby("epoch")[col].mean()
            ax.plot(m.index, m.values, marker="o", ms=3, label=lab)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_xscale("symlog", linthresh=1)
            if log:
                ax.set_yscale("log")
    axes[0].axhline(10, ls="--", color="red", lw=1)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig_nam_ef(t: Tables):
    df = _nam_spectra(t, ["ef"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (ds, shuf, seed), d in df.groupby(["dataset", "shuffle_fraction", "seed"]):
        d = d.sort_values("epoch")
        lab = f"{ds}{' shuffled' if shuf else ''}"
        (ln,) = axes[0].plot(d["epoch"], d["dominant"], marker="o", ms=3, label=lab if seed == 0 else None)
        axes[1].plot(d["epoch"], d["accuracy"], color=ln.get_color(), label=f"{lab} train" if seed == 0 else None)
        axes[1].plot(d["epoch"], d["test_acc"], "--", color=ln.get_color(), label=f"{lab} test" if seed == 0 else None)
    axes[0].axhline(10, ls="--", color="red", lw=1)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("dominant count")
    axes[1].set_ylabel("accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _lr_frames(t: Tables) -> pd.DataFrame:
    names = sorted((s for s in t.studies if s.startswith("lr_")), key=lambda s: float(s[3:]))
    df = _nam_spectra(t, names)
    df["lr"] = df["study"].str[3:].astype(float)
    return df


def _fig_nam_sweep(t: Tables):
    df = _lr_frames(t)
    last = df[df["epoch"] == df.groupby(["study", "run"])["epoch"].transform("max")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col in zip(axes, ("test_acc", "dominant"), strict=True):
        for mf, d in last.groupby(last["regime"] == "MF"):
            ax.scatter(d["lr"], d[col], facecolors="C0" if mf else "none", edgecolors="C0",
                       label="MF" if mf else "EF")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (SGD)")
        ax.set_ylabel("final test accuracy" if col == "test_acc" else "final dominant count")
        ax.legend(fontsize=8)
    axes[1].axhline(10, ls="--", color="red", lw=1)
    fig.tight_layout()
    return fig


def _fig_nam_richness(t: Tables):
    df = _lr_frames(t)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for lr, d in df.groupby("lr"):
        _band(ax, "epoch", d, "richness", f"lr {lr:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("D_LR = 1 − CKA(K, K_ideal)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_nam_regression(t: Tables):
    df = t.get("regression", "regression")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for seed, d in df.groupby("seed"):
        d = d.sort_values("epoch")
        for ax, col in zip(axes, ("pi_targets_top_k", "dominant", "r2"), strict=True):
            ax.plot(d["epoch"], d[col], marker="o", ms=3, label=f"seed {seed}")
    for ax, name in zip(axes, ("Π*(m+1) of the targets", "dominant count", "R² (training points)"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=9)
    axes[1].axhline(int(df["m"].iloc[0]) + 1, ls="--", color="red", lw=1)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


_NAM: dict[str, Callable] = {
    "nam_counts": _fig_nam_counts, "nam_collapse": _fig_nam_collapse, "nam_ef": _fig_nam_ef,
    "nam_sweep": _fig_nam_sweep, "nam_richness": _fig_nam_richness, "nam_regression": _fig_nam_regression,
}
CAPTIONS.update(NAM_CAPTIONS)

CAPTIONS.update(NGUYEN_CAPTIONS)
CLAIM_FIGURES.update(NGUYEN_CLAIM_FIGURES)

FIGURES: dict[str, dict[str, Callable]] = {"ansuini2019": _ANSUINI, "nam2024": _NAM, "nguyen2021": NGUYEN_FIGURES}


def draw_figures(paper: str, tables: Tables, fig_dir: Path) -> dict[str, str]:
    """Draw the paper's figures into ``fig_dir`` (PNG + SVG); returns ``{name: error}`` for any that failed
    (also written to ``fig_dir/errors.json``) — a missing table leaves that figure out, not the others."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    claims_path = fig_dir.parent / "claims.parquet"
    claims = pd.read_parquet(claims_path) if claims_path.is_file() else None
    errors = {}
    for name, fn in FIGURES.get(paper, {}).items():
        try:
            fig = fn(tables, claims) if name == "id_accuracy" else fn(tables)
            save_figure(fig, fig_dir / name)
            plt.close(fig)
        except Exception as exc:  # noqa: BLE001 - recorded; the other figures are still drawn
            errors[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    atomic_write_json(fig_dir / "errors.json", errors)
    return errors
