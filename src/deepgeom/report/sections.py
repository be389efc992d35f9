"""The sections of the study report. Each ``section_*(ctx) -> html`` reads tables through
:class:`~deepgeom.report.builder.ReportContext` and draws with :mod:`deepgeom.viz`; a missing table
raises :class:`~deepgeom.report.builder.NotRun`, which the page shows as "Not run: …"."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import yaml

from .._io import write_table
from ..analysis.blocks import Block
from ..analysis.cka_result import CKAResult
from ..analysis.kernel_dynamics import SpectraThroughTraining
from ..claims import Tables, evaluate_claims, parse_claims
from ..viz.id import plot_id_profile
from ..viz.similarity import plot_cka_heatmap, plot_pc1_fraction
from ..viz.spectrum import plot_checkpoint_spectrum, plot_dominant_count, plot_eigenvalues_through_training
from . import figures  # by module: a figure swapped there (a test's failing one) is the one drawn
from .claims import claims_html
from .context import NotRun, ReportContext, _p, html_table

__all__ = [
    "section_findings", "section_id_profile", "section_id_accuracy", "section_id_training", "section_cka", "section_cka_across",
    "section_spectrum", "section_collapse", "section_predictions", "section_config",
]


def section_overview(ctx: ReportContext) -> str:
    """The runs of the study and, when trained, their learning curves."""
    runs = ctx.runs
    parts = []
    if ctx.meta.get("description"):
        parts.append(_p(html.escape(ctx.meta["description"])))
    units = ctx.meta.get("units", [])
    status = pd.Series([u["status"] for u in units]).value_counts().to_dict() if units else {}
    parts.append(_p(f"{len(runs)} trained runs, {len(units)} units of work "
                    f"({', '.join(f'{v} {k}' for k, v in sorted(status.items()))}). "
                    "Every number below is read from <code>tables/</code> in the study directory "
                    "(CSV and Parquet), so it can be checked or re-plotted independently.", "note"))
    cols = [c for c in ("label", "dataset", "model", "width", "depth", "seed", "shuffle_fraction", "epochs",
                        "final_train_acc", "final_test_acc") if c in runs.columns]
    parts.append(html_table(runs[cols]))
    if ctx.has_table("history"):
        parts.append(ctx.figure("learning_curves", lambda: figures.plot_learning_curves(ctx.table("history"), ctx),
                                "Train (dashed) and test (solid) accuracy per epoch; train accuracy of "
                                "shuffled-label runs is measured against the shuffled labels."))
    return "\n".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:80]


def _arch(row) -> str:
    return f"{row['dataset']}/{row['model']} w{row['width']} d{row['depth']}"


def _figure_runs(df: pd.DataFrame) -> set:
    """The runs that get per-run figures: the lowest seed of each configuration (dataset, model, width,
    depth, shuffled fraction). Other seeds are in the tables and in the seed-spread figures along the
    swept axes; drawing every seed's heatmaps made the report's build time grow with the seed count."""
    cols = [c for c in ("dataset", "model", "width", "depth", "shuffle_fraction") if c in df.columns]
    if "seed" not in df.columns or not cols:
        return set(df["run"])
    first = df.drop_duplicates("run")
    first = first[first["seed"] == first.groupby(cols)["seed"].transform("min")]
    return set(first["run"])


def _last_hidden(df: pd.DataFrame) -> pd.DataFrame:
    """The row of the last hidden layer (the one before ``output``) of each (run, epoch) profile."""
    d = df[df["layer"] != "output"]
    out = d.loc[d.groupby(["run", "epoch"])["layer_index"].idxmax()]
    order = {r: i for i, r in enumerate(pd.unique(df["run"]))}  # keep the sweep's run order
    return out.assign(_o=out["run"].map(order)).sort_values(["_o", "epoch"]).drop(columns="_o")


# ------------------------------------------------------------------------------------- claims
def section_findings(ctx: ReportContext) -> str:
    """The study's pre-registered claims (``claims:`` in its config), judged on its tables."""

    raw = yaml.safe_load(ctx.config_text) if ctx.config_text else {}
    claims = parse_claims((raw or {}).get("claims"), where="claims")
    if not claims:
        raise NotRun("this study registers no claims (add a 'claims:' list to its config; see docs/studies.md)")
    df = evaluate_claims(claims, Tables({"study": ctx.study_dir}))

    write_table(df, ctx.report_dir / "claims")
    return claims_html(df) + _p('The same table: <a href="claims.csv">claims.csv</a>.', "note")


