"""Write a reproduction's outputs: the combined claims table, the HTML report and REPRODUCTION.md.

Everything is read back from ``<out>/<paper>/claims.parquet``, ``reproduction.json`` and ``figures/``,
so the outputs can be rebuilt at any time, and papers reproduced in separate calls into the same
directory appear together.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import string
from pathlib import Path

import pandas as pd

from ..claims import CLAIM_COLUMNS
from ..report.claims import claims_html, fmt_interval
from ..studies._io import atomic_write_text, write_table
from .figures import CAPTIONS

__all__ = ["write_outputs", "markdown", "splice_markdown"]


def _papers(out: Path) -> list[tuple[str, pd.DataFrame, dict]]:
    found = []
    for d in sorted(p for p in out.iterdir() if (p / "claims.parquet").is_file()):
        meta = json.loads((d / "reproduction.json").read_text()) if (d / "reproduction.json").is_file() else {}
        found.append((d.name, pd.read_parquet(d / "claims.parquet"), meta))
    return found


def _interval(r) -> str:
    return fmt_interval(r.measured, r.ci_low, r.ci_high)


def markdown(out: Path) -> str:
    """REPRODUCTION.md text for every paper reproduced under ``out``."""
    parts = []
    for paper, df, meta in _papers(out):
        figs = sorted((out / paper / "figures").glob("*.png"))
        parts.append(f"<!-- BEGIN {paper} -->\n## {meta.get('title', paper)}\n")
        parts.append(f"Run: `{meta.get('command', '')}` — {'quick mode (machinery check, not a reproduction)' if meta.get('quick') else 'full run'}; "
                     f"started {meta.get('started', '?')}, wall time {meta.get('wall_seconds', '?')} s on "
                     f"{meta.get('cpus', '?')} × {meta.get('cpu', '?')} ({meta.get('workers', '?')} workers × "
                     f"{meta.get('threads_per_worker', '?')} thread). Verdicts: "
                     + ", ".join(f"{(df['verdict'] == v).sum()} {v}" for v in ("holds", "fails", "inconclusive"))
                     + ".\n")
        parts.append("| id | paper's claim | paper's value | criterion (pre-registered) | measured [95% CI] | n | verdict |")
        parts.append("|---|---|---|---|---|---|---|")
        for r in df.itertuples():
            cell = lambda s: str(s).replace("|", "/").replace("\n", " ")  # noqa: E731
            parts.append(f"| {r.claim_id} | {cell(r.claim)} | {cell(r.paper_value)} | {cell(r.criterion)} | "
                         f"{_interval(r)} | {r.n} | **{r.verdict}** |")
        parts.append("\nNotes per claim (what the number is made of):\n")
        for r in df.itertuples():
            parts.append(f"- **{r.claim_id}** ({r.verdict}): {str(r.note)}")
        if figs:
            parts.append("\nFigures (in the run's `" + f"{paper}/figures/` directory):\n")
            for f in figs:
                parts.append(f"- `{f.name}` — {CAPTIONS.get(f.stem, '')}")
        parts.append(f"\n<!-- END {paper} -->\n")
    return "\n".join(parts)


def splice_markdown(target: Path, out: Path) -> Path:
    """Replace (or append) each reproduced paper's section of ``target`` (between its BEGIN/END markers)."""
    text = target.read_text(encoding="utf-8") if target.is_file() else "# Reproductions\n\n"
    new = markdown(out)
    for m in re.finditer(r"<!-- BEGIN (\S+) -->.*?<!-- END \1 -->\n", new, flags=re.S):
        block, paper = m.group(0), m.group(1)
        pat = re.compile(rf"<!-- BEGIN {re.escape(paper)} -->.*?<!-- END {re.escape(paper)} -->\n?", flags=re.S)
        text = pat.sub(lambda _, b=block: b, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block
    atomic_write_text(target, text)
    return target


def write_outputs(out: Path) -> Path:
    """Write ``claims.csv|parquet``, ``report/index.html`` and ``REPRODUCTION.md`` under ``out``."""
    found = _papers(out)
    all_claims = (pd.concat([df for _, df, _ in found], ignore_index=True) if found
                  else pd.DataFrame(columns=CLAIM_COLUMNS))
    write_table(all_claims, out / "claims")
    report = out / "report"
    (report / "figures").mkdir(parents=True, exist_ok=True)
    body = [f'<section id="claims"><h2>Claims and verdicts</h2>{claims_html(all_claims)}</section>']
    nav = ['<a href="#claims">Claims and verdicts</a>']
    for paper, _, meta in found:
        figs = []
        for png in sorted((out / paper / "figures").glob("*.png")):
            dest = report / "figures" / f"{paper}-{png.name}"
            shutil.copyfile(png, dest)
            svg = png.with_suffix(".svg")
            link = ""
            if svg.is_file():
                shutil.copyfile(svg, dest.with_suffix(".svg"))
                link = f' (<a href="figures/{dest.with_suffix(".svg").name}">SVG</a>)'
            cap = html.escape(CAPTIONS.get(png.stem, png.stem))
            figs.append(f'<figure><img src="figures/{dest.name}" alt="{cap}"><figcaption>{cap}{link}</figcaption></figure>')
        run = (f"<p class=\"note\">{'Quick mode: tiny settings that test the machinery; not a reproduction. ' if meta.get('quick') else ''}"
               f"<code>{html.escape(meta.get('command', ''))}</code> · wall time {meta.get('wall_seconds', '?')} s on "
               f"{meta.get('cpus', '?')} × {html.escape(str(meta.get('cpu', '?')))}</p>")
        body.append(f'<section id="{paper}"><h2>{html.escape(meta.get("title", paper))}</h2>{run}{"".join(figs)}</section>')
        nav.append(f'<a href="#{paper}">{html.escape(paper)}</a>')
    from .. import __version__

    template = string.Template((Path(__file__).parent.parent / "report" / "template.html").read_text())
    page = template.substitute(title="deepgeom reproduction", subtitle=f"<p>Directory <code>{html.escape(str(out))}</code></p>",
                               nav="\n".join(nav), body="\n".join(body), version=html.escape(__version__))
    atomic_write_text(report / "index.html", page)
    atomic_write_text(out / "REPRODUCTION.md", "# Reproductions\n\n" + markdown(out))
    return report / "index.html"
