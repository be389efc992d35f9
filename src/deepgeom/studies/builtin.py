"""The built-in analyses of a study, each a thin adapter from a trained run to a library function.

=============================  =======  ==========================================================
name                           scope    what (tables)
=============================  =======  ==========================================================
``id_profile``                 run      TwoNN / PC-ID of every analysis layer, untrained and trained
                                        (Ansuini et al. 2019) → ``id_profiles``
``id_during_training``         run      ID of the last hidden layer at every checkpoint, beside the
                                        accuracy → ``id_training``
``id_scale``                   run      decimation curve (TwoNN on N, N/2, N/4, … points) of one layer
                                        → ``id_scale``
``cka_matrix``                 run      minibatch CKA between all layer pairs of the trained network,
                                        block structure, first-PC variance fractions (Nguyen et al.
                                        2021) → ``cka_pairs``, ``cka_blocks``, ``cka_pc1``
``cka_across``                 study    CKA between the layers of every pair of trained models on the
                                        same test data, and each layer's best match → ``cka_across``,
                                        ``cka_best_match``
``spectrum_through_training``  run      feature-kernel spectrum, dominant count, MF/EF, Π, NC1–NC4 per
                                        checkpoint (Nam et al. 2024; Papyan et al. 2020) → ``spectra``,
                                        ``spectrum_eigenvalues``, ``spectrum_alignment``
``predictions``                study    per-example agreement, per-class accuracy and the
                                        architecture-vs-seed test of trained models (Nguyen et al.
                                        2021 §6) → ``prediction_pairs``, ``per_class_accuracy``,
                                        ``architecture_test``
=============================  =======  ==========================================================

Subsets of examples are drawn with a seeded generator (``seed`` + the run's seed), the same for every
checkpoint of a run, so a change across epochs is never a change of sample.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.id_profile import id_profile
from ..analysis.kernel_dynamics import spectra_through_training
from ..analysis.pc1 import pc1_cka, pc1_scores
from ..analysis.predictions import architecture_test, pairwise_comparisons, per_class_accuracy, predictions
from ..analysis.similarity import best_match, cka_matrix, cka_matrix_from_captures, find_blocks
from ..capture import capture
from ..errors import InputError
from ..functional.intrinsic_dim import twonn_scale
from .registry import register_analysis

__all__ = ["subsample_indices", "select_epochs"]

_SPLITS = ("train", "test")


def subsample_indices(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``n`` of ``n_total`` examples (all if ``n`` is None
    or at least ``n_total``)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    if n < 1:
        raise InputError(f"n_points must be >= 1 or null (all); got {n!r}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=int(n), replace=False))


def select_epochs(available: list[int], which: Any) -> list[int]:
    """``"all"`` → every checkpoint; ``"first_last"`` → untrained and final; ``"last"``; or a list."""
    available = sorted(available)
    if which == "all":
        return available
    if which == "first_last":
        return sorted({available[0], available[-1]})
    if which == "last":
        return [available[-1]]
    if isinstance(which, (list, tuple)):
        missing = [e for e in which if e not in available]
        if missing:
            raise InputError(f"epochs {missing} have no checkpoint; checkpoints exist at {available}")
        return sorted(set(which))
    raise InputError(f"epochs must be 'all', 'first_last', 'last' or a list of epochs; got {which!r}")


def _check_common(p: dict) -> None:
    """Value checks shared by the built-in analyses, run when the config is loaded."""
    if "split" in p and p["split"] not in _SPLITS:
        raise InputError(f"split must be 'train' or 'test'; got {p['split']!r}")
    n = p.get("n_points")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InputError(f"n_points must be an integer >= 1 or null (all); got {n!r}")
    e = p.get("epochs", "all")
    if not (e in ("all", "first_last", "last") or (isinstance(e, list) and all(isinstance(x, int) for x in e))):
        raise InputError(f"epochs must be 'all', 'first_last', 'last' or a list of epochs; got {e!r}")
    if p.get("layers", "penultimate") not in ("penultimate", "all"):
        raise InputError(f"layers must be 'penultimate' or 'all'; got {p['layers']!r}")
    if p.get("pairs", "all") not in _PAIRS:
        raise InputError(f"pairs must be one of {list(_PAIRS)}; got {p['pairs']!r}")
    for k in ("batch_size", "min_size", "keep_eigenvalues", "max_pairs", "n_permutations"):
        v = p.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{k} must be an integer >= 1; got {v!r}")
    for k in ("threshold", "alpha"):
        v = p.get(k, 0.5)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise InputError(f"{k} must be a number in (0, 1]; got {v!r}")


def _split(run, split: str, n_points: int | None, seed: int):
    if split not in _SPLITS:
        raise InputError(f"split must be 'train' or 'test'; got {split!r}")
    ds = run.dataset
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    if x.shape[0] == 0:
        raise InputError(f"dataset {ds.name!r} has no {split} examples")
    idx = subsample_indices(int(x.shape[0]), n_points, seed)
    return x[idx], (None if y is None else y[idx]), idx


def _condition(run_spec, epoch: int) -> str:
    if epoch == 0:
        return "untrained"
    return "shuffled labels" if run_spec.shuffle_fraction > 0 else "trained"


def _history_at(run, epochs: list[int]) -> pd.DataFrame:
    h = run.history
    keep = [c for c in ("epoch", "train_acc", "test_acc", "train_loss", "test_loss") if c in h.columns]
    return h[keep][h["epoch"].isin(epochs)]


# ------------------------------------------------------------------------------------- intrinsic dim
@register_analysis(
    "id_profile",
    check=_check_common,
    defaults={"n_points": 1000, "split": "train", "epochs": "first_last", "estimators": ["twonn", "pca"],
              "batch_size": 512, "seed": 0},
    table="id_profiles",
)
def id_profile_analysis(ctx) -> pd.DataFrame:
    """ID of every analysis layer (TwoNN and PC-ID by default) at the chosen checkpoints (Ansuini et al. 2019).

    Columns: those of :func:`deepgeom.analysis.id_profile.id_profile` plus ``epoch``, ``layer_index``,
    ``condition`` (``untrained`` at epoch 0, else ``trained`` or ``shuffled labels``), ``split``.
    """

    p = ctx.params
    x, _, _ = _split(ctx.run, p["split"], p["n_points"], ctx.seed)
    frames = []
    for epoch in select_epochs(ctx.run.epochs, p["epochs"]):
        model = ctx.run.model(epoch)
        df = id_profile(model, x, layers=list(model.analysis_layers), estimators=tuple(p["estimators"]),
                        batch_size=p["batch_size"], progress=False)
        df.insert(0, "layer_index", np.arange(len(df)))
        df.insert(0, "condition", _condition(ctx.run.spec, epoch))
        df.insert(0, "epoch", epoch)
        df["split"] = p["split"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@register_analysis(
    "id_during_training",
    check=_check_common,
    defaults={"n_points": 1000, "split": "train", "epochs": "all", "layers": "penultimate",
              "estimators": ["twonn", "pca"], "batch_size": 512, "seed": 0},
    table="id_training",
)
def id_during_training(ctx) -> pd.DataFrame:
    """ID of the last hidden layer (``layers="penultimate"``) or of every analysis layer (``"all"``) at
    each checkpoint, with that epoch's train/test accuracy (Ansuini et al. 2019 tracked ID over epochs)."""

    p = ctx.params
    if p["layers"] not in ("penultimate", "all"):
        raise InputError(f"id_during_training layers must be 'penultimate' or 'all'; got {p['layers']!r}")
    x, _, _ = _split(ctx.run, p["split"], p["n_points"], ctx.seed)
    epochs = select_epochs(ctx.run.epochs, p["epochs"])
    frames = []
    for epoch in epochs:
        model = ctx.run.model(epoch)
        layers = [model.penultimate] if p["layers"] == "penultimate" else list(model.analysis_layers)
        df = id_profile(model, x, layers=layers, estimators=tuple(p["estimators"]), batch_size=p["batch_size"],
                        progress=False)
        df.insert(0, "epoch", epoch)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    return out.merge(_history_at(ctx.run, epochs), on="epoch", how="left")