# ------------------------------------------------------------------------------------- ID
def section_id_profile(ctx: ReportContext) -> str:
    df = ctx.table("id_profiles", "id_profile")
    parts = [_p("TwoNN intrinsic dimension (Facco et al. 2017) of each analysed layer against relative depth "
                "(layer index / number of analysed layers), with the linear PC-ID (components for 90% of the "
                "variance) on the right axis, as in Ansuini et al. (2019), for the untrained (epoch 0), "
                "trained and shuffled-label networks. Whether the paper's findings (a rise then fall in "
                "trained nets, flat untrained profiles, PC-ID ≫ TwoNN) hold here is judged in the claims "
                "table at the top, against criteria fixed in the config.", "note")]
    df["arch"] = df.apply(_arch, axis=1)
    for arch, d in df.groupby("arch", sort=False):
        seed = d["seed"].min()
        d = d[d["seed"] == seed]
        profiles, labels = [], []
        for cond in ("untrained", "trained", "shuffled labels"):
            sub = d[d["condition"] == cond]
            if cond == "untrained":
                sub = sub[sub["shuffle_fraction"] == sub["shuffle_fraction"].min()]
            for frac, s in sub.groupby("shuffle_fraction"):
                profiles.append(s.sort_values("layer_index"))
                labels.append(cond if cond != "shuffled labels" else f"shuffled {frac:g}")
        parts.append(ctx.figure(f"id_profile_{_slug(arch)}_s{seed}",
                                lambda p=profiles, lb=labels, t=f"{arch} (seed {seed})": plot_id_profile(p, lb, title=t),
                                f"ID profile of {arch}, seed {seed}: untrained, trained and shuffled-label networks."))
    trained = df[df["condition"] == "trained"]
    if trained["arch"].nunique() > 1:
        firsts = trained[trained["seed"] == trained.groupby("arch")["seed"].transform("min")]
        profiles = [g.sort_values("layer_index") for _, g in firsts.groupby("arch", sort=False)]
        labels = list(firsts.groupby("arch", sort=False).groups)
        parts.append(ctx.figure("id_profile_overlay", lambda: plot_id_profile(profiles, labels, pca=False,
                                                                              title="trained networks"),
                                "TwoNN ID profiles of the trained architectures overlaid on relative depth."))
    rows = []
    for (run, epoch), d in df.groupby(["run", "epoch"], sort=False):
        d = d.sort_values("layer_index")
        hidden = d[(d["layer"] != "input") & (d["layer"] != "output")]
        peak = hidden.loc[hidden["twonn_id"].idxmax()] if hidden["twonn_id"].notna().any() else None
        last = hidden.iloc[-1] if len(hidden) else None
        rows.append({
            "run": ctx.label_of(run), "epoch": epoch, "condition": d["condition"].iloc[0],
            "ID input": d["twonn_id"].iloc[0],
            "peak hidden ID": None if peak is None else peak["twonn_id"],
            "peak at depth": None if peak is None else peak["relative_depth"],
            "last hidden ID": None if last is None else last["twonn_id"],
            "last hidden PC-ID": None if last is None or "pca_id" not in d else last["pca_id"],
            "last hidden D": None if last is None else last["D"],
            "ID output": d["twonn_id"].iloc[-1],
        })
    parts.append("<h3>Key numbers</h3>" + html_table(pd.DataFrame(rows)))
    return "\n".join(parts)


