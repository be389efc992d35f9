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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, UnknownNameError
from .verdict import Estimate, mean_interval, pearson_interval

__all__ = ["STATISTICS", "Tables", "register_statistic"]

STATISTICS: dict[str, Callable[..., Estimate]] = {}
_PSEUDO = ("input", "output")


def register_statistic(name: str) -> Callable:
    """Decorator: register ``fn(tables, **params) -> Estimate`` under ``name``."""

    def deco(fn: Callable[..., Estimate]) -> Callable[..., Estimate]:
        STATISTICS[name] = fn
        return fn

    return deco


class Tables:
    """The aggregated tables of one or more studies: ``tables.get("id_profiles", study="profiles")``.

    ``studies`` maps a study name to its output directory (which holds ``tables/<name>.parquet``); with a
    single study, ``study`` may be omitted.
    """

    def __init__(self, studies: Mapping[str, str | Path]):
        self.studies = {k: Path(v) for k, v in studies.items()}
        self._cache: dict[tuple[str, str], pd.DataFrame] = {}

    def get(self, name: str, study: str | None = None) -> pd.DataFrame:
        if study is None:
            if len(self.studies) != 1:
                raise InputError(f"table {name!r}: name the study (one of {sorted(self.studies)})")
            study = next(iter(self.studies))
        if study not in self.studies:
            raise UnknownNameError("study", study, sorted(self.studies))
        key = (study, name)
        if key not in self._cache:
            path = self.studies[study] / "tables" / f"{name}.parquet"
            if not path.is_file():
                raise InputError(f"study {study!r} has no table {name!r} (is the analysis that makes it in the config?)")
            self._cache[key] = pd.read_parquet(path)
        return self._cache[key].copy()


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
                            accuracy: str = "test_acc", min_models: int = 10) -> Estimate:
    """Pearson r between the last-hidden-layer TwoNN ID of trained networks (final epoch) and their
    final ``accuracy``, one point per architecture (seeds averaged), with its Fisher-z interval.
    Blocked when fewer than ``min_models`` architectures are present."""
    df = _profiles(tables, study, where, "last")
    lh = _per_run(df, lambda d: _last_hidden_value(d, "twonn_id")).rename("id")
    hist = _where(tables.get("history", study), where)
    acc = hist.sort_values("epoch").groupby("run").tail(1).set_index("run")[accuracy].rename("acc")
    arch_cols = ["model", "width", "depth"]
    runs = df.drop_duplicates("run").set_index("run")[arch_cols]
    m = runs.join(lh).join(acc).dropna()
    per_arch = m.groupby(arch_cols, sort=False)[["id", "acc"]].mean()
    r, lo, hi, n = pearson_interval(per_arch["id"], per_arch["acc"])
    spread = f"{accuracy} {per_arch['acc'].min():.3f}–{per_arch['acc'].max():.3f}, ID {per_arch['id'].min():.1f}–{per_arch['id'].max():.1f}"
    blocked = f"only {n} architectures (criterion needs {min_models})" if n < min_models else ""
    return Estimate(r, lo, hi, n, note=f"Pearson r over {n} architectures ({len(m)} trained models); {spread}",
                    blocked=blocked)


@register_statistic("shuffle_id_slope")
def shuffle_id_slope(tables: Tables, *, study: str | None = None, where: Mapping | None = None,
                     min_train_acc: float = 0.95) -> Estimate:
    """Per seed: the least-squares slope of the last-hidden-layer TwoNN ID (final epoch, on the training
    images) against the shuffled fraction of labels; mean and t-interval over seeds. Blocked when any
    run's final training accuracy (on the labels it was trained on) is below ``min_train_acc``: a net
    that did not fit its labels says nothing about memorisation."""
    df = _profiles(tables, study, where, "last")
    lh = _per_run(df, lambda d: _last_hidden_value(d, "twonn_id")).rename("id")
    hist = _where(tables.get("history", study), where)
    tr = hist.sort_values("epoch").groupby("run").tail(1).set_index("run")["train_acc"].rename("train_acc")
    runs = df.drop_duplicates("run").set_index("run")[["seed", "shuffle_fraction"]].join(lh).join(tr)
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