@register_analysis(
    "id_scale",
    check=_check_common,
    defaults={"n_points": 1000, "split": "train", "layer": "penultimate", "epoch": None, "min_points": 50,
              "batch_size": 512, "seed": 0},
    table="id_scale",
)
def id_scale(ctx) -> pd.DataFrame:
    """Decimation curve of one layer (default: the last hidden layer) of the trained network: TwoNN on
    disjoint random blocks of N, N/2, N/4, … points (:func:`deepgeom.functional.intrinsic_dim.twonn_scale`;
    Facco et al. 2017, Ansuini et al. 2019's scale check). A plateau over block sizes means the ID is
    well defined at the sample's scale. Columns: the scale table plus ``layer``, ``epoch``."""

    p = ctx.params
    x, _, _ = _split(ctx.run, p["split"], p["n_points"], ctx.seed)
    epoch = ctx.run.epochs[-1] if p["epoch"] is None else p["epoch"]
    model = ctx.run.model(epoch)
    layer = model.penultimate if p["layer"] == "penultimate" else p["layer"]
    acts = capture(model, x, layers=[layer], batch_size=p["batch_size"], progress=False)[layer]
    table = twonn_scale(acts, min_points=p["min_points"], seed=ctx.seed).table.copy()
    table.insert(0, "layer", layer)
    table.insert(0, "epoch", epoch)
    return table


