"""The claims table as HTML: shared by study reports and the reproduction report."""

from __future__ import annotations

import html
import math

import pandas as pd

__all__ = ["claims_html", "fmt_interval"]


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    a = abs(float(v))
    return f"{v:.3g}" if a < 0.01 or a >= 1000 else f"{v:.2f}"


def fmt_interval(measured, low, high) -> str:
    """``value [low, high]`` with 3 significant digits (– where undefined)."""
    return f"{_num(measured)} [{_num(low)}, {_num(high)}]"


def claims_html(df: pd.DataFrame) -> str:
    """A claims table (``deepgeom.claims.evaluate_claims`` output) with the verdict rule stated above it."""
    counts = df["verdict"].value_counts().to_dict()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("holds", "fails", "inconclusive"))
    head = "".join(f"<th>{c}</th>" for c in ("paper", "claim", "criterion", "paper's value", "measured [95% CI]",
                                             "n", "verdict", "note"))
    rows = "".join(
        f'<tr class="v-{r.verdict}"><td>{html.escape(r.paper)} ({html.escape(str(r.claim_id))})</td>'
        f"<td>{html.escape(r.claim)}</td><td>{html.escape(r.criterion)}</td><td>{html.escape(str(r.paper_value))}</td>"
        f"<td>{fmt_interval(r.measured, r.ci_low, r.ci_high)}</td><td>{r.n}</td><td><b>{r.verdict}</b></td>"
        f"<td>{html.escape(str(r.note))}</td></tr>" for r in df.itertuples())
    return ('<p class="note">Each claim was written down with its criterion before the run (in the config). '
            "The verdict is read off the 95% interval: <b>holds</b> if it lies entirely on the claimed side of "
            "the threshold, <b>fails</b> if entirely on the other side, <b>inconclusive</b> if it straddles it "
            f"or a precondition is unmet. {summary}.</p>"
            f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
