"""Pre-registered claims and their computed verdicts (``holds`` / ``fails`` / ``inconclusive``).

A study config or a reproduction spec lists claims; :func:`evaluate_claims` judges them on the study's
tables and returns the ``claims.csv`` table (columns :data:`CLAIM_COLUMNS`, plus ``note``,
``statistic``, ``threshold``, ``why`` and ``params``, the statistic's parameters as JSON). See :mod:`deepgeom.claims.verdict` for the rule and
:mod:`deepgeom.claims.statistics` for what each statistic measures.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable
from typing import Any

import pandas as pd

from . import nguyen as _nguyen  # noqa: F401 - registers the Nguyen et al. statistics
from .statistics import STATISTICS, Tables, register_statistic
from .verdict import CLAIM_COLUMNS, Claim, Estimate, mean_interval, parse_claims, pearson_interval, verdict

__all__ = ["Claim", "Estimate", "Tables", "CLAIM_COLUMNS", "STATISTICS", "evaluate_claims", "parse_claims",
           "register_statistic", "verdict", "mean_interval", "pearson_interval"]


def evaluate_claims(claims: Iterable[Claim], tables: Tables) -> pd.DataFrame:
    """Judge each claim on ``tables``: one row per claim with the measured value, its 95% interval, the
    number of independent units behind it and the verdict. A statistic that cannot be computed (a
    table is missing, a filter selects nothing) gives ``inconclusive`` with the reason in ``note`` —
    never a silent ``holds``."""
    rows: list[dict[str, Any]] = []
    for c in claims:
        try:
            est = STATISTICS[c.statistic](tables, **c.params)
            v, note = verdict(c, est), est.note + (f"; inconclusive: {est.blocked}" if est.blocked else "")
        except Exception as exc:  # noqa: BLE001 - reported in the row, the other claims still judged
            est = Estimate(float("nan"), float("nan"), float("nan"), 0)
            v = "inconclusive"
            note = "could not compute: " + "".join(traceback.format_exception_only(type(exc), exc)).strip()
        rows.append({"paper": c.paper, "claim_id": c.id, "claim": c.sentence, "criterion": c.criterion,
                     "paper_value": c.paper_value, "measured": est.value, "ci_low": est.ci_low,
                     "ci_high": est.ci_high, "n": est.n, "verdict": v, "note": note, "statistic": c.statistic,
                     "threshold": c.threshold, "why": c.why, "params": json.dumps(c.params, sort_keys=True)})
    return pd.DataFrame(rows, columns=[*CLAIM_COLUMNS, "note", "statistic", "threshold", "why", "params"])