def section_id_accuracy(ctx: ReportContext) -> str:
    df = ctx.table("id_profiles", "id_profile")
    runs = ctx.runs
    final = df[df["epoch"] == df.groupby("run")["epoch"].transform("max")]
    final = final[final["epoch"] > 0]
    if final.empty:
        raise NotRun("no trained checkpoint was profiled")
    lh = _last_hidden(final)
    pts = pd.DataFrame({
        "dataset": lh["dataset"].to_numpy(),
        "label": [ctx.label_of(r) for r in lh["run"]],
        "layer": lh["layer"].to_numpy(),
        "twonn_id": lh["twonn_id"].to_numpy(),
        "test_acc": lh["run"].map(runs.set_index("run")["final_test_acc"]).to_numpy(),
        "shuffled": (lh["shuffle_fraction"] > 0).to_numpy(),
    })
    texts = []
    for ds, clean in pts[~pts["shuffled"]].groupby("dataset", sort=False):  # accuracies compare within a dataset
        r = figures.pearson_r(clean["test_acc"].to_numpy(), clean["twonn_id"].to_numpy())
        texts.append(f"{html.escape(str(ds))}: Pearson r between last-hidden-layer ID and test accuracy over the "
                     f"{len(clean)} true-label runs: <b>{r:.2f}</b>." if np.isfinite(r) else
                     f"{html.escape(str(ds))}: Pearson r needs at least 3 true-label runs (this study has "
                     f"{len(clean)}).")
    text = " ".join(texts)
    parts = [_p("Ansuini et al. (2019) found that the ID of the last hidden layer, measured on training data, "
                "predicts generalisation across architectures: correlation r = 0.94 with the top-5 test "
                "<i>error</i> on ImageNet networks: the paper's direction corresponds to a negative r between ID "
                "and accuracy here. " + text, "note"),
             ctx.figure("id_vs_accuracy", lambda: figures.plot_id_vs_accuracy(pts),
                        "Last-hidden-layer TwoNN ID against test accuracy; hollow markers: shuffled labels."),
             html_table(pts)]
    return "\n".join(parts)


def section_id_training(ctx: ReportContext) -> str:
    df = ctx.table("id_training", "id_during_training")
    if df["layer"].groupby(df["run"]).nunique().max() > 1:  # all layers profiled: keep the last hidden one
        df = df.assign(layer_index=df.groupby(["run", "epoch"]).cumcount())
        df = _last_hidden(df)
    parts = [_p("TwoNN ID of the last hidden layer at every checkpoint, beside the test accuracy at that epoch.",
                "note"),
             ctx.figure("id_during_training", lambda: figures.plot_id_during_training(df, ctx),
                        "ID of the last hidden layer (left) and test accuracy (right) against epoch.")]
    rows = []
    for run, d in df.groupby("run", sort=False):
        d = d.sort_values("epoch")
        rows.append({"run": ctx.label_of(run), "layer": d["layer"].iloc[0],
                     "ID at epoch 0": d["twonn_id"].iloc[0],
                     "max ID (epoch)": f"{d['twonn_id'].max():.2f} ({int(d.loc[d['twonn_id'].idxmax(), 'epoch'])})",
                     "final ID": d["twonn_id"].iloc[-1], "final PC-ID": d["pca_id"].iloc[-1] if "pca_id" in d else None,
                     "final test acc": d["test_acc"].iloc[-1] if "test_acc" in d else None})
    parts.append(html_table(pd.DataFrame(rows)))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- CKA
def _cka_result(d: pd.DataFrame, *, within: bool, pc1_removed: bool = False, pc1: pd.DataFrame | None = None):
    la = d.sort_values("i").drop_duplicates("i")
    lb = d.sort_values("j").drop_duplicates("j")
    M = d.pivot(index="i", columns="j", values="cka").sort_index().sort_index(axis=1)
    matrix = pd.DataFrame(M.to_numpy(), index=pd.Index(la["layer_a"].tolist(), name="layer_a"),
                          columns=pd.Index(lb["layer_b"].tolist(), name="layer_b"))
    frac = None
    if pc1 is not None and len(pc1):
        frac = dict(zip(pc1["layer"], pc1["pc1_fraction"], strict=True))
    return CKAResult(matrix=matrix, layers_a=la["layer_a"].tolist(), layers_b=lb["layer_b"].tolist(),
                     depth_a=la["depth_a"].astype(float).tolist(), depth_b=lb["depth_b"].astype(float).tolist(),
                     n=int(d["n"].iloc[0]) if "n" in d else 0, within=within, batch_size=None,
                     pc1_removed=pc1_removed, pc1_fraction_a=frac)


