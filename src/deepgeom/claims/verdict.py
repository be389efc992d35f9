"""Pre-registered claims: the spec, the intervals, and the verdict rule.

A *claim* is a sentence of a paper turned into a test written down before the run: a named statistic
(:mod:`deepgeom.claims.statistics`) computed from a study's tables, a comparison operator and a
threshold. The statistic comes with a 95% interval (across seeds, or across models, or across
subsamples — each statistic says which), and the verdict is read off the interval, never off the point
estimate alone:

* ``holds``        — the whole interval lies on the claimed side of the threshold;
* ``fails``        — the whole interval lies on the other side, or on the threshold itself (no value in
  it satisfies the claim: e.g. slopes that are all exactly 0 for "grows");
* ``inconclusive`` — the interval straddles the threshold, cannot be formed (fewer than two seeds or
  models), or a precondition of the claim is not met (e.g. a network did not fit its shuffled labels).

So a noisy measurement can never be reported as a reproduction, and a clear miss is written as a miss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, UnknownNameError
from ._registry import STATISTICS

__all__ = ["Claim", "Estimate", "parse_claims", "verdict", "mean_interval", "pearson_interval",
           "CLAIM_COLUMNS", "OPS"]

#: The columns of ``claims.csv``, in order (a public contract: scripts read these).
CLAIM_COLUMNS = ("paper", "claim_id", "claim", "criterion", "paper_value", "measured", "ci_low", "ci_high",
                 "n", "verdict")

OPS = {">": "above", "<": "below"}

_CLAIM_KEYS = ("id", "paper", "sentence", "paper_value", "statistic", "params", "op", "threshold",
               "describe", "why")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A statistic's value with its 95% interval over ``n`` independent units (seeds, models, subsamples).

    ``ci_low``/``ci_high`` are NaN when no interval can be formed; ``blocked`` names a precondition that
    failed (the verdict is then ``inconclusive`` whatever the numbers); ``note`` is shown beside it.
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    note: str = ""
    blocked: str = ""


@dataclasses.dataclass(frozen=True)
class Claim:
    """One pre-registered claim: ``statistic(tables, **params)`` compared with ``threshold`` by ``op``.

    ``sentence`` is the paper's finding in its own words (what is tested, not what was found here);
    ``describe`` says in plain words what the statistic measures; ``why`` justifies the threshold.
    """

    id: str
    paper: str
    sentence: str
    paper_value: str
    statistic: str
    params: dict
    op: str
    threshold: float
    describe: str
    why: str = ""

    @property
    def criterion(self) -> str:
        return (f"{self.describe}; holds if its 95% interval lies entirely {OPS[self.op]} {self.threshold:g}, "
                f"fails if entirely on the other side, else inconclusive")


def parse_claims(raw: Any, *, where: str = "claims") -> list[Claim]:
    """Validate a list of claim mappings (from a study config or a reproduction spec).

    Each needs ``id, paper, sentence, statistic, op ('>' or '<'), threshold, describe``; ``params``,
    ``paper_value`` and ``why`` are optional. Statistic names are checked against the registry.
    """
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise InputError(f"{where} must be a list of claims; got {type(raw).__name__}")
    claims, seen = [], set()
    for i, c in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(c, Mapping):
            raise InputError(f"{at} must be a mapping; got {c!r}")
        for k in c:
            if k not in _CLAIM_KEYS:
                raise UnknownNameError(f"key in {at}", k, list(_CLAIM_KEYS))
        for k in ("id", "paper", "sentence", "statistic", "op", "threshold", "describe"):
            if k not in c:
                raise InputError(f"{at} needs {k!r}")
        if c["statistic"] not in STATISTICS:
            raise UnknownNameError(f"statistic in {at}", c["statistic"], sorted(STATISTICS))
        if c["op"] not in OPS:
            raise InputError(f"{at}.op must be '>' or '<'; got {c['op']!r}")
        thr = c["threshold"]
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
            raise InputError(f"{at}.threshold must be a finite number; got {thr!r}")
        params = c.get("params") or {}
        if not isinstance(params, Mapping):
            raise InputError(f"{at}.params must be a mapping; got {params!r}")
        cid = str(c["id"])
        if cid in seen:
            raise InputError(f"{where}: claim id {cid!r} appears twice")
        seen.add(cid)
        claims.append(Claim(id=cid, paper=str(c["paper"]), sentence=str(c["sentence"]).strip(),
                            paper_value=str(c.get("paper_value", "")), statistic=str(c["statistic"]),
                            params=dict(params), op=c["op"], threshold=float(thr),
                            describe=str(c["describe"]).strip(), why=str(c.get("why", "")).strip()))
    return claims


def verdict(claim: Claim, est: Estimate) -> str:
    """``holds`` / ``fails`` / ``inconclusive`` from the interval (see the module docstring)."""
    if est.blocked or not (math.isfinite(est.ci_low) and math.isfinite(est.ci_high)):
        return "inconclusive"
    lo, hi, t = est.ci_low, est.ci_high, claim.threshold
    if claim.op == ">":
        return "holds" if lo > t else "fails" if hi <= t else "inconclusive"
    return "holds" if hi < t else "fails" if lo >= t else "inconclusive"


def mean_interval(samples: Any, *, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean of independent samples (one per seed or run) and its Student-t interval.

    ``(mean, low, high, n)``; the interval is NaN for fewer than two finite samples. With 3 seeds the
    t quantile is 4.30, so the interval is mean ± 2.48 standard deviations: wide, as it should be.
    """
    from scipy import stats  # lazy: scipy.stats takes seconds to import; only intervals need it

    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def pearson_interval(x: Any, y: Any, *, level: float = 0.95) -> tuple[float, float, float, int]:
    """Pearson r of paired values with its Fisher-z interval (z = atanh r, se = 1/√(n−3)); NaN below n = 4."""
    from scipy import stats  # lazy: scipy.stats takes seconds to import; only intervals need it

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan, n
    r = float(np.corrcoef(x, y)[0, 1])
    if n < 4:
        return r, math.nan, math.nan, n
    z, se = math.atanh(max(min(r, 1 - 1e-15), -1 + 1e-15)), 1 / math.sqrt(n - 3)
    q = float(stats.norm.ppf(0.5 + level / 2))
    return r, math.tanh(z - q * se), math.tanh(z + q * se), n