# ------------------------------------------------------------------------------------- CKA
def _pairs_frame(res) -> pd.DataFrame:
    M = res.values
    i, j = np.meshgrid(np.arange(M.shape[0]), np.arange(M.shape[1]), indexing="ij")
    return pd.DataFrame({
        "i": i.ravel(), "j": j.ravel(),
        "layer_a": np.asarray(res.layers_a, dtype=object)[i.ravel()],
        "layer_b": np.asarray(res.layers_b, dtype=object)[j.ravel()],
        "depth_a": np.asarray(res.depth_a)[i.ravel()], "depth_b": np.asarray(res.depth_b)[j.ravel()],
        "cka": M.ravel(),
    })


@register_analysis(
    "cka_matrix",
    check=_check_common,
    defaults={"n_points": 2000, "split": "test", "batch_size": 256, "threshold": 0.9, "min_size": 3,
              "pc1_threshold": 0.5, "remove_pc1": True, "pc1_projection": False, "epoch": None, "seed": 0},
)
def cka_within(ctx) -> dict[str, pd.DataFrame]:
    """Minibatch CKA between every pair of analysis layers of one trained network (Nguyen et al. 2021),
    its block structure (:func:`deepgeom.analysis.blocks.find_blocks`: hidden layers, pairwise CKA ≥
    ``threshold``, and with ``remove_pc1`` every layer's first-PC fraction ≥ ``pc1_threshold``), each
    layer's first-PC variance fraction, the heatmap with each layer's first PC projected out
    (``remove_pc1``), and (``pc1_projection``) the CKA between the layers' first-PC projections."""

    p = ctx.params
    x, _, _ = _split(ctx.run, p["split"], p["n_points"], ctx.seed)
    model = ctx.run.model(p["epoch"])
    # one forward pass; the heatmaps, the PCs and their scores are then read from the captured rows
    # (in memory up to 2 GB, spilled to disk beyond) instead of running the network 2-17 more times
    with tempfile.TemporaryDirectory(prefix="deepgeom-cka-") as spill:
        cap = capture(model, x, None, batch_size=p["batch_size"], memory_budget="2GB", spill_dir=spill,
                      progress=False)
        return _cka_tables(ctx, cap, p)


def _cka_tables(ctx, cap, p: dict) -> dict[str, pd.DataFrame]:
    res = cka_matrix_from_captures(cap, batch_size=p["batch_size"], remove_pc1=p["remove_pc1"])
    frames = []
    if p["remove_pc1"]:
        plain = cka_matrix_from_captures(cap, batch_size=p["batch_size"])
        frames = [_pairs_frame(plain).assign(pc1_removed=False), _pairs_frame(res).assign(pc1_removed=True)]
    else:
        plain = res
        frames = [_pairs_frame(res).assign(pc1_removed=False)]
    pairs = pd.concat(frames, ignore_index=True)
    epoch = ctx.run.epochs[-1] if p["epoch"] is None else p["epoch"]
    pairs.insert(0, "epoch", epoch)
    pairs["n"] = res.n
    pc1 = res.pc1_fraction_a if p["remove_pc1"] else False
    blocks = find_blocks(plain, threshold=p["threshold"], min_size=p["min_size"], pc1_fraction=pc1,
                         pc1_threshold=p["pc1_threshold"])
    cols = ["start", "stop", "size", "first_layer", "last_layer", "min_cka", "mean_cka", "pc1_mean", "threshold",
            "pc1_threshold", "rule"]
    bt = pd.DataFrame([{"start": b.start, "stop": b.stop, "size": b.size, "first_layer": b.layers[0],
                        "last_layer": b.layers[-1], "min_cka": b.min_cka, "mean_cka": b.mean_cka,
                        "pc1_mean": b.pc1_mean, "threshold": p["threshold"],
                        "pc1_threshold": p["pc1_threshold"] if pc1 else np.nan,
                        "rule": "cka_and_pc1" if pc1 else "cka_only"} for b in blocks], columns=cols)
    out = {"cka_pairs": pairs, "cka_blocks": bt}
    if res.pc1_fraction_a:
        in_block = {n for b in blocks for n in b.layers}
        # the paper's by-eye reading (high CKA alone), kept beside the two-condition block for comparison
        runs = find_blocks(plain, threshold=p["threshold"], min_size=p["min_size"], pc1_fraction=False)
        in_run = {n for b in runs for n in b.layers}
        out["cka_pc1"] = pd.DataFrame({"layer_index": np.arange(len(res.layers_a)), "layer": res.layers_a,
                                       "relative_depth": res.depth_a,
                                       "pc1_fraction": [res.pc1_fraction_a[n] for n in res.layers_a],
                                       "in_block": [n in in_block for n in res.layers_a],
                                       "in_cka_run": [n in in_run for n in res.layers_a]})
    if p["pc1_projection"]:
        C = pc1_cka(pc1_scores(cap, layers=res.layers_a, batch_size=p["batch_size"]))
        i, j = np.meshgrid(np.arange(len(C)), np.arange(len(C)), indexing="ij")
        out["cka_pc1_projection"] = pd.DataFrame({
            "epoch": epoch, "i": i.ravel(), "j": j.ravel(),
            "layer_a": np.asarray(C.index, dtype=object)[i.ravel()],
            "layer_b": np.asarray(C.columns, dtype=object)[j.ravel()], "cka": C.to_numpy().ravel()})
    return out


