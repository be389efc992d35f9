"""The dominant-eigenfunction count and the MF/EF regime call on a :class:`Spectrum` (Nam et al. 2024)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..._results import ResultMixin
from ..._validation import check_matrix, check_positive_int
from ...errors import InputError
from .. import matrix
from ._decomposition import Spectrum, feature_spectrum, rank_tolerance


@dataclass(frozen=True)
class DominantCount(ResultMixin):
    """How many eigenfunctions dominate a spectrum, and the numbers behind the call.

    Attributes:
        count: the final count (see :func:`dominant_count` for the rule). rule: ``"gap"`` when a
            significant spectral gap decided it, ``"rank"`` for an exactly rank-deficient Φ without one,
            ``"effective_dim"`` otherwise.
        gap_k: the candidate gap position k (between ρ_k and ρ_{k+1}; 0 if there was no gap to search). gap_decades: its size
            log10(ρ_k/ρ_{k+1}). gap_slope: its local log-log slope, gap_decades / log10((k+1)/k).
            median_slope: the median of that slope over the searched range (a power law's α).
            significant_ks: every k whose gap passed both thresholds (the count uses the first).
        min_gap_decades, min_slope_ratio: the significance thresholds used. k_range: (first, last) k searched.
        log_gaps: log10(ρ_k/ρ_{k+1}) for k = 1..last (zero eigenvalues floored at the rank tolerance).
        effective_dim: exp(Shannon entropy) of the normalised eigenvalues (Nam et al.'s effective dimension).
        effective_dim_rest: the same without ρ_1 when the constant mode is skipped (else = effective_dim).
        k90_targets, k99_targets, k90_outputs, k99_outputs: smallest k with Π(k) ≥ 0.90 / 0.99, or None
            when Π never gets there (the targets are not in the span of the features).
        centered: whether the spectrum was centred.
    """

    count: int
    rule: str
    gap_k: int
    gap_decades: float
    gap_slope: float
    median_slope: float
    significant_ks: tuple[int, ...]
    min_gap_decades: float
    min_slope_ratio: float
    k_range: tuple[int, int]
    log_gaps: np.ndarray
    effective_dim: float
    effective_dim_rest: float
    k90_targets: int | None
    k99_targets: int | None
    k90_outputs: int | None
    k99_outputs: int | None
    centered: bool


def _first_reaching(curve: np.ndarray | None, level: float) -> int | None:
    if curve is None or not np.isfinite(curve).any():
        return None
    hit = np.nonzero(curve >= level - 1e-12)[0]
    return int(hit[0]) + 1 if hit.size else None


def effective_dimension(eigenvalues: np.ndarray) -> float:
    r"""exp of the Shannon entropy of :math:`p_k = \rho_k/\sum_j\rho_j` (Nam et al. 2024, effective dimension)."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    if lam.size and lam.max() > 0:  # p_k does not see the scale: keep the sum far from overflow
        lam = np.ldexp(lam, -math.frexp(float(lam.max()))[1])
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def dominant_count(
    spectrum: Spectrum,
    *,
    k_max: int = 64,
    min_gap_decades: float = 0.25,
    min_slope_ratio: float = 3.0,
    skip_constant: bool | None = None,
) -> DominantCount:
    r"""Number of dominant eigenfunctions of a :class:`Spectrum`: the edge of a block set off by a gap.

    Rule (every number is reported in :class:`DominantCount`; measurements in docs/spectra.md):

    1. Log-gaps :math:`g_k = \log_{10}(\rho_k/\rho_{k+1})` between the nonzero eigenvalues (above the
       rank tolerance), :math:`k \le k_{max}`, and the local log-log slope
       :math:`s_k = g_k / \log_{10}\frac{k+1}{k}`, which is the constant α all along a power law
       :math:`\rho_k \propto k^{-\alpha}`.
    2. For an **uncentred** spectrum, :math:`g_1` is skipped (``skip_constant``): ReLU features have a
       large mean, so ρ_1 is the constant/bias mode, 0.9–1.4 decades above ρ_2 already at
       initialisation, a gap that says nothing about learned features. The constant mode is still
       counted (count ≥ 2).
    3. A gap is significant if :math:`g_k \ge` ``min_gap_decades`` (default 0.25, a factor 1.8) and
       :math:`s_k \ge` ``min_slope_ratio`` × the median slope (default 3): a cliff, not the head of a
       power law (where every :math:`s_k` equals the median, α, however large α is). The **first**
       significant gap gives count = k (rule ``"gap"``): it bounds the top block, while deeper
       significant gaps come from near-dead units at the end of the spectrum (a VGG on digits: 1.0
       decade at k = 10 and 4.3 decades at k = 61 of 64 features). Measured (digits, MSE and CE,
       3 seeds): trained MLPs and CNNs show 0.27–1.0 decades at k = C or C±1 uncentred (slope 6–17,
       3.5–12× the median); random-init and shuffled-label MLPs no significant gap at all.
    4. No significant gap, but Φ is exactly rank-deficient with rank r ≤ k_max (a simplex-ETF collapse,
       dead units): all r nonzero modes dominate, count = r (rule ``"rank"``).
    5. Otherwise there is no dominant block: the count is the effective dimension
       :math:`\exp(-\sum_k p_k\log p_k)` rounded (rule ``"effective_dim"``); for an uncentred spectrum
       1 (the constant mode) plus that of ρ_2, ρ_3, …, since the constant mode alone pulls the
       effective dimension of a random network down to ~3.

    The k at which Π(k) reaches 90% and 99% (targets and outputs, when the spectrum has them) are
    reported beside the count but do not decide it: when n > D, one-hot targets need not lie in the
    span of Φ and Π may never reach 90%.
    """
    if not isinstance(spectrum, Spectrum):
        raise InputError(f"dominant_count needs a Spectrum from feature_spectrum; got {type(spectrum).__name__}")
    k_max = check_positive_int(k_max, "k_max")
    if not (min_gap_decades > 0):
        raise InputError(f"min_gap_decades must be > 0; got {min_gap_decades!r}")
    if not (min_slope_ratio >= 0):
        raise InputError(f"min_slope_ratio must be >= 0; got {min_slope_ratio!r}")
    skip = (not spectrum.centered) if skip_constant is None else bool(skip_constant)
    lam = np.asarray(spectrum.eigenvalues, dtype=np.float64)
    if lam.size < 2 or lam[0] <= 0:
        raise InputError("the spectrum needs at least two eigenvalues and a nonzero top one to count dominant modes")
    tol = max(rank_tolerance(lam, spectrum.n_samples, spectrum.n_features), np.finfo(np.float64).tiny)
    floored = np.maximum(lam, tol)
    last = min(k_max, lam.size - 1)
    gaps = np.log10(floored[:last] / floored[1 : last + 1])
    rank = int((lam > tol).sum())
    first = 2 if skip else 1
    stop = min(last, rank - 1)  # gaps between nonzero eigenvalues only; the rank edge is rule 4
    ks = np.arange(first, stop + 1)
    g = gaps[first - 1 : stop]
    if ks.size:
        slopes = g / np.log10((ks + 1) / ks)
        median_slope = float(np.median(slopes))
        ok = (g >= min_gap_decades) & (slopes >= min_slope_ratio * median_slope)
        # the first significant gap bounds the top block; deeper ones come from near-dead units
        j = int(np.argmax(ok)) if ok.any() else int(np.argmax(g))
        gap_k, gap, slope, significant = int(ks[j]), float(g[j]), float(slopes[j]), bool(ok.any())
        significant_ks = tuple(int(k) for k in ks[ok])
    else:
        gap_k, gap, slope, median_slope, significant = 0, float("nan"), float("nan"), float("nan"), False
        significant_ks = ()
    eff = effective_dimension(lam)
    # without a gap: the constant mode (skipped above) plus the effective dimension of the rest, which
    # the constant mode would otherwise swamp (3 instead of 24 for an MLP at init, docs/spectra.md)
    eff_rest = effective_dimension(lam[1:]) if skip else eff
    if significant:
        count, rule = gap_k, "gap"
    elif rank < lam.size and rank <= k_max:
        count, rule = max(rank, 1), "rank"
    else:
        count, rule = (1 if skip else 0) + max(1, int(round(eff_rest))), "effective_dim"
    return DominantCount(
        count=int(count),
        rule=rule,
        gap_k=gap_k,
        gap_decades=gap,
        gap_slope=slope,
        median_slope=median_slope,
        significant_ks=significant_ks,
        min_gap_decades=float(min_gap_decades),
        min_slope_ratio=float(min_slope_ratio),
        k_range=(first, last),
        log_gaps=gaps,
        effective_dim=eff,
        effective_dim_rest=eff_rest,
        k90_targets=_first_reaching(spectrum.target_alignment, 0.90),
        k99_targets=_first_reaching(spectrum.target_alignment, 0.99),
        k90_outputs=_first_reaching(spectrum.output_alignment, 0.90),
        k99_outputs=_first_reaching(spectrum.output_alignment, 0.99),
        centered=spectrum.centered,
    )


def regime(
    count: int | DominantCount,
    n_classes: int,
    *,
    tolerance: int | None = None,
    accuracy: float | None = None,
    min_accuracy: float | None = None,
    centered: bool | None = None,
) -> str:
    r"""``"MF"`` (minimal feature) or ``"EF"`` (extended feature; here: *not* minimal) — Nam et al. (2024).

    Nam et al. call a network MF when the number of significant eigenfunctions is about the number of
    classes C: C for an uncentred kernel (the constant plus C−1 class directions), C−1 centred. A count
    alone can be fooled: an untrained net or one at epoch 1 has few modes above its noise for reasons that
    have nothing to do with the classes (a count of 2 or 4 there would pass for MF). So MF needs all of

    1. **a spectral gap**: with a :class:`DominantCount`, its rule is ``"gap"`` (a significant cliff
       :math:`g_k=\log_{10}(\rho_k/\rho_{k+1}) \ge` ``min_gap_decades`` with local slope
       :math:`\ge` ``min_slope_ratio`` × the median slope, see :func:`dominant_count`) or ``"rank"``
       (Φ exactly of rank ≤ k_max: an exact collapse); a count read off the effective dimension is never
       MF. A plain integer count cannot be checked for a gap (only 2 and 3 below apply);
    2. **the count at C**: :math:`|count - C_{exp}| \le` ``tolerance``, with :math:`C_{exp}` = C uncentred,
       C − 1 centred (``centered``, taken from the DominantCount; default uncentred for an integer), and
       ``tolerance = max(1, round(0.2·C))`` (2 for C = 10: a pair of classes not yet split, or one split
       in two). Counts well below C are *not* MF: fewer features than the output needs is an unlearned
       kernel, not a minimal one;
    3. **learned classes**: when ``accuracy`` (on the labels the kernel is analysed with) is given, it must
       reach ``min_accuracy``, by default halfway from chance to perfect, :math:`1/C + (1 - 1/C)/2`
       (0.55 for C = 10). An untrained network, or one at chance, is therefore never MF.
    """
    if isinstance(count, DominantCount):
        c, gap_ok = count.count, count.rule in ("gap", "rank")
        cen = count.centered if centered is None else bool(centered)
    else:
        c, gap_ok, cen = count, True, bool(centered)
    c = check_positive_int(c, "count", minimum=0)
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    tol = max(1, int(round(0.2 * n_classes))) if tolerance is None else check_positive_int(
        tolerance, "tolerance", minimum=0)
    expected = n_classes - 1 if cen else n_classes
    learned = True
    if accuracy is not None:
        acc = float(accuracy)
        if not (0.0 <= acc <= 1.0):
            raise InputError(f"accuracy must be in [0, 1]; got {accuracy!r}")
        chance = 1.0 / n_classes
        need = chance + 0.5 * (1.0 - chance) if min_accuracy is None else float(min_accuracy)
        if not (0.0 <= need <= 1.0):
            raise InputError(f"min_accuracy must be in [0, 1]; got {min_accuracy!r}")
        learned = acc >= need
    return "MF" if (gap_ok and abs(c - expected) <= tol and learned) else "EF"


def dominant_count_subsamples(
    Phi: Any,
    *,
    replicates: int = 10,
    fraction: float = 0.8,
    seed: int = 0,
    center: bool = False,
    **count_options: Any,
) -> list[DominantCount]:
    r"""The dominant count (:func:`dominant_count`) on ``replicates`` random subsamples of the points.

    Each replicate keeps ``round(fraction · n)`` of the ``n`` rows of Φ without replacement (seeded), re-
    diagonalises the kernel and counts. The spread of the returned counts is the count's sampling
    uncertainty at this n; a count decided by a real gap does not move, one at the edge of the
    significance thresholds does. ``count_options`` go to :func:`dominant_count`. Returns one
    :class:`DominantCount` per replicate (each with its own rule, so :func:`regime` can judge it).
    """
    Phi = check_matrix(Phi, "Phi", min_rows=4)
    replicates = check_positive_int(replicates, "replicates")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1]; got {fraction!r}")
    n = int(Phi.shape[0])
    m = max(2, int(round(fraction * n)))
    rng = np.random.default_rng(seed)
    X = matrix.as_tensor(Phi)
    counts = []
    for _ in range(replicates):
        idx = torch.from_numpy(np.sort(rng.choice(n, size=m, replace=False)))
        sp = feature_spectrum(X[idx], center=center, eigenvectors=False, k_max=1)
        counts.append(dominant_count(sp, **count_options))
    return counts