def section_cka(ctx: ReportContext) -> str:
    pairs = ctx.table("cka_pairs", "cka_matrix")
    blocks = ctx.table("cka_blocks") if ctx.has_table("cka_blocks") else pd.DataFrame(columns=["run"])
    pc1 = ctx.table("cka_pc1") if ctx.has_table("cka_pc1") else pd.DataFrame(columns=["run"])
    parts = [_p("Minibatch linear CKA (unbiased HSIC summed over batches; Nguyen, Raghu & Kornblith 2021) "
                "between every pair of analysed layers of each trained network, on held-out test examples. "
                "Dashed squares mark <i>blocks</i>: maximal runs of consecutive layers whose pairwise CKA all "
                "reach the threshold (deepgeom's rule; the paper read blocks by eye). The paper traces blocks "
                "to a dominant first principal component: the second heatmap of each run has every layer's "
                "first PC projected out, and the line plot gives each layer's PC1 variance fraction. Heatmaps "
                "are drawn for the lowest seed of each configuration; the tables list every run.", "note")]
    drawn = _figure_runs(pairs)
    for run, d in pairs.groupby("run", sort=False):
        if run not in drawn:
            continue
        label = ctx.label_of(run)
        bl = blocks[blocks["run"] == run]
        spans = [Block(start=int(b.start), stop=int(b.stop), layers=[b.first_layer, b.last_layer],
                       min_cka=float(b.min_cka), mean_cka=float(b.mean_cka)) for b in bl.itertuples()]
        plain = _cka_result(d[~d["pc1_removed"].astype(bool)], within=True)
        parts.append(ctx.figure(f"cka_{run}", lambda r=plain, s=spans, lb=label:
                                plot_cka_heatmap(r, blocks=s, title=f"{lb}: linear CKA (minibatch), n = {r.n}",
                                                 label_a=lb),
                                f"{label}: CKA between all layer pairs; {len(spans)} block(s) marked."))
        removed = d[d["pc1_removed"].astype(bool)]
        if len(removed):
            res = _cka_result(removed, within=True, pc1_removed=True)
            parts.append(ctx.figure(f"cka_{run}_nopc1", lambda r=res, lb=label:
                                    plot_cka_heatmap(r, blocks=False, title=f"{lb}: CKA, first PC removed",
                                                     label_a=lb),
                                    f"{label}: the same heatmap with each layer's first principal component removed."))
        p1 = pc1[pc1["run"] == run]
        if len(p1):
            parts.append(ctx.figure(f"cka_{run}_pc1", lambda p=p1, lb=label: plot_pc1_fraction(p, title=lb),
                                    f"{label}: variance fraction of each layer's first principal component."))
    if len(blocks):
        b = blocks.assign(run=[ctx.label_of(r) for r in blocks["run"]])
        parts.append("<h3>Blocks</h3>" + html_table(b[["run", "first_layer", "last_layer", "size", "min_cka",
                                                        "mean_cka", "threshold"]]))
    else:
        parts.append(_p("No block reached the threshold in any network of this study.", "note"))
    return "\n".join(parts)


def section_cka_across(ctx: ReportContext) -> str:
    pairs = ctx.table("cka_across", "cka_across")
    parts = [_p("CKA between every layer of one trained model (rows) and every layer of another (columns), "
                "both fed the same test batches in one pass (Nguyen et al. 2021 compare wide and deep "
                "networks this way).", "note")]
    for (a, b), d in pairs.groupby(["run_a", "run_b"], sort=False):
        res = _cka_result(d, within=False)
        la, lb = d["label_a"].iloc[0], d["label_b"].iloc[0]
        parts.append(ctx.figure(f"cka_across_{a}_{b}", lambda r=res, x=la, y=lb:
                                plot_cka_heatmap(r, blocks=False, label_a=x, label_b=y, title=f"{x} vs {y}"),
                                f"CKA across models: {la} (rows) vs {lb} (columns)."))
    if ctx.has_table("cka_best_match"):
        bm = ctx.table("cka_best_match")
        parts.append("<h3>Best match of each layer</h3>" + html_table(
            bm[["label_a", "layer_a", "depth_a", "label_b", "best_b", "depth_b", "cka", "margin"]]))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- spectra