def _architecture(spec) -> tuple:
    return (spec.model, spec.width, spec.depth, json.dumps(spec.model_options, sort_keys=True), spec.shuffle_fraction)


_PAIRS = {
    "all": lambda a, b: True,
    "seeds": lambda a, b: _architecture(a) == _architecture(b) and a.seed != b.seed,
    "architectures": lambda a, b: _architecture(a) != _architecture(b) and a.seed == b.seed,
}


def _comparable_runs(runs, include_shuffled: bool) -> dict[tuple, list]:
    """Trained runs grouped by identical test data (dataset, options, split seed)."""
    groups: dict[tuple, list] = {}
    for r in runs:
        if r.spec.shuffle_fraction > 0 and not include_shuffled:
            continue
        key = (r.spec.dataset, json.dumps(r.spec.data_options, sort_keys=True), r.spec.data_seed)
        groups.setdefault(key, []).append(r)
    return groups


@register_analysis(
    "cka_across",
    check=_check_common,
    scope="study",
    defaults={"n_points": 2000, "split": "test", "batch_size": 256, "include_shuffled": False, "max_pairs": 12,
              "pairs": "all", "seed": 0},
)
def cka_across(ctx) -> dict[str, pd.DataFrame]:
    """CKA between every layer of model A and every layer of model B, for pairs of trained runs on the
    same test examples (fed in one pass, same batches — Nguyen et al. 2021), plus each layer's best
    match in the other model. ``pairs``: ``"all"``, ``"seeds"`` (same architecture and labels, different
    seed: the paper's seed-to-seed comparison) or ``"architectures"`` (different architecture, same
    seed). At most ``max_pairs`` pairs, in sweep order."""

    p = ctx.params
    if p["pairs"] not in _PAIRS:
        raise InputError(f"cka_across pairs must be one of {list(_PAIRS)}; got {p['pairs']!r}")
    pairs_out, best_out = [], []
    n_done = 0
    for group in _comparable_runs(ctx.runs, p["include_shuffled"]).values():
        if len(group) < 2:
            continue
        x, _, _ = _split(group[0], p["split"], p["n_points"], ctx.seed)
        for a, b in itertools.combinations(group, 2):
            if n_done >= p["max_pairs"]:
                break
            if not _PAIRS[p["pairs"]](a.spec, b.spec):
                continue
            res = cka_matrix(a.model(), b.model(), data=x, batch_size=p["batch_size"], progress=False)
            tag = {"run_a": a.key, "run_b": b.key, "label_a": a.spec.label, "label_b": b.spec.label,
                   "dataset": a.spec.dataset}
            pairs_out.append(_pairs_frame(res).assign(**tag, n=res.n))
            best_out.append(best_match(res).assign(**tag))
            n_done += 1
    if not pairs_out:
        raise InputError(f"cka_across found no pair of trained runs on the same dataset (pairs={p['pairs']!r})")
    return {"cka_across": pd.concat(pairs_out, ignore_index=True),
            "cka_best_match": pd.concat(best_out, ignore_index=True)}


