r"""Do two classifiers get the same examples right? (Nguyen, Raghu, Kornblith, ICLR 2021, §6).

* :func:`predictions` — predicted labels (and labels) of a model over data, streamed.
* :func:`compare_predictions` — per-example agreement between two classifiers on the same test set,
  how often one is right where the other is wrong, and per-class accuracy differences.
* :func:`pairwise_comparisons` — the same for every pair of ≥ 2 classifiers, as one table
  (:func:`compare_models` runs the models on the data first).
* :func:`architecture_test` — the paper's question: are per-class accuracy differences *between*
  architectures larger than those between seeds of the *same* architecture?

The paper trained several seeds of wide and deep ResNets and found per-class accuracy differences
between the architectures that seed-to-seed variation does not explain. deepgeom's test (documented
in :func:`architecture_test`) is a permutation test on the mean absolute per-class accuracy
difference, plus per-class Welch t-tests with the number of significant classes compared with the
number expected by chance (binomial test).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .._results import ResultMixin, to_jsonable
from .._validation import check_fraction, check_positive_int
from ..capture import stream
from ..errors import InputError

__all__ = [
    "PairComparison",
    "ArchitectureTest",
    "as_predictions",
    "per_class_accuracy",
    "predictions",
    "compare_predictions",
    "pairwise_comparisons",
    "compare_models",
    "architecture_test",
]


# ------------------------------------------------------------------------------------------ inputs
def as_predictions(x: Any, name: str = "predictions") -> np.ndarray:
    """Predicted class per example: an (N,) integer array as is, or the argmax of (N, C) logits/scores."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim == 2:
        if not np.isfinite(a).all():
            raise InputError(f"{name}: logits contain NaN or Inf")
        return a.argmax(1).astype(np.int64)
    if a.ndim != 1:
        raise InputError(f"{name} must be (N,) labels or (N, C) logits; got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise InputError(f"{name}: 1-D predictions must be integer class labels")
    elif a.dtype.kind not in "iub":
        raise InputError(f"{name} must be numeric class labels; got dtype {a.dtype}")
    return a.astype(np.int64)


def _labels(labels: Any, n: int) -> np.ndarray:
    y = as_predictions(labels, "labels")
    if y.ndim != 1:
        raise InputError("labels must be a 1-D array of class indices")
    if y.shape[0] != n:
        raise InputError(f"predictions and labels must cover the same test set; got {n} predictions and "
                         f"{y.shape[0]} labels")
    return y


def _classes(y: np.ndarray, *preds: np.ndarray, n_classes: int | None) -> int:
    hi = int(max([y.max(initial=-1)] + [p.max(initial=-1) for p in preds])) + 1
    if min([y.min(initial=0)] + [p.min(initial=0) for p in preds]) < 0:
        raise InputError("class labels must be non-negative integers")
    if n_classes is None:
        return hi
    if n_classes < hi:
        raise InputError(f"n_classes={n_classes} but a label or prediction equals {hi - 1}")
    return int(n_classes)


def per_class_accuracy(preds: Any, labels: Any, n_classes: int | None = None) -> np.ndarray:
    """Accuracy within each true class, ``mean(pred == y | y = c)`` (NaN for a class with no example)."""
    p = as_predictions(preds)
    y = _labels(labels, p.shape[0])
    C = _classes(y, p, n_classes=n_classes)
    correct = np.bincount(y, weights=(p == y).astype(np.float64), minlength=C)
    count = np.bincount(y, minlength=C).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return correct / count


def predictions(model: Any, data: Any, *, batch_size: int = 256, device: str | torch.device = "cpu",
                progress: bool = False, reduce: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted labels (argmax of the model's output) over ``data``, streamed with
    :func:`deepgeom.capture.stream` (``reduce`` as there, for a model whose output has a token axis);
    returns ``(preds, labels)`` (labels None when the data has none)."""

    preds, labels = [], []
    for b in stream(model, data, ["output"], batch_size=batch_size, device=device, progress=progress,
                    reduce=reduce):
        preds.append(b["output"].argmax(1).numpy())
        if b.labels is not None:
            labels.append(b.labels.numpy())
    if not preds:
        raise InputError("data holds no examples")
    return np.concatenate(preds).astype(np.int64), (np.concatenate(labels).astype(np.int64) if labels else None)


# ------------------------------------------------------------------------------------- two models
@dataclasses.dataclass(frozen=True)
class PairComparison(ResultMixin):
    """Per-example comparison of two classifiers on the same N test examples.

    Fractions of N: ``agreement`` (same predicted label), ``both_right``, ``a_only`` (A right, B wrong),
    ``b_only`` (B right, A wrong), ``both_wrong``. ``per_class``: DataFrame with ``class``, ``n``,
    ``acc_a``, ``acc_b``, ``diff`` (acc_a − acc_b). ``mcnemar_p``: exact two-sided McNemar test of
    a_only vs b_only (do the two err on different examples more in one direction than chance?).
    """

    name_a: str
    name_b: str
    n: int
    accuracy_a: float
    accuracy_b: float
    agreement: float
    both_right: float
    a_only: float
    b_only: float
    both_wrong: float
    mcnemar_p: float
    per_class: pd.DataFrame

    def to_dict(self, *, max_array: int | None = None) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "per_class"}
        d["per_class"] = self.per_class.to_dict(orient="list")
        return to_jsonable(d, max_array=max_array)


def compare_predictions(preds_a: Any, preds_b: Any, labels: Any, *, names: tuple[str, str] = ("A", "B"),
                        n_classes: int | None = None) -> PairComparison:
    """Per-example agreement and right/wrong cross-tabulation of two classifiers (Nguyen et al. 2021, §6).

    Args:
        preds_a, preds_b: (N,) predicted labels or (N, C) logits on the *same* test examples.
        labels: (N,) true labels.

    Example:
        >>> c = compare_predictions([0, 1, 1, 2], [0, 1, 2, 2], [0, 1, 1, 1])
        >>> c.agreement, c.a_only, c.b_only
        (0.75, 0.25, 0.0)
    """
    a, b = as_predictions(preds_a, "preds_a"), as_predictions(preds_b, "preds_b")
    if a.shape != b.shape:
        raise InputError(f"the two classifiers must be evaluated on the same examples; got {a.shape[0]} and "
                         f"{b.shape[0]} predictions")
    y = _labels(labels, a.shape[0])
    n = a.shape[0]
    if n == 0:
        raise InputError("no examples to compare")
    C = _classes(y, a, b, n_classes=n_classes)
    ra, rb = a == y, b == y
    a_only, b_only = int(np.sum(ra & ~rb)), int(np.sum(rb & ~ra))
    mcnemar = (float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue) if a_only + b_only > 0 else 1.0)
    acc_a, acc_b = per_class_accuracy(a, y, C), per_class_accuracy(b, y, C)
    per_class = pd.DataFrame({"class": np.arange(C), "n": np.bincount(y, minlength=C), "acc_a": acc_a,
                              "acc_b": acc_b, "diff": acc_a - acc_b})
    return PairComparison(name_a=names[0], name_b=names[1], n=n, accuracy_a=float(ra.mean()),
                          accuracy_b=float(rb.mean()), agreement=float(np.mean(a == b)),
                          both_right=float(np.mean(ra & rb)), a_only=a_only / n, b_only=b_only / n,
                          both_wrong=float(np.mean(~ra & ~rb)), mcnemar_p=mcnemar, per_class=per_class)


def pairwise_comparisons(preds: Mapping[str, Any], labels: Any, *, n_classes: int | None = None) -> pd.DataFrame:
    """:func:`compare_predictions` for every pair of ≥ 2 named classifiers: one row per pair with the
    accuracies, agreement, both_right, a_only, b_only, both_wrong, McNemar p and the mean absolute
    per-class accuracy difference."""
    if len(preds) < 2:
        raise InputError(f"need at least 2 classifiers to compare; got {len(preds)}")
    rows = []
    for (na, pa), (nb, pb) in itertools.combinations(preds.items(), 2):
        c = compare_predictions(pa, pb, labels, names=(na, nb), n_classes=n_classes)
        rows.append({"a": na, "b": nb, "accuracy_a": c.accuracy_a, "accuracy_b": c.accuracy_b,
                     "agreement": c.agreement, "both_right": c.both_right, "a_only": c.a_only,
                     "b_only": c.b_only, "both_wrong": c.both_wrong, "mcnemar_p": c.mcnemar_p,
                     "mean_abs_class_diff": float(np.nanmean(np.abs(c.per_class["diff"])))})
    return pd.DataFrame(rows)


def compare_models(models: Mapping[str, Any], data: Any, labels: Any = None, *, batch_size: int = 256,
                   device: str | torch.device = "cpu", n_classes: int | None = None) -> pd.DataFrame:
    """:func:`pairwise_comparisons` for ≥ 2 named models run on the same ``data`` (streamed, fixed order).

    ``labels`` default to the labels carried by ``data`` (e.g. an ``(x, y)`` pair); the table is the
    one :func:`pairwise_comparisons` returns.
    """
    if len(models) < 2:
        raise InputError(f"need at least 2 classifiers to compare; got {len(models)}")
    preds = {}
    for name, model in models.items():
        preds[name], carried = predictions(model, data, batch_size=batch_size, device=device)
        if labels is None:
            labels = carried
    if labels is None:
        raise InputError("no labels: pass labels=, or data as an (inputs, labels) pair")
    return pairwise_comparisons(preds, labels, n_classes=n_classes)


# --------------------------------------------------------------------------- architecture vs seeds
@dataclasses.dataclass(frozen=True)
class ArchitectureTest(ResultMixin):
    """Result of :func:`architecture_test`.

    Attributes:
        statistic: mean |Δ per-class accuracy| (``measure="per_class"``) or mean share of examples
            predicted differently (``"per_example"``) over cross-architecture model pairs, minus the same
            over same-architecture (seed) pairs.
        between, within: the two means.
        p_value: permutation p-value of ``statistic`` (architecture labels shuffled among models).
        n_permutations: relabelings used (all distinct ones when ``exact``).
        exact: True when every distinct relabeling was enumerated.
        per_class: DataFrame per class: mean accuracy per architecture, ``diff`` (first − second
            architecture; with > 2 architectures the largest minus smallest mean), Welch ``t`` and ``p``
            (two architectures only) and ``significant`` (p < alpha).
        n_significant, expected_significant: classes with p < alpha, and alpha × classes tested.
        binom_p: one-sided binomial test of ``n_significant`` against that chance rate (classes treated
            as independent — an approximation).
        alpha: the per-class level.
        groups: number of models per architecture.
        measure: ``"per_class"`` or ``"per_example"`` (see :func:`architecture_test`).
        min_p_value: the test's resolution — the smallest p-value any data could give with these group
            sizes (e.g. 1/126 for 5 + 5 models, 1/10 for 3 + 3 — the two groups are interchangeable).
    """

    statistic: float
    between: float
    within: float
    p_value: float
    n_permutations: int
    exact: bool
    per_class: pd.DataFrame
    n_significant: int
    expected_significant: float
    binom_p: float
    alpha: float
    groups: dict[str, int]
    measure: str = "per_class"
    min_p_value: float = float("nan")

    def to_dict(self, *, max_array: int | None = None) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "per_class"}
        d["per_class"] = self.per_class.to_dict(orient="list")
        return to_jsonable(d, max_array=max_array)


MEASURES = ("per_class", "per_example")


def _distances(measure: str, acc: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Models × models distance: mean over classes of |acc_i − acc_j| (``per_class``), or the share of
    examples on which the two models' predictions differ (``per_example``)."""
    if measure == "per_class":
        return np.nanmean(np.abs(acc[:, None, :] - acc[None, :, :]), axis=2)
    return (preds[:, None, :] != preds[None, :, :]).mean(axis=2)


def _pair_stat(D: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Mean distance over cross-group and over same-group model pairs."""
    iu = np.triu_indices(len(groups), 1)
    same = groups[iu[0]] == groups[iu[1]]
    vals = D[iu]
    return float(vals[~same].mean()), float(vals[same].mean())


def architecture_test(preds_by_arch: Mapping[str, Sequence[Any]], labels: Any, *, n_permutations: int = 10000,
                      alpha: float = 0.05, seed: int = 0, n_classes: int | None = None,
                      measure: str = "per_class") -> ArchitectureTest:
    r"""Are per-class accuracy differences (or per-example disagreements) between architectures larger
    than between seeds?

    The paper's comparison (Nguyen et al. 2021, §6: wide vs deep ResNets, several seeds each). For
    every model m, per-class accuracies :math:`a_m(c)`. For two models, :math:`d(m, m') =
    \frac1C\sum_c |a_m(c) - a_{m'}(c)|`. The statistic is

    .. math:: S = \overline{d}_{\text{between}} - \overline{d}_{\text{within}}

    (mean over pairs of models from different architectures minus mean over pairs of seeds of the same
    architecture). Under the null hypothesis that the architecture does not matter, the models are
    exchangeable, so the p-value is the fraction of relabelings of models to architectures (group
    sizes kept) with a statistic at least as large — all distinct relabelings when there are at most
    ``n_permutations`` of them (exact test), else ``n_permutations`` random ones, p = (1 + #≥)/(1 + n).
    With few seeds the smallest attainable p is 1/#relabelings (3 + 3 models: 1/20; 5 + 5: 1/126, as
    the statistic is symmetric in the two groups).

    ``measure="per_example"`` replaces :math:`d` by the share of test examples on which the two models'
    predictions differ (the paper's per-example comparison): the same permutation test of
    architecture against seed.

    In addition, with exactly two architectures, each class gets a Welch t-test of the seeds'
    accuracies (A vs B); the count of classes with p < ``alpha`` is compared with the
    ``alpha × C`` expected by chance by a one-sided binomial test.

    Args:
        preds_by_arch: ``{architecture: [predictions or logits of each seed]}``; ≥ 2 architectures, ≥ 2
            seeds each, all on the same test examples.
        labels: (N,) true labels.

    Returns:
        :class:`ArchitectureTest`.
    """
    if len(preds_by_arch) < 2:
        raise InputError(f"need at least 2 architectures; got {len(preds_by_arch)}")
    if measure not in MEASURES:
        raise InputError(f"measure must be one of {list(MEASURES)}; got {measure!r}")
    alpha = check_fraction(alpha, "alpha", open_low=True, open_high=True)
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    names = list(preds_by_arch)
    accs, groups = [], []
    n_models = {}
    y_ref = None
    for g, (arch, seeds) in enumerate(preds_by_arch.items()):
        seeds = list(seeds)
        if len(seeds) < 2:
            raise InputError(f"architecture {arch!r} has {len(seeds)} model(s): seed-to-seed variation needs at "
                             "least 2 seeds per architecture")
        n_models[arch] = len(seeds)
        for k, p in enumerate(seeds):
            p = as_predictions(p, f"{arch}[{k}]")
            y_ref = _labels(labels, p.shape[0]) if y_ref is None else y_ref
            if p.shape[0] != y_ref.shape[0]:
                raise InputError(f"{arch}[{k}] has {p.shape[0]} predictions, expected {y_ref.shape[0]} "
                                 "(every model must be evaluated on the same test set)")
            accs.append(p)
            groups.append(g)
    y = y_ref
    C = _classes(y, *accs, n_classes=n_classes)
    acc = np.stack([per_class_accuracy(p, y, C) for p in accs])  # models × classes
    present = np.bincount(y, minlength=C) > 0
    acc = acc[:, present]
    classes = np.arange(C)[present]
    groups = np.asarray(groups)
    D = _distances(measure, acc, np.stack(accs))
    between, within = _pair_stat(D, groups)
    stat = between - within

    # permutation distribution over relabelings (group sizes fixed)
    M = len(groups)
    sizes = [int(np.sum(groups == g)) for g in range(len(names))]
    n_distinct = math.factorial(M) // math.prod(math.factorial(s) for s in sizes)
    exact = n_distinct <= n_permutations
    if exact:
        labelings = _all_labelings(sizes)
    else:
        rng = np.random.default_rng(seed)
        labelings = (rng.permutation(groups) for _ in range(n_permutations))
    perm = np.array([np.subtract(*_pair_stat(D, np.asarray(lab))) for lab in labelings])
    total = len(perm)
    count = int((perm >= stat - 1e-12).sum())
    p_value = count / total if exact else (1 + count) / (1 + total)
    # the test's resolution: the p-value the most extreme relabeling would get
    min_p = float((perm >= perm.max() - 1e-12).sum() / total) if exact else 1 / (1 + total)

    cols: dict[str, Any] = {"class": classes}
    means = []
    for g, arch in enumerate(names):
        m = acc[groups == g].mean(0)
        cols[f"acc_{arch}"] = m
        means.append(m)
    if len(names) == 2:
        cols["diff"] = means[0] - means[1]
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            # classes where all seeds score the same: 0/0, handled just below
            warnings.simplefilter("ignore", RuntimeWarning)
            t, p = stats.ttest_ind(acc[groups == 0], acc[groups == 1], axis=0, equal_var=False)
        t, p = np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64)
        # identical seeds within both groups and equal means → no evidence (NaN from 0/0): p = 1
        p = np.where(np.isnan(p), np.where(np.isclose(cols["diff"], 0.0), 1.0, 0.0), p)
        cols["t"], cols["p"] = t, p
        sig = p < alpha
        cols["significant"] = sig
        n_sig = int(sig.sum())
        expected = alpha * len(classes)
        binom_p = float(stats.binomtest(n_sig, len(classes), alpha, alternative="greater").pvalue)
    else:
        stacked = np.stack(means)
        cols["diff"] = stacked.max(0) - stacked.min(0)
        n_sig, expected, binom_p = 0, float("nan"), float("nan")
    return ArchitectureTest(statistic=stat, between=between, within=within, p_value=float(p_value),
                            n_permutations=total, exact=exact, per_class=pd.DataFrame(cols),
                            n_significant=n_sig, expected_significant=expected, binom_p=binom_p, alpha=alpha,
                            groups=n_models, measure=measure, min_p_value=min_p)


def _all_labelings(sizes: list[int]):
    """Every distinct assignment of len = sum(sizes) models to groups with the given sizes."""
    M = sum(sizes)

    def rec(remaining: list[int], g: int, lab: list[int]):
        if g == len(sizes):
            yield list(lab)
            return
        for combo in itertools.combinations(remaining, sizes[g]):
            for i in combo:
                lab[i] = g
            rest = [i for i in remaining if i not in combo]
            yield from rec(rest, g + 1, lab)

    yield from rec(list(range(M)), 0, [0] * M)
