"""Statistics for the claims of Nguyen, Raghu & Kornblith (ICLR 2021), read from a study's tables.

Every statistic takes the aggregated tables of the ``cka_matrix``, ``cka_across`` and ``predictions``
analyses and returns an :class:`~deepgeom.claims.verdict.Estimate` over independent units: runs
(separately trained networks), lines of the width × depth grid, or pairs of runs. The block of a run is
what :func:`deepgeom.analysis.blocks.find_blocks` found when the study ran (table ``cka_pc1``, column
``in_block``; rule and thresholds in ``cka_blocks`` and the study config).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.blocks import find_blocks
from ..errors import InputError
from .statistics import Tables, _summary, _where, proportion_interval, register_statistic
from .verdict import Estimate

__all__ = ["block_table"]

_PSEUDO = ("input", "output")


_RULES = {"block": "in_block", "cka_only": "in_cka_run"}


def block_table(tables: Tables, study: Any, where: Mapping | None = None, rule: str = "block") -> pd.DataFrame:
    """One row per hidden layer of every run at its analysed epoch: ``run, width, depth, seed,
    layer_index, layer, pc1_fraction, in_block`` (from the ``cka_pc1`` table; ``study`` may be a list).
    ``rule="cka_only"`` reads ``in_block`` from the runs of high CKA alone (the paper's by-eye reading,
    column ``in_cka_run``) instead of the two-condition block."""
    if rule not in _RULES:
        raise InputError(f"rule must be one of {list(_RULES)}; got {rule!r}")
    studies = study if isinstance(study, (list, tuple)) else [study]
    parts = []
    for s in studies:
        d = _where(tables.get("cka_pc1", s), where)
        parts.append(d.assign(study=s))
    d = pd.concat(parts, ignore_index=True)
    if d.empty:
        raise InputError(f"no cka_pc1 rows for study={study!r} where={dict(where or {})}")
    if "layer_index" not in d.columns:
        d["layer_index"] = d.groupby("run").cumcount()
    if rule != "block":
        d["in_block"] = d[_RULES[rule]]
    return d[~d["layer"].isin(_PSEUDO)].sort_values(["run", "layer_index"])


def _coverage(d: pd.DataFrame) -> pd.Series:
    """Per run: the share of its hidden layers inside a block."""
    return d.groupby("run")["in_block"].mean().astype(float)


def _config(d: pd.DataFrame) -> pd.DataFrame:
    return d.groupby("run")[["study", "width", "depth", "seed"]].first()


def _runs_of(cfg: pd.DataFrame, configs: list[Mapping] | None, statistic: str) -> pd.DataFrame:
    """The rows of ``cfg`` (one per run) whose columns match any of ``configs`` (all rows when None)."""
    if configs:
        keep = np.zeros(len(cfg), dtype=bool)
        for c in configs:
            keep |= np.all([cfg[k].to_numpy() == v for k, v in c.items()], axis=0)
        cfg = cfg[keep]
    if cfg.empty:
        raise InputError(f"{statistic}: no run matches configs={configs}")
    return cfg


@register_statistic("block_share")
def block_share(tables: Tables, *, study: Any, where: Mapping | None = None,
                configs: list[Mapping] | None = None, rule: str = "block") -> Estimate:
    """Share of runs with at least one block, Clopper–Pearson interval over runs. ``configs`` (a list of
    ``{width, depth}``) restricts to those grid cells (e.g. the small or the large models)."""
    d = block_table(tables, study, where, rule)
    cfg = _runs_of(_config(d), configs, "block_share")
    has = d[d["run"].isin(cfg.index)].groupby("run")["in_block"].any()
    p, lo, hi, n = proportion_interval(int(has.sum()), int(len(has)))
    per = (cfg.assign(block=has).groupby(["width", "depth"])["block"].agg(["sum", "count"]))
    note = "; ".join(f"w{w} d{dp}: {int(r['sum'])}/{int(r['count'])}" for (w, dp), r in per.iterrows())
    return Estimate(p, lo, hi, n, note=f"runs with a block — {note}; Clopper–Pearson interval over runs")


@register_statistic("block_coverage")
def block_coverage(tables: Tables, *, study: Any, where: Mapping | None = None,
                   configs: list[Mapping] | None = None, rule: str = "block") -> Estimate:
    """Per run: the share of its hidden layers inside a block; mean and t-interval over the runs of
    ``configs`` (a list of ``{width, depth}``; all runs when None)."""
    d = block_table(tables, study, where, rule)
    cfg = _runs_of(_config(d).assign(coverage=_coverage(d)), configs, "block_coverage")
    note = "coverage per run: " + ", ".join(f"w{r.width} d{r.depth} s{r.seed}: {r.coverage:.2f}"
                                           for r in cfg.itertuples())
    return _summary(cfg["coverage"], "runs", note)


@register_statistic("block_coverage_slope")
def block_coverage_slope(tables: Tables, *, study: Any, axis: str, where: Mapping | None = None,
                         rule: str = "block") -> Estimate:
    """Growth of the block with ``axis`` (``width`` or ``depth``): for every line of the grid along
    ``axis`` (one seed, one value of the other axis — distinct networks), the least-squares slope of block
    coverage (share of hidden layers inside a block) on log2 of ``axis``; mean and t-interval over lines."""
    if axis not in ("width", "depth"):
        raise InputError(f"axis must be 'width' or 'depth'; got {axis!r}")
    other = "depth" if axis == "width" else "width"
    d = block_table(tables, study, where, rule)
    cfg = _config(d).assign(coverage=_coverage(d))
    slopes = []
    for _, line in cfg.groupby(["seed", other]):
        if line[axis].nunique() < 2:
            continue
        x = np.log2(line[axis].to_numpy(dtype=float))
        slopes.append(float(np.polyfit(x, line["coverage"].to_numpy(), 1)[0]))
    if not slopes:
        raise InputError(f"block_coverage_slope: no line of the grid has two values of {axis}")
    means = cfg.groupby([axis, other])["coverage"].mean()
    note = "mean coverage " + ", ".join(f"{axis[0]}{a} {other[0]}{b}: {v:.2f}" for (a, b), v in means.items())
    return _summary(pd.Series(slopes), f"lines of the grid (seed × {other}; slope per doubling of {axis})", note)


@register_statistic("block_coverage_contrast")
def block_coverage_contrast(tables: Tables, *, a: Mapping, b: Mapping, rule: str = "block") -> Estimate:
    """Block coverage of setting ``a`` minus that of setting ``b`` (each ``{study, where}``), matched by
    architecture and seed; mean and paired t-interval over the matched pairs."""
    ca = _config(da := block_table(tables, a["study"], a.get("where"), rule)).assign(coverage=_coverage(da))
    cb = _config(db := block_table(tables, b["study"], b.get("where"), rule)).assign(coverage=_coverage(db))
    key = ["width", "depth", "seed"]
    m = ca.merge(cb, on=key, suffixes=("_a", "_b"))
    if m.empty:
        raise InputError("block_coverage_contrast: no architecture and seed in both settings")
    diff = m["coverage_a"] - m["coverage_b"]
    return _summary(diff, "matched runs (a minus b)",
                    f"coverage a {m['coverage_a'].mean():.2f}, b {m['coverage_b'].mean():.2f} (means)")


def _block_runs(d: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(run, g) for run, g in d.groupby("run", sort=False) if g["in_block"].any()]


def _blocked(units: int, what: str) -> str:
    return "" if units >= 2 else f"only {units} run(s) with a block: {what} needs at least 2"


@register_statistic("pc1_block_contrast")
def pc1_block_contrast(tables: Tables, *, study: Any, where: Mapping | None = None) -> Estimate:
    """Per run with a block: mean first-PC variance fraction of its block layers minus that of its other
    hidden layers; mean and t-interval over those runs."""
    d = block_table(tables, study, where)
    vals, ins, outs = [], [], []
    for _, g in _block_runs(d):
        i, o = g.loc[g["in_block"], "pc1_fraction"].mean(), g.loc[~g["in_block"], "pc1_fraction"].mean()
        if math.isfinite(o):
            vals.append(i - o)
            ins.append(i)
            outs.append(o)
    note = (f"PC1 fraction inside {np.mean(ins):.2f}, outside {np.mean(outs):.2f} (means over runs)" if vals
            else "no run with both block and non-block hidden layers")
    return _summary(pd.Series(vals, dtype=float), "runs with a block", note,
                    blocked=_blocked(len(vals), "the inside/outside contrast"))


def _pairs(tables: Tables, study: Any, table: str = "cka_pairs") -> pd.DataFrame:
    studies = study if isinstance(study, (list, tuple)) else [study]
    return pd.concat([tables.get(table, s) for s in studies], ignore_index=True)


@register_statistic("block_vanish_share")
def block_vanish_share(tables: Tables, *, study: Any, where: Mapping | None = None) -> Estimate:
    """Share of blocks that vanish once each layer's first PC is projected out: in the PC1-removed
    heatmap, no run of ≥ 3 of the block's layers keeps pairwise CKA ≥ the block threshold (the CKA part
    of the detector; the PC1 part would be circular). Clopper–Pearson interval over blocks."""
    d = block_table(tables, study, where)
    blocks = pd.concat([tables.get("cka_blocks", s) for s in (study if isinstance(study, (list, tuple))
                                                              else [study])], ignore_index=True)
    pairs = _pairs(tables, study)
    removed = pairs[pairs["pc1_removed"].astype(bool)]
    runs = set(d["run"])
    gone, kept, inside = 0, 0, []
    for _, b in blocks[blocks["run"].isin(runs)].iterrows():
        r = removed[removed["run"] == b["run"]]
        sel = r[(r["i"] >= b["start"]) & (r["i"] < b["stop"]) & (r["j"] >= b["start"]) & (r["j"] < b["stop"])]
        M = sel.pivot(index="i", columns="j", values="cka").to_numpy()
        inside.append(float(M[~np.eye(len(M), dtype=bool)].mean()))
        if find_blocks(M, threshold=float(b["threshold"]), min_size=3, pc1_fraction=False, exclude=()):
            kept += 1
        else:
            gone += 1
    p, lo, hi, n = proportion_interval(gone, gone + kept)
    note = (f"{gone} of {n} blocks vanish; mean pairwise CKA inside the block after removal "
            f"{np.mean(inside):.2f}" if n else "no block to test")
    return Estimate(p, lo, hi, n, note=note + "; Clopper–Pearson interval over blocks",
                    blocked=_blocked(n, "the vanishing share"))


@register_statistic("pc1_projection_block_cka")
def pc1_projection_block_cka(tables: Tables, *, study: Any, where: Mapping | None = None) -> Estimate:
    """Per run with a block: mean CKA between the first-PC projections of every pair of its block layers
    (table ``cka_pc1_projection``); mean and t-interval over those runs."""
    d = block_table(tables, study, where)
    proj = _pairs(tables, study, "cka_pc1_projection")
    vals = []
    for run, g in _block_runs(d):
        names = set(g.loc[g["in_block"], "layer"])
        p = proj[(proj["run"] == run) & proj["layer_a"].isin(names) & proj["layer_b"].isin(names)
                 & (proj["layer_a"] != proj["layer_b"])]
        if len(p):
            vals.append(float(p["cka"].mean()))
    return _summary(pd.Series(vals, dtype=float), "runs with a block", "",
                    blocked=_blocked(len(vals), "the PC1-projection CKA"))


def _diagonal_contrast(tables: Tables, study: Any, where: Mapping | None, table: str,
                       best: bool) -> tuple[list[float], list[float], list[float]]:
    """Per pair of runs in ``table`` (``cka_across``): CKA of each hidden layer of A with the same layer
    of B (``best=False``: seeds of one architecture) or with its best match in B (``best=True``: two
    architectures), averaged outside and inside A's or B's block."""
    d = block_table(tables, study, where)
    in_block = {(r, layer): bool(v) for r, layer, v in zip(d["run"], d["layer"], d["in_block"], strict=True)}
    across = _pairs(tables, study, table)
    across = across[~across["layer_a"].isin(_PSEUDO) & ~across["layer_b"].isin(_PSEUDO)]
    diffs, outs, ins = [], [], []
    for (ra, rb), g in across.groupby(["run_a", "run_b"]):
        if ra not in set(d["run"]) or rb not in set(d["run"]):
            continue
        if best:
            per = g.groupby("layer_a")["cka"].max()
            blk = pd.Series({la: in_block.get((ra, la), False) for la in per.index})
        else:
            same = g[g["layer_a"] == g["layer_b"]].set_index("layer_a")["cka"]
            per = same
            blk = pd.Series({la: in_block.get((ra, la), False) or in_block.get((rb, la), False) for la in per.index})
        if blk.any() and (~blk).any():
            o, i = float(per[~blk].mean()), float(per[blk].mean())
            diffs.append(o - i)
            outs.append(o)
            ins.append(i)
    return diffs, outs, ins


@register_statistic("seed_block_contrast")
def seed_block_contrast(tables: Tables, *, study: Any, where: Mapping | None = None) -> Estimate:
    """Per pair of seeds of one architecture (``cka_across`` with ``pairs: seeds``) where either run has a
    block: mean CKA of each hidden layer with the same layer of the other seed, outside the blocks minus
    inside; mean and t-interval over pairs (positive: the block layers disagree more across seeds)."""
    diffs, outs, ins = _diagonal_contrast(tables, study, where, "cka_across", best=False)
    note = (f"same-layer CKA across seeds outside blocks {np.mean(outs):.2f}, inside {np.mean(ins):.2f}"
            if diffs else "no seed pair with block and non-block layers")
    return _summary(pd.Series(diffs, dtype=float), "seed pairs", note,
                    blocked="" if len(diffs) >= 2 else f"only {len(diffs)} seed pair(s) with a block")


@register_statistic("architecture_block_contrast")
def architecture_block_contrast(tables: Tables, *, study: Any, where: Mapping | None = None) -> Estimate:
    """Per pair of models of two architectures (``cka_across`` with ``pairs: architectures``): each hidden
    layer of A's best-match CKA in B, mean outside A's block minus inside; mean and t-interval over pairs."""
    diffs, outs, ins = _diagonal_contrast(tables, study, where, "cka_across", best=True)
    note = (f"best-match CKA in the other architecture outside blocks {np.mean(outs):.2f}, inside "
            f"{np.mean(ins):.2f}" if diffs else "no pair whose model A has block and non-block layers")
    return _summary(pd.Series(diffs, dtype=float), "model pairs", note,
                    blocked="" if len(diffs) >= 2 else f"only {len(diffs)} pair(s) with a block in model A")


@register_statistic("architecture_test_p")
def architecture_test_p(tables: Tables, *, study: Any, measure: str = "per_example") -> Estimate:
    """The permutation p-value of the architecture-vs-seed test (:func:`deepgeom.analysis.predictions.
    architecture_test`, ``measure`` per example or per class). An exact test has no sampling error, so
    its interval is the point; the note gives the effect (between- minus within-architecture distance,
    and their ratio) and the test's resolution (the smallest p these seed counts allow)."""
    at = tables.get("architecture_test", study)
    at = at[at["measure"] == measure] if "measure" in at.columns else at
    if at.empty:
        raise InputError(f"no architecture_test row with measure {measure!r}")
    r = at.iloc[0]
    p = float(r["p_value"])
    if bool(r["exact"]):
        lo = hi = p
    else:  # Monte Carlo p-value: Clopper–Pearson on the permutation count
        k, n = round(p * (1 + r["n_permutations"])) - 1, int(r["n_permutations"])
        _, lo, hi, _ = proportion_interval(max(k, 0), n)
    ratio = r["between"] / r["within"] if r["within"] > 0 else math.inf
    minp = r.get("min_p_value", math.nan)
    note = (f"{measure}: between architectures {r['between']:.4f}, within (seeds) {r['within']:.4f}, "
            f"ratio {ratio:.2f}; {r['architectures']} (seeds {r.get('seeds', '?')}); "
            f"{'exact' if r['exact'] else 'random'} test over {int(r['n_permutations'])} relabelings, "
            f"smallest attainable p {minp:.4f}")
    if measure == "per_class":
        note += (f"; classes with Welch p < 0.05: {int(r['n_significant'])} (chance {r['expected_significant']:.1f}, "
                 f"binomial p {r['binom_p']:.3g})")
    return Estimate(p, lo, hi, int(sum(int(x) for x in str(r.get("seeds", "0")).split(" | ") if x.isdigit())),
                    note=note)