# ------------------------------------------------------------------------------------- spectra
@register_analysis(
    "spectrum_through_training",
    check=_check_common,
    defaults={"n_points": 1000, "epochs": "all", "center": False, "keep_eigenvalues": 64, "batch_size": 512,
              "count_subsamples": 0, "seed": 0},
)
def spectrum_through_training(ctx) -> dict[str, pd.DataFrame]:
    """Feature-kernel spectrum of the penultimate layer Φ at every checkpoint, on a fixed subset of the
    training set with the labels trained on: eigenvalues, dominant count and MF/EF regime, Π of targets
    and outputs, eigenbasis overlap, NC1–NC4 (Nam et al. 2024; Papyan et al. 2020), via
    :func:`deepgeom.analysis.kernel_dynamics.spectra_through_training`. ``count_subsamples`` > 0 adds the
    spread of the dominant count over that many random 80% subsamples of the points."""

    p = ctx.params
    x, y, _ = _split(ctx.run, "train", p["n_points"], ctx.seed)
    if y is None:
        raise InputError("spectrum_through_training needs labelled data")
    epochs = select_epochs(ctx.run.epochs, p["epochs"])
    checkpoints = [(e, ctx.run.model(e)) for e in epochs]
    res = spectra_through_training(checkpoints, (x, y), center=p["center"], keep_eigenvalues=p["keep_eigenvalues"],
                                   batch_size=p["batch_size"], count_subsamples=p["count_subsamples"],
                                   seed=ctx.seed)
    summary = res.summary.copy()
    hist = _history_at(ctx.run, epochs)[["epoch", "train_acc", "test_acc"]]
    summary = summary.drop(columns=[c for c in ("train_acc", "test_acc") if c in summary.columns])
    summary = summary.merge(hist, on="epoch", how="left")
    summary["centered"] = res.centered
    summary["k_top"] = res.k_top
    return {"spectra": summary, "spectrum_eigenvalues": res.eigenvalues, "spectrum_alignment": res.alignment}


# ------------------------------------------------------------------------------------- predictions
@register_analysis(
    "predictions",
    check=_check_common,
    scope="study",
    defaults={"split": "test", "include_shuffled": False, "n_permutations": 2000, "alpha": 0.05, "seed": 0},
)
def prediction_comparisons(ctx) -> dict[str, pd.DataFrame]:
    """Per-example agreement and per-class accuracy of the trained models on the same test set, and —
    when two or more model families have two or more seeds each — the architecture-vs-seed test of
    Nguyen et al. (2021, §6) (:mod:`deepgeom.analysis.predictions`)."""

    p = ctx.params
    pair_frames, class_frames, test_rows = [], [], []
    for group in _comparable_runs(ctx.runs, p["include_shuffled"]).values():
        x, y, _ = _split(group[0], p["split"], None, 0)
        if y is None:
            continue
        preds = {r.spec.label: predictions(r.model(), x)[0] for r in group}
        n_classes = group[0].dataset.n_classes
        for r in group:
            acc = per_class_accuracy(preds[r.spec.label], y, n_classes)
            class_frames.append(pd.DataFrame({**r.spec.columns(), "label": r.spec.label,
                                              "class": np.arange(len(acc)), "accuracy": acc}))
        if len(group) >= 2:
            pair_frames.append(pairwise_comparisons(preds, y, n_classes=n_classes).assign(dataset=group[0].spec.dataset))
        by_arch: dict[str, list] = {}
        for r in group:
            arch = f"{r.spec.model} w{r.spec.width} d{r.spec.depth}"
            by_arch.setdefault(arch, []).append(preds[r.spec.label])
        eligible = {a: v for a, v in by_arch.items() if len(v) >= 2}
        if len(eligible) >= 2:
            for measure in ("per_class", "per_example"):
                t = architecture_test(eligible, y, n_permutations=p["n_permutations"], alpha=p["alpha"],
                                      seed=p["seed"], n_classes=n_classes, measure=measure)
                test_rows.append({"dataset": group[0].spec.dataset, "architectures": " | ".join(eligible),
                                  "seeds": " | ".join(str(len(v)) for v in eligible.values()), "measure": measure,
                                  "statistic": t.statistic, "between": t.between, "within": t.within,
                                  "p_value": t.p_value, "min_p_value": t.min_p_value,
                                  "n_permutations": t.n_permutations, "exact": t.exact,
                                  "n_significant": t.n_significant, "expected_significant": t.expected_significant,
                                  "binom_p": t.binom_p})
    out = {}
    if pair_frames:
        out["prediction_pairs"] = pd.concat(pair_frames, ignore_index=True)
    if class_frames:
        out["per_class_accuracy"] = pd.concat(class_frames, ignore_index=True)
    if test_rows:
        out["architecture_test"] = pd.DataFrame(test_rows)
    if not out:
        raise InputError("predictions needs trained classifiers with labelled test data")
    return out
