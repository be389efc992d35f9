"""Write a reproduction's outputs: the combined claims table, the HTML report and REPRODUCTION.md.

Everything is read back from ``<out>/<paper>/claims.parquet``, ``reproduction.json`` and ``figures/``,
so the outputs can be rebuilt at any time, and papers reproduced in separate calls into the same
directory appear together.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import string
from pathlib import Path

import pandas as pd

from .._io import atomic_write_text, write_table
from .._version import __version__
from ..claims import CLAIM_COLUMNS
from ..report.claims import claims_html, fmt_interval
from .figures import CAPTIONS, CLAIM_FIGURES

__all__ = ["write_outputs", "markdown", "splice_markdown"]


def _papers(out: Path) -> list[tuple[str, pd.DataFrame, dict]]:
    found = []
    for d in sorted(p for p in out.iterdir() if (p / "claims.parquet").is_file()):
        meta = json.loads((d / "reproduction.json").read_text()) if (d / "reproduction.json").is_file() else {}
        found.append((d.name, pd.read_parquet(d / "claims.parquet"), meta))
    return found


def _interval(r) -> str:
    return fmt_interval(r.measured, r.ci_low, r.ci_high)


def markdown(out: Path, figure_link=None) -> str:
    """REPRODUCTION.md text for every paper reproduced under ``out``.

    ``figure_link(paper, png_path) -> str`` gives each figure's link (default: relative to ``out``).
    """
    link = figure_link or (lambda paper, png: f"{paper}/figures/{png.name}")
    parts = []
    for paper, df, meta in _papers(out):
        figs = {p.stem: p for p in sorted((out / paper / "figures").glob("*.png"))}
        mode = "quick mode (a machinery check, not a reproduction)" if meta.get("quick") else "full run"
        parts.append(f"<!-- BEGIN {paper} -->\n## {meta.get('title', paper)}\n")
        cpu = f", CPU time {meta['cpu_seconds']} s" if meta.get("cpu_seconds") is not None else ""
        load = f", load average at the end {meta['load_average']}" if meta.get("load_average") else ""
        parts.append(f"`{meta.get('command', '')}` — {mode}; started {meta.get('started', '?')}, wall time "
                     f"{meta.get('wall_seconds', '?')} s{cpu} on {meta.get('cpus', '?')} × {meta.get('cpu', '?')} "
                     f"({meta.get('workers', '?')} workers × {meta.get('threads_per_worker', '?')} thread{load}). "
                     + (f"{meta['machine_note']} " if meta.get("machine_note") else "")
                     + "".join(f"It resumed an earlier invocation (started {e.get('started', '?')}, wall time "
                               f"{e.get('wall_seconds', '?')} s, CPU time {e.get('cpu_seconds', '?')} s), which "
                               "computed the rest. " for e in meta.get("earlier_runs", []))
                     + "Verdicts: "
                     + ", ".join(f"{(df['verdict'] == v).sum()} {v}" for v in ("holds", "fails", "inconclusive"))
                     + ".\n")
        parts.append("| id | the paper's claim | the paper's value | criterion (pre-registered) | measured [95% CI] "
                     "| n | verdict | figure |")
        parts.append("|---|---|---|---|---|---|---|---|")

        def cell(s) -> str:
            return str(s).replace("|", "/").replace("\n", " ")

        for r in df.itertuples():
            fig = CLAIM_FIGURES.get(r.statistic)
            fig_cell = f"[{fig}]({link(paper, figs[fig])})" if fig in figs else "–"
            parts.append(f"| {r.claim_id} | {cell(r.claim)} | {cell(r.paper_value)} | {cell(r.criterion)} | "
                         f"{_interval(r)} | {r.n} | **{r.verdict}** | {fig_cell} |")
        parts.append("\nWhat each number is made of:\n")
        for r in df.itertuples():
            parts.append(f"- **{r.claim_id}** ({r.verdict}): {cell(r.note)}")
        if figs:
            parts.append("\nFigures:\n")
            for stem, png in figs.items():
                parts.append(f"- [{stem}]({link(paper, png)}) — {CAPTIONS.get(stem, '')}")
        parts.append(f"\n<!-- END {paper} -->\n")
    return "\n".join(parts)


def splice_markdown(target: Path, out: Path, figure_dir: Path | None = None) -> Path:
    """Replace (or append) each reproduced paper's section of ``target`` (between its BEGIN/END markers),
    copying the figures to ``figure_dir/<paper>/`` (default ``docs/reproduction`` beside ``target``) so the
    file's links work from the repository."""
    target = Path(target)
    figure_dir = Path(figure_dir) if figure_dir is not None else target.parent / "docs" / "reproduction"
    for paper, _, _ in _papers(out):
        dest = figure_dir / paper
        dest.mkdir(parents=True, exist_ok=True)
        for png in (out / paper / "figures").glob("*.png"):
            shutil.copyfile(png, dest / png.name)

    def link(paper: str, png: Path) -> str:
        return os.path.relpath(figure_dir / paper / png.name, target.parent).replace(os.sep, "/")

    text = target.read_text(encoding="utf-8") if target.is_file() else "# Reproductions\n\n"
    new = markdown(out, link)
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
    template = string.Template((Path(__file__).parent.parent / "report" / "template.html").read_text())
    page = template.substitute(title="deepgeom reproduction", subtitle=f"<p>Directory <code>{html.escape(str(out))}</code></p>",
                               nav="\n".join(nav), body="\n".join(body), version=html.escape(__version__))
    atomic_write_text(report / "index.html", page)
    atomic_write_text(out / "REPRODUCTION.md", "# Reproductions\n\n" + markdown(out))
    return report / "index.html"
