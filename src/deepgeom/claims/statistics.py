"""Named statistics that claims are judged by, each reading a study's tidy tables.

Every statistic is ``fn(tables, **params) -> Estimate``: it selects rows (``where`` filters on sweep
columns such as ``model``, ``width``, ``shuffle_fraction``; ``study`` picks one study of a
reproduction), computes one number per independent unit (a seed, a run, an architecture, a subsample)
and returns their summary with a 95% interval (:func:`~deepgeom.claims.verdict.mean_interval` across
seeds/runs, :func:`~deepgeom.claims.verdict.pearson_interval` across models). The docstring of each
says exactly what it measures, so the criterion printed beside a verdict can be checked by hand
against ``tables/*.csv``.

Layers: *hidden* means every analysed layer except the ``input`` and ``output`` pseudo-layers; the
*last hidden* layer is the hidden layer with the largest ``layer_index`` (the penultimate features).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ._registry import STATISTICS, register_statistic
from .tables import Tables
from .verdict import Estimate, mean_interval, pearson_interval

__all__ = ["STATISTICS", "Tables", "register_statistic"]

_PSEUDO = ("input", "output")


# ------------------------------------------------------------------------------------- row selection
def _where(df: pd.DataFrame, where: Mapping | None) -> pd.DataFrame:
    for col, val in (where or {}).items():
        if col not in df.columns:
            raise InputError(f"where: no column {col!r} in the table (columns: {sorted(df.columns)})")
        vals = val if isinstance(val, (list, tuple)) else [val]
        df = df[df[col].isin(vals)]
    return df


def _at_epoch(df: pd.DataFrame, epoch: Any) -> pd.DataFrame:
    """Rows at ``epoch`` of each run: ``"last"`` (each run's final checkpoint), ``0`` (untrained), or an int."""
    if epoch == "last":
        return df[df["epoch"] == df.groupby("run")["epoch"].transform("max")]
    return df[df["epoch"] == int(epoch)]


def _hidden(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["layer"].isin(_PSEUDO)]


def _profiles(tables: Tables, study: str | None, where: Mapping | None, epoch: Any,
              table: str = "id_profiles") -> pd.DataFrame:
    df = _where(tables.get(table, study), where)
    df = _at_epoch(df, epoch)
    if df.empty:
        raise InputError(f"no rows in {table!r} for where={dict(where or {})} at epoch {epoch!r}")
    return df


def _per_run(df: pd.DataFrame, fn: Callable[[pd.DataFrame], float]) -> pd.Series:
    return pd.Series({run: fn(d.sort_values("layer_index")) for run, d in df.groupby("run", sort=False)},
                     dtype=float)


def _summary(values: pd.Series, unit: str, note: str = "", blocked: str = "") -> Estimate:
    m, lo, hi, n = mean_interval(values.to_numpy())
    return Estimate(m, lo, hi, n, note=(f"mean over {n} {unit}" + (f"; {note}" if note else "")), blocked=blocked)


# ------------------------------------------------------------------------------------- shape of the profile
def _reference_and_hidden(d: pd.DataFrame, col: str) -> tuple[float, pd.DataFrame]:
    """The profile's reference ID (the ``input`` pseudo-layer, or else the first layer — e.g. a
    transformer's embeddings) and its hidden layers after it, in depth order."""
    d = d.sort_values("layer_index")
    inp = d[d["layer"] == "input"]
    if inp.empty:
        inp, d = d.iloc[:1], d.iloc[1:]
    h = _hidden(d)
    return (float(inp[col].iloc[0]) if len(inp) else math.nan), h


def hunch(d: pd.DataFrame, col: str = "twonn_id") -> float:
    """min(peak hidden ID / input ID, peak hidden ID / last-hidden ID) of one profile: above 1 when the
    ID rises from the input to some hidden layer *and* falls again by the last hidden layer."""
    ref, h = _reference_and_hidden(d, col)
    if h.empty or not math.isfinite(ref):
        return math.nan
    peak, last = float(h[col].max()), float(h[col].iloc[-1])
    return min(peak / ref, peak / last)


def flatness(d: pd.DataFrame, col: str = "twonn_id") -> float:
    """Largest factor by which any hidden layer's ID differs from the input's: max over hidden layers of
    max(ID/ID_in, ID_in/ID) — 1 for a perfectly flat profile."""
    ref, h = _reference_and_hidden(d, col)
    if h.empty or not math.isfinite(ref):
        return math.nan
    r = h[col].to_numpy(float) / ref
    return float(np.max(np.maximum(r, 1 / r)))


def _last_hidden_value(d: pd.DataFrame, col: str) -> float:
    h = _hidden(d)
    return float(h.sort_values("layer_index")[col].iloc[-1]) if len(h) else math.nan


def final_runs(tables: Tables, study: str | None, where: Mapping | None, history: tuple[str, ...]) -> pd.DataFrame:
    """One row per run at its final checkpoint: its sweep columns, ``id`` (the last hidden layer's TwoNN
    ID) and the final value of each ``history`` column (e.g. ``test_acc``, ``train_acc``)."""
    df = _profiles(tables, study, where, "last")
    lh = _per_run(df, lambda d: _last_hidden_value(d, "twonn_id")).rename("id")
    hist = _where(tables.get("history", study), where)
    final = hist.sort_values("epoch").groupby("run").tail(1).set_index("run")[list(history)]
    sweep = [c for c in ("model", "width", "depth", "seed", "shuffle_fraction") if c in df.columns]
    return df.drop_duplicates("run").set_index("run")[sweep].join(lh).join(final)


@register_statistic("id_over_dimension")
def id_over_dimension(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                      epoch: Any = "last") -> Estimate:
    """Per run: the largest TwoNN ID / D (units) over hidden layers; mean and t-interval over runs."""
    df = _profiles(tables, study, where, epoch)
    return _summary(_per_run(df, lambda d: float((_hidden(d)["twonn_id"] / _hidden(d)["D"]).max())), "runs")


@register_statistic("hunchback")
def hunchback(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
              epoch: Any = "last", estimator: str = "twonn") -> Estimate:
    """Per run: :func:`hunch` of its ID profile at ``epoch``; mean and t-interval over runs (seeds)."""
    df = _profiles(tables, study, where, epoch)
    return _summary(_per_run(df, lambda d: hunch(d, f"{estimator}_id")), "runs")


@register_statistic("hunchback_contrast")
def hunchback_contrast(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                       estimator: str = "twonn") -> Estimate:
    """Per run: :func:`hunch` of the trained profile minus that of the *same* network untrained
    (epoch 0: its untrained twin); mean and paired t-interval over runs."""
    col = f"{estimator}_id"
    tr = _per_run(_profiles(tables, study, where, "last"), lambda d: hunch(d, col))
    un = _per_run(_profiles(tables, study, where, 0), lambda d: hunch(d, col))
    diff = (tr - un.reindex(tr.index)).dropna()
    return _summary(diff, "runs (trained minus untrained twin)",
                    note=f"trained {tr.mean():.2f}, untrained {un.mean():.2f}")


@register_statistic("profile_flatness")
def profile_flatness(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                     epoch: Any = 0, estimator: str = "twonn") -> Estimate:
    """Per run: :func:`flatness` of the profile at ``epoch`` (default 0, the untrained network)."""
    df = _profiles(tables, study, where, epoch)
    return _summary(_per_run(df, lambda d: flatness(d, f"{estimator}_id")), "runs")


@register_statistic("pcid_over_twonn")
def pcid_over_twonn(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                    epoch: Any = "last", layers: str = "last_hidden") -> Estimate:
    """Per run: PC-ID / TwoNN ID at the last hidden layer (``layers="last_hidden"``) or the median of
    that ratio over hidden layers (``"hidden_median"``); mean and t-interval over runs."""
    df = _profiles(tables, study, where, epoch)
    if layers not in ("last_hidden", "hidden_median"):
        raise InputError(f"layers must be 'last_hidden' or 'hidden_median'; got {layers!r}")

    def ratio(d: pd.DataFrame) -> float:
        h = _hidden(d)
        r = h["pca_id"] / h["twonn_id"]
        return float(r.iloc[-1]) if layers == "last_hidden" else float(r.median())

    return _summary(_per_run(df, ratio), "runs")


@register_statistic("id_accuracy_correlation")
def id_accuracy_correlation(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                            accuracy: str = "test_acc", min_models: int = 10,
                            min_train_acc: float | None = None) -> Estimate:
    """Pearson r between the last-hidden-layer TwoNN ID of trained networks (final epoch) and their
    final ``accuracy``, one point per architecture (seeds averaged), with its Fisher-z interval
    (Ansuini et al. 2019, Fig. 5: ID of the last hidden layer vs top-5 test error over architectures).
    Blocked when fewer than ``min_models`` architectures are present, or when ``min_train_acc`` is set
    and any run ended below that training accuracy: the paper's networks were trained to convergence,
    and under-fit ones confound the relation (they have both low ID and low accuracy)."""
    arch_cols = ["model", "width", "depth"]
    runs = final_runs(tables, study, where, tuple(dict.fromkeys((accuracy, "train_acc"))))
    m = runs.rename(columns={accuracy: "acc"})[[*arch_cols, "id", "acc"]].dropna()
    per_arch = m.groupby(arch_cols, sort=False)[["id", "acc"]].mean()
    r, lo, hi, n = pearson_interval(per_arch["id"], per_arch["acc"])
    spread = f"{accuracy} {per_arch['acc'].min():.3f}–{per_arch['acc'].max():.3f}, ID {per_arch['id'].min():.1f}–{per_arch['id'].max():.1f}"
    problems = [f"only {n} architectures (criterion needs {min_models})"] if n < min_models else []
    if min_train_acc is not None:
        fit = runs.groupby(arch_cols, sort=False)["train_acc"].min()
        spread += f"; final train acc {fit.min():.3f}–{runs['train_acc'].max():.3f}"
        low = fit[~(fit >= min_train_acc)]
        if len(low):
            problems.append("did not fit the training set (train acc < " + f"{min_train_acc:g}): " + ", ".join(
                f"{k[0]} w{k[1]} d{k[2]} {a:.3f}" for k, a in low.items()))
    return Estimate(r, lo, hi, n, note=f"Pearson r over {n} architectures ({len(m)} trained models); {spread}",
                    blocked="; ".join(problems))


@register_statistic("shuffle_id_slope")
def shuffle_id_slope(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                     min_train_acc: float = 0.95) -> Estimate:
    """Per seed: the least-squares slope of the last-hidden-layer TwoNN ID (final epoch, on the training
    images) against the shuffled fraction of labels; mean and t-interval over seeds. Blocked when any
    run's final training accuracy (on the labels it was trained on) is below ``min_train_acc``: a net
    that did not fit its labels says nothing about memorisation."""
    runs = final_runs(tables, study, where, ("train_acc",))
    slopes = {}
    for seed, d in runs.groupby("seed"):
        if d["shuffle_fraction"].nunique() >= 2:
            slopes[seed] = float(np.polyfit(d["shuffle_fraction"], d["id"], 1)[0])
    fit = runs.groupby("shuffle_fraction")["train_acc"].min()
    low = fit[fit < min_train_acc]
    blocked = ("did not fit the training labels: " + ", ".join(f"{f:g} shuffled → train acc {a:.2f}"
                                                               for f, a in low.items())) if len(low) else ""
    ids = runs.groupby("shuffle_fraction")["id"].mean()
    note = ("last-hidden ID by fraction " + ", ".join(f"{f:g}: {v:.1f}" for f, v in ids.items())
            + "; min train acc " + ", ".join(f"{f:g}: {a:.2f}" for f, a in fit.items()))
    return _summary(pd.Series(slopes, dtype=float), "seeds (slope in ID units per unit fraction)", note, blocked)


@register_statistic("id_training_ratio")
def id_training_ratio(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                      layer: str = "last_hidden") -> Estimate:
    """Per run: the ID at the final checkpoint over the ID at epoch 0 of the last hidden layer (from the
    ``id_training`` table); mean and t-interval over runs."""
    df = _where(tables.get("id_training", study), where)
    df = _hidden(df)
    if layer == "last_hidden":
        order = df.groupby("run")["relative_depth"].transform("max")
        df = df[df["relative_depth"] == order]
    else:
        df = df[df["layer"] == layer]
    vals = {}
    for run, d in df.groupby("run", sort=False):
        d = d.sort_values("epoch")
        vals[run] = float(d["twonn_id"].iloc[-1] / d["twonn_id"].iloc[0]) if len(d) >= 2 else math.nan
    return _summary(pd.Series(vals, dtype=float), "runs")


@register_statistic("decimation_deviation")
def decimation_deviation(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                         min_fraction: float = 0.25) -> Estimate:
    """Per run: the largest |ID(n)/ID(N) − 1| over the decimation scales whose blocks keep at least
    ``min_fraction`` of the N points (from the ``id_scale`` table); mean and t-interval over runs.
    Small values mean a plateau: the ID is well defined at the scale of the sample."""
    df = _where(tables.get("id_scale", study), where)
    vals = {}
    for run, d in df.groupby("run", sort=False):
        full = d.loc[d["block_size"].idxmax()]
        keep = d[d["block_size"] >= min_fraction * full["block_size"]]
        vals[run] = float((keep["id_mean"] / full["id_mean"] - 1).abs().max())
    return _summary(pd.Series(vals, dtype=float), "runs")


@register_statistic("subsample_hunchback")
def subsample_hunchback(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                        table: str = "transformer_id", estimator: str = "twonn") -> Estimate:
    """:func:`hunch` of one pretrained model's ID profile: the median and 2.5–97.5% range over the
    subsample replicates (``replicate`` ≥ 1 in the table; replicate 0, all examples, is given in the note
    — TwoNN on fewer points is not centred on the full-sample value, so all three numbers come from the
    same replicates). For a single model there are no seeds: the interval is over examples."""
    df = _where(tables.get(table, study), where)
    col = f"{estimator}_id"
    vals = {rep: hunch(d.sort_values("layer_index"), col) for rep, d in df.groupby("replicate")}
    full = vals.pop(0, math.nan)
    reps = np.array([v for v in vals.values() if math.isfinite(v)])
    if reps.size < 2:
        return Estimate(full, math.nan, math.nan, int(reps.size), note="too few subsample replicates")
    lo, med, hi = np.percentile(reps, [2.5, 50, 97.5])
    return Estimate(float(med), float(lo), float(hi), int(reps.size),
                    note=f"median and 2.5–97.5% range over {reps.size} random subsamples of the examples; "
                         f"all examples: {full:.3f}")


@register_statistic("nc1_ratio")
def nc1_ratio(tables: Tables, *, study: str | None = None, where: Mapping | None = None) -> Estimate:
    """Per run: NC1 at the final checkpoint over NC1 at the first (``spectra`` table; Papyan et al. 2020);
    mean and t-interval over runs. Below 1: within-class variability shrank relative to between-class."""
    df = _where(tables.get("spectra", study), where)
    vals = {run: float(d.sort_values("epoch")["nc1"].iloc[-1] / d.sort_values("epoch")["nc1"].iloc[0])
            for run, d in df.groupby("run", sort=False)}
    return _summary(pd.Series(vals, dtype=float), "runs")


# ------------------------------------------------------------------------------------- Nam et al. 2024
# These read the ``spectra`` table of ``spectrum_through_training`` (one row per run and checkpoint:
# ``dominant``, ``rule``, ``regime``, ``accuracy`` on the analysed training points, ``test_acc``, NC1–NC4,
# ``kernel_class_distance``, ``richness``), or a table of the same shape (``table=``, e.g. the regression
# step's ``regression``). ``study`` may be a list: the tables of those studies are stacked (a sweep whose
# settings live in separate studies, such as learning rates), with a ``study`` column added.
def _stacked(tables: Tables, study: Any, where: Mapping | None, table: str = "spectra") -> pd.DataFrame:
    names = list(study) if isinstance(study, (list, tuple)) else [study]
    frames = []
    for s in names:
        df = tables.get(table, s)
        df["study"] = s if s is not None else ""
        frames.append(df)
    df = _where(pd.concat(frames, ignore_index=True), where)
    if df.empty:
        raise InputError(f"no rows in {table!r} of {names} for where={dict(where or {})}")
    df["unit"] = df["study"].astype(str) + ":" + df["run"].astype(str)
    return df


def _unit_at(df: pd.DataFrame, epoch: Any) -> pd.DataFrame:
    """One row per run at ``epoch`` (``"last"``: each run's final checkpoint; an int: that epoch)."""
    if epoch == "last":
        return df.sort_values("epoch").groupby("unit", sort=False).tail(1).set_index("unit")
    d = df[df["epoch"] == int(epoch)]
    if d.empty:
        raise InputError(f"no checkpoint at epoch {epoch!r} (epochs: {sorted(df['epoch'].unique())})")
    return d.drop_duplicates("unit").set_index("unit")


def proportion_interval(k: int, n: int, *, level: float = 0.95) -> tuple[float, float, float, int]:
    """Share k/n with its Clopper–Pearson (exact binomial) interval: ``(k/n, low, high, n)``; NaN for n = 0."""
    from scipy import stats  # lazy: scipy.stats takes seconds to import; only intervals need it

    if n == 0:
        return math.nan, math.nan, math.nan, 0
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return k / n, lo, hi, n


def _expected_count(d: pd.DataFrame, expected: int | None) -> pd.Series:
    if expected is not None:
        return pd.Series(int(expected), index=d.index)
    if "n_classes" not in d.columns:
        raise InputError("this table has no n_classes column; give expected= (the count MF means)")
    centred = d["centered"].astype(bool) if "centered" in d.columns else False
    return d["n_classes"].astype(int) - centred.astype(int)


def _gap_mf(d: pd.DataFrame, expected: int | None) -> pd.Series:
    """The regime call's spectral part alone (:func:`deepgeom.functional.spectrum.regime` without the
    accuracy condition): a gap- or rank-decided count within max(1, round(0.2 C)) of C."""
    exp = _expected_count(d, expected)
    tol = np.maximum(1, np.round(0.2 * exp)).astype(int)
    return d["rule"].isin(["gap", "rank"]) & ((d["dominant"] - exp).abs() <= tol)


_FINGERPRINT = ("top_eigenvalue", "effective_dim", "gap_decades", "dominant", "n_samples")


def _distinct_networks(d: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop rows whose spectrum is bit-identical to another row's: the same untrained network analysed in
    two studies (same seed and architecture, e.g. a cross-entropy and an MSE study at epoch 0, or true and
    shuffled labels on the same inputs) is one unit, not two. Only when the table has the fingerprint
    columns ``top_eigenvalue, effective_dim, gap_decades, dominant, n_samples``."""
    if not all(c in d.columns for c in _FINGERPRINT):
        return d, 0
    keep = d.drop_duplicates(subset=list(_FINGERPRINT))
    return keep, int(len(d) - len(keep))


@register_statistic("regime_share")
def regime_share(tables: Tables, *, study: Any = None, where: Mapping | None = None, epoch: Any = "last",
                 table: str = "spectra", spectral_only: bool = False, expected: int | None = None,
                 min_train_acc: float | None = None) -> Estimate:
    """Share of runs whose regime at ``epoch`` (default each run's final checkpoint) is ``MF``, with its
    Clopper–Pearson 95% interval over runs (runs are the independent units; the same network appearing in
    two studies counts once, see :func:`_distinct_networks`).

    ``spectral_only`` judges the spectral part of the call alone — a gap- or rank-decided dominant count
    within max(1, round(0.2 C)) of C — without the accuracy condition, to ask whether the gap rule by
    itself would be fooled (e.g. by untrained nets at epoch 0). ``min_train_acc`` blocks the verdict when
    any run's ``accuracy`` (on the labels it was trained on) is below it at that epoch.
    """
    d = _unit_at(_stacked(tables, study, where, table), epoch)
    d, n_dup = _distinct_networks(d)
    mf = _gap_mf(d, expected) if spectral_only else (d["regime"] == "MF")
    p, lo, hi, n = proportion_interval(int(mf.sum()), int(len(mf)))
    acc_col = "accuracy" if "accuracy" in d.columns else "r2"
    blocked = ""
    if min_train_acc is not None and (d[acc_col] < min_train_acc).any():
        blocked = f"{int((d[acc_col] < min_train_acc).sum())} runs below {acc_col} {min_train_acc:g}"
    counts = ", ".join(str(int(c)) for c in d["dominant"])
    note = (f"{int(mf.sum())} of {n} runs MF ({'spectral part only' if spectral_only else 'full call'}); "
            f"dominant counts {counts}; {acc_col} {d[acc_col].min():.3f}–{d[acc_col].max():.3f}")
    if "test_acc" in d.columns and d["test_acc"].notna().any():
        note += f"; test acc {d['test_acc'].min():.3f}–{d['test_acc'].max():.3f}"
    if n_dup:
        note += f"; {n_dup} rows with a spectrum identical to another run's dropped (the same network twice)"
    return Estimate(p, lo, hi, n, note=note + "; Clopper–Pearson interval over runs", blocked=blocked)


@register_statistic("count_deviation")
def count_deviation(tables: Tables, *, study: Any = None, where: Mapping | None = None, epoch: Any = "last",
                    table: str = "spectra", expected: int | None = None,
                    min_train_acc: float | None = None) -> Estimate:
    """Per run: |dominant count − C_exp| at ``epoch``, C_exp = C for an uncentred kernel (C − 1 centred;
    or ``expected``); mean and t-interval over runs. 0: the count sits exactly at the number of classes.
    ``min_train_acc`` blocks the verdict when any run's ``accuracy`` is below it at that epoch."""
    d = _unit_at(_stacked(tables, study, where, table), epoch)
    dev = (d["dominant"] - _expected_count(d, expected)).abs().astype(float)
    note = ("counts " + ", ".join(f"{int(c)}" for c in d["dominant"]) + "; rules " + ", ".join(sorted(set(d["rule"])))
            + "; regimes " + ", ".join(str(r) for r in d["regime"]))
    for col in ("accuracy", "test_acc"):
        if col in d.columns and d[col].notna().any():
            note += f"; {col} {d[col].min():.3f}–{d[col].max():.3f}"
    blocked = ""
    if min_train_acc is not None and (d["accuracy"] < min_train_acc).any():
        blocked = f"{int((d['accuracy'] < min_train_acc).sum())} runs below training accuracy {min_train_acc:g}"
    return _summary(dev, "runs", note, blocked)


@register_statistic("mf_entry_epoch")
def mf_entry_epoch(tables: Tables, *, study: Any = None, where: Mapping | None = None,
                   table: str = "spectra") -> Estimate:
    """Per run: the first checkpoint epoch from which the regime is ``MF`` at every later checkpoint, as
    a fraction of the run's final epoch (0: MF from the start, 1: only at the end). A run not MF at its
    final checkpoint is censored at 1 — the latest possible entry, so it can only push the mean up — and
    counted in the note. Mean and t-interval over runs."""
    df = _stacked(tables, study, where, table)
    vals, never, entries = {}, 0, []
    for unit, d in df.groupby("unit", sort=False):
        d = d.sort_values("epoch")
        mf = (d["regime"] == "MF").to_numpy()
        ep = d["epoch"].to_numpy()
        if not mf[-1]:
            vals[unit], never = 1.0, never + 1
            entries.append("never")
            continue
        j = len(mf) - 1
        while j > 0 and mf[j - 1]:
            j -= 1
        vals[unit] = float(ep[j]) / float(ep[-1]) if ep[-1] > 0 else 0.0
        entries.append(f"{ep[j]:g}")
    s = pd.Series(vals, dtype=float)
    return _summary(s, "runs", f"entry epochs {', '.join(entries)}; {never} runs not MF at the end "
                               f"(censored at 1)")


@register_statistic("accuracy_gap_by_regime")
def accuracy_gap_by_regime(tables: Tables, *, study: Any = None, where: Mapping | None = None,
                           accuracy: str = "test_acc", table: str = "spectra") -> Estimate:
    """Per seed, over the runs of a sweep (e.g. one study per learning rate): mean final ``accuracy`` of
    the runs whose final regime is MF minus that of the runs called EF; mean and t-interval over seeds.
    Seeds without both an MF and an EF run are left out (the note says how many); blocked if fewer than
    two seeds remain. The note also gives each seed's best run and its regime."""
    d = _unit_at(_stacked(tables, study, where, table), "last")
    diffs, best = {}, []
    for seed, g in d.groupby("seed"):
        best_row = g.loc[g[accuracy].idxmax()]
        best.append(f"seed {seed}: best {accuracy} {best_row[accuracy]:.3f} in {best_row['study']} ({best_row['regime']})")
        mf, ef = g[g["regime"] == "MF"][accuracy], g[g["regime"] != "MF"][accuracy]
        if len(mf) and len(ef):
            diffs[seed] = float(mf.mean() - ef.mean())
    s = pd.Series(diffs, dtype=float)
    blocked = "" if len(s) >= 2 else f"only {len(s)} seeds have both MF and EF runs"
    return _summary(s, "seeds (MF minus EF accuracy)", "; ".join(best), blocked)


@register_statistic("column_ratio")
def column_ratio(tables: Tables, *, study: Any = None, where: Mapping | None = None, column: str = "nc1",
                 table: str = "spectra", min_train_acc: float | None = None) -> Estimate:
    """Per run: ``column`` at the final checkpoint over its value at the first (e.g. NC1, or the kernel's
    distance to the block-constant class kernel); mean and t-interval over runs. ``min_train_acc`` blocks
    the verdict unless every run reached that training accuracy at the end (the terminal phase)."""
    df = _stacked(tables, study, where, table)
    first, last = _unit_at(df[df["epoch"] == df.groupby("unit")["epoch"].transform("min")], "last"), _unit_at(df, "last")
    r = (last[column] / first[column].reindex(last.index)).astype(float)
    blocked = ""
    if min_train_acc is not None and (last["accuracy"] < min_train_acc).any():
        blocked = (f"terminal phase not reached: final training accuracy {last['accuracy'].min():.3f} "
                   f"< {min_train_acc:g} in {int((last['accuracy'] < min_train_acc).sum())} runs")
    note = f"{column}: first {first[column].mean():.3g}, final {last[column].mean():.3g} (means)"
    return _summary(r, "runs", note, blocked)


@register_statistic("final_value")
def final_value(tables: Tables, *, study: Any = None, where: Mapping | None = None, column: str = "pi_targets_top_k",
                table: str = "spectra", epoch: Any = "last") -> Estimate:
    """Per run: ``column`` at ``epoch`` (default the final checkpoint); mean and t-interval over runs."""
    d = _unit_at(_stacked(tables, study, where, table), epoch)
    return _summary(d[column].astype(float), "runs", f"{column} per run: " + ", ".join(f"{v:.3g}" for v in d[column]))


@register_statistic("paired_contrast")
def paired_contrast(tables: Tables, *, a: Mapping, b: Mapping, column: str = "richness", table: str = "spectra",
                    epoch: Any = "last") -> Estimate:
    """Per seed: ``column`` at ``epoch`` of setting ``a`` minus that of setting ``b`` (each ``{study,
    where}``; one run per seed each); mean and paired t-interval over seeds."""
    va = _unit_at(_stacked(tables, a.get("study"), a.get("where"), table), epoch).groupby("seed")[column].mean()
    vb = _unit_at(_stacked(tables, b.get("study"), b.get("where"), table), epoch).groupby("seed")[column].mean()
    diff = (va - vb.reindex(va.index)).dropna()
    return _summary(diff, "seeds (a minus b)", f"{column}: a {va.mean():.3g}, b {vb.mean():.3g} (means over seeds)")