def _spectra_result(ctx: ReportContext, run: str):
    s = ctx.table("spectra", "spectrum_through_training")
    s = s[s["run"] == run].sort_values("epoch")
    ev = ctx.table("spectrum_eigenvalues")
    al = ctx.table("spectrum_alignment") if ctx.has_table("spectrum_alignment") else pd.DataFrame(
        columns=["run", "epoch", "k", "pi_targets", "pi_outputs"])
    n_classes = int(s["n_classes"].iloc[0]) if "n_classes" in s and s["n_classes"].notna().any() else None
    return SpectraThroughTraining(
        eigenvalues=ev[ev["run"] == run][["epoch", "k", "eigenvalue"]].reset_index(drop=True),
        alignment=al[al["run"] == run][["epoch", "k", "pi_targets", "pi_outputs"]].reset_index(drop=True),
        summary=s.reset_index(drop=True),
        task="classification" if n_classes else "regression",
        n_classes=n_classes,
        k_top=int(s["k_top"].iloc[0]) if "k_top" in s else (n_classes or 1),
        centered=bool(s["centered"].iloc[0]) if "centered" in s else False,
    )


def section_spectrum(ctx: ReportContext) -> str:
    s = ctx.table("spectra", "spectrum_through_training")
    parts = [_p("Eigenvalues of the feature kernel of the penultimate layer Φ (G = ΦᵀΦ/n on a fixed subset of "
                "training points with the labels trained on, uncentred so the constant mode counts) at every "
                "checkpoint (Nam et al. 2024). The dominant count follows the rule in "
                "<code>deepgeom.functional.spectrum.dominant_count</code> (largest spectral gap, reported "
                "with its size in decades; else the effective dimension); it is called MF (minimal feature) "
                "when about the number of classes C, EF (extended feature) when well above. Figures are "
                "drawn for the lowest seed of each configuration; the table lists every run.", "note")]
    rows = []
    drawn = _figure_runs(s)
    for run, d in s.groupby("run", sort=False):
        label = ctx.label_of(run)
        if run in drawn:
            res = _spectra_result(ctx, run)
            parts.append(f"<h3>{html.escape(label)}</h3>")
            parts.append(ctx.figure(f"spectrum_eig_{run}", lambda r=res: plot_eigenvalues_through_training(r),
                                    f"{label}: eigenvalues ρ_k against epoch (log scale)."))
            parts.append(ctx.figure(f"spectrum_dominant_{run}", lambda r=res: plot_dominant_count(r),
                                    f"{label}: dominant count against epoch beside accuracy."))
            parts.append(ctx.figure(f"spectrum_last_{run}", lambda r=res: plot_checkpoint_spectrum(r),
                                    f"{label}: spectrum and captured share Π(k) at the last checkpoint."))
        d = d.sort_values("epoch")
        last = d.iloc[-1]
        rows.append({
            "run": label, "epoch": int(last["epoch"]), "dominant": last["dominant"], "rule": last["rule"],
            "gap at k": last.get("gap_k"), "gap (decades)": last.get("gap_decades"),
            "effective dim": last.get("effective_dim"), "C": last.get("n_classes"), "regime": last.get("regime"),
            "Π targets top-k": last.get("pi_targets_top_k"), "test acc": last.get("test_acc"),
            "count by epoch": " → ".join(f"{int(e)}:{int(c)}" for e, c in zip(d["epoch"], d["dominant"], strict=True)),
        })
    parts.insert(1, "<h3>Dominant count and regime at the last checkpoint</h3>" + html_table(pd.DataFrame(rows)))
    return "\n".join(parts)


def section_collapse(ctx: ReportContext) -> str:
    s = ctx.table("spectra", "spectrum_through_training")
    cols = [c for c in ("nc1", "nc2", "nc3", "nc4") if c in s.columns and s[c].notna().any()]
    if not cols:
        raise NotRun("the spectra table has no neural-collapse columns (regression runs)")
    parts = [_p("Neural-collapse metrics of the penultimate features (Papyan, Han & Donoho 2020): NC1 = "
                "Tr(Σ_W Σ_B⁺)/C (within-class variability), NC2 (distance of the class means from a simplex "
                "ETF), NC3 (alignment of classifier rows with the class means), NC4 (disagreement of the "
                "network with the nearest-class-mean rule). All fall toward 0 under collapse.", "note"),
             ctx.figure("collapse", lambda: figures.plot_metric_through_training(s, cols, ctx, title="neural collapse"),
                        "NC1–NC4 against epoch (log scale where positive), one line per run.")]
    extra = [c for c in ("effective_rank", "alpha", "richness") if c in s.columns]
    first_last = s[(s["epoch"] == s.groupby("run")["epoch"].transform("min"))
                   | (s["epoch"] == s.groupby("run")["epoch"].transform("max"))]
    tab = first_last[["run", "epoch", *cols, *extra]].copy()
    tab["run"] = [ctx.label_of(r) for r in tab["run"]]
    parts.append(html_table(tab))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- predictions
def section_predictions(ctx: ReportContext) -> str:
    parts = [_p("Predictions of the trained (true-label) models on the same test examples: per-example "
                "agreement, how often one is right where the other is wrong (McNemar p), and the mean absolute "
                "per-class accuracy difference. With two or more architectures of two or more seeds each, the "
                "permutation test of Nguyen et al. (2021, §6) asks whether per-class differences between "
                "architectures exceed those between seeds.", "note")]
    found = False
    if ctx.has_table("prediction_pairs"):
        found = True
        pp = ctx.table("prediction_pairs")
        keep = [c for c in pp.columns if c not in ("unit", "analysis")]
        parts.append("<h3>Pairs of models</h3>" + html_table(pp[keep]))
    if ctx.has_table("architecture_test"):
        found = True
        at = ctx.table("architecture_test")
        parts.append("<h3>Architecture vs seed test</h3>" + html_table(at[[c for c in at.columns
                                                                            if c not in ("unit", "analysis")]]))
    elif found:
        parts.append(_p("The architecture-vs-seed test needs two or more architectures with two or more seeds "
                        "each; not applicable to this study.", "note"))
    if ctx.has_table("per_class_accuracy"):
        found = True
        pc = ctx.table("per_class_accuracy")
        wide = pc.pivot_table(index="label", columns="class", values="accuracy").reset_index()
        wide.columns = [str(c) if c != "label" else "model \\ class" for c in wide.columns]
        parts.append("<h3>Per-class test accuracy</h3>" + html_table(wide))
    if not found:
        raise NotRun("analysis 'predictions' is not part of this study" if "predictions" not in
                     ctx.meta.get("analyses", {}) else "no prediction tables were produced")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- config
def section_config(ctx: ReportContext) -> str:
    meta = ctx.meta
    parts = ["<h3>Study config</h3>", f"<pre>{html.escape(ctx.config_text)}</pre>"]
    parts.append("<h3>Resolved analysis parameters</h3>")
    parts.append(f"<pre>{html.escape(__import__('json').dumps(meta.get('analyses', {}), indent=2))}</pre>")
    versions = pd.DataFrame(sorted(meta.get("versions", {}).items()), columns=["package", "version"])
    parts.append("<h3>Versions</h3>" + html_table(versions))
    units = pd.DataFrame(meta.get("units", []))
    if len(units):
        agg = units.groupby("kind").agg(units=("key", "count"), seconds=("seconds", "sum")).reset_index()
        parts.append("<h3>Units of work</h3>" + _p(
            f"Started {html.escape(str(meta.get('started')))}, finished {html.escape(str(meta.get('finished')))}. "
            "Seconds are the compute time of each unit when it was computed (reused units keep theirs).",
            "note") + html_table(agg))
    if ctx.problems:
        parts.append("<h3>Problems while building this report</h3><ul>" +
                     "".join(f"<li>{html.escape(p)}</li>" for p in ctx.problems) + "</ul>")
    return "\n".join(parts)
