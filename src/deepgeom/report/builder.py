"""Build the static HTML report of a study directory (``index.html`` + PNG/SVG figures beside it).

The report reads only what :func:`deepgeom.studies.run_study` wrote — ``study.json``, ``config.yaml``,
``tables/*.parquet`` and the per-unit artifacts — so it can be rebuilt at any time without recomputing
anything. Each section draws its figures with the ``deepgeom.viz`` modules and lists its key numbers
as HTML tables; a section whose analysis was not part of the study (or whose table is missing) says
"not run" and why, instead of failing the whole report.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import string
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..studies._io import atomic_write_text

__all__ = ["build_report", "ReportContext", "NotRun", "SECTIONS"]


class NotRun(Exception):
    """A report section cannot be drawn (analysis not in the study, table missing); says why."""


class ReportContext:
    """What a section sees: the study directory, its tables, metadata, and a figure writer."""

    def __init__(self, study_dir: Path, report_dir: Path):
        self.study_dir = study_dir
        self.report_dir = report_dir
        self.fig_dir = report_dir / "figures"
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        self.meta: dict = json.loads((study_dir / "study.json").read_text())
        cfg = study_dir / "config.yaml"
        self.config_text = cfg.read_text() if cfg.is_file() else ""
        self._tables: dict[str, pd.DataFrame] = {}
        self.figures: list[Path] = []
        self.problems: list[str] = []

    # ---------------------------------------------------------------- data
    def has_table(self, name: str) -> bool:
        return (self.study_dir / "tables" / f"{name}.parquet").is_file()

    def table(self, name: str, analysis: str | None = None) -> pd.DataFrame:
        """An aggregated study table; :class:`NotRun` naming the analysis that makes it when missing."""
        if name not in self._tables:
            path = self.study_dir / "tables" / f"{name}.parquet"
            if not path.is_file():
                why = f"analysis {analysis!r} is not part of this study" if analysis and analysis not in \
                    self.meta.get("analyses", {}) else f"table {name!r} was not produced"
                raise NotRun(why)
            self._tables[name] = pd.read_parquet(path)
        return self._tables[name].copy()

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run: sweep coordinates, label, final train/test accuracy."""
        runs = pd.DataFrame(self.meta.get("runs", []))
        if runs.empty:
            return runs
        if self.has_table("history"):
            h = self.table("history")
            last = h.sort_values("epoch").groupby("run").tail(1).set_index("run")
            for col in ("epoch", "train_acc", "test_acc"):
                if col in last.columns:
                    runs[f"final_{col}" if col != "epoch" else "epochs"] = runs["run"].map(last[col])
        return runs

    def label_of(self, run_key: str) -> str:
        for r in self.meta.get("runs", []):
            if r["run"] == run_key:
                return r["label"]
        return run_key

    # ---------------------------------------------------------------- figures
    def figure(self, name: str, draw: Callable[[], Any], caption: str) -> str:
        """Draw with ``draw() -> matplotlib Figure``, save PNG+SVG under figures/, return the HTML."""
        from ..viz._common import save_figure

        fig = draw()
        paths = save_figure(fig, self.fig_dir / name)
        self.figures.extend(paths)
        png = next(p for p in paths if p.suffix == ".png")
        svg = next((p for p in paths if p.suffix == ".svg"), None)
        rel = png.relative_to(self.report_dir).as_posix()
        link = f' (<a href="{svg.relative_to(self.report_dir).as_posix()}">SVG</a>)' if svg else ""
        return (f'<figure><img src="{rel}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>")


# -------------------------------------------------------------------------------------- html helpers
def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        a = abs(float(v))
        if a != 0 and (a < 1e-3 or a >= 1e5):
            return f"{float(v):.3g}"
        return f"{float(v):.3f}".rstrip("0").rstrip(".") if a < 100 else f"{float(v):.1f}"
    return html.escape(str(v))


def html_table(df: pd.DataFrame, *, max_rows: int = 200) -> str:
    """A plain HTML table of a DataFrame (numbers formatted to 3 decimals), truncated to ``max_rows``."""
    if df.empty:
        return '<p class="note">(no rows)</p>'
    shown = df.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    more = f'<p class="note">… {len(df) - max_rows} more rows in the CSV.</p>' if len(df) > max_rows else ""
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{more}'


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{text}</p>' if cls else f"<p>{text}</p>"


# -------------------------------------------------------------------------------------- sections
def _section_overview(ctx: ReportContext) -> str:
    runs = ctx.runs
    parts = []
    if ctx.meta.get("description"):
        parts.append(_p(html.escape(ctx.meta["description"])))
    units = ctx.meta.get("units", [])
    status = pd.Series([u["status"] for u in units]).value_counts().to_dict() if units else {}
    parts.append(_p(f"{len(runs)} trained runs, {len(units)} units of work "
                    f"({', '.join(f'{v} {k}' for k, v in sorted(status.items()))}). "
                    "Every number below is read from <code>tables/</code> in the study directory "
                    "(CSV and Parquet), so it can be checked or re-plotted independently.", "note"))
    cols = [c for c in ("label", "dataset", "model", "width", "depth", "seed", "shuffle_fraction", "epochs",
                        "final_train_acc", "final_test_acc") if c in runs.columns]
    parts.append(html_table(runs[cols]))
    if ctx.has_table("history"):
        from .figures import plot_learning_curves

        parts.append(ctx.figure("learning_curves", lambda: plot_learning_curves(ctx.table("history"), ctx),
                                "Train (dashed) and test (solid) accuracy per epoch; train accuracy of "
                                "shuffled-label runs is measured against the shuffled labels."))
    return "\n".join(parts)


SectionFn = Callable[[ReportContext], str]

#: (anchor, title, function) in report order; the functions live in :mod:`.sections`.
SECTIONS: list[tuple[str, str, SectionFn]] = []


def _register_sections() -> None:
    from . import sections as s

    SECTIONS[:] = [
        ("overview", "Runs", _section_overview),
        ("findings", "Pre-registered claims and verdicts", s.section_findings),
        ("id-profile", "Intrinsic dimension over relative depth", s.section_id_profile),
        ("id-accuracy", "Last-hidden-layer ID vs test accuracy", s.section_id_accuracy),
        ("id-training", "Intrinsic dimension during training", s.section_id_training),
        ("cka", "CKA similarity and block structure", s.section_cka),
        ("cka-across", "CKA across models", s.section_cka_across),
        ("spectrum", "Feature-kernel spectrum through training", s.section_spectrum),
        ("collapse", "Neural collapse", s.section_collapse),
        ("predictions", "Prediction comparisons", s.section_predictions),
        ("config", "Configuration and provenance", s.section_config),
    ]


def build_report(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the study's HTML report and return the path of ``index.html``.

    Args:
        study_dir: a directory written by :func:`deepgeom.studies.run_study` (holds ``study.json``).
        out_dir: where ``index.html`` and ``figures/`` go (default ``<study_dir>/report``).

    The page is static (no JavaScript); figures are PNG files next to it with SVG copies, tables are
    HTML. Sections: runs and learning curves; ID profile over relative depth (trained, untrained and
    shuffled-label networks, TwoNN and PC-ID — Ansuini et al. 2019); last-hidden-layer ID vs test
    accuracy; ID during training; CKA heatmaps with block spans and across models (Nguyen et al. 2021);
    feature-kernel spectrum through training with the dominant count and MF/EF call (Nam et al. 2024);
    neural-collapse metrics (Papyan et al. 2020); prediction comparisons; the config, library versions
    and timestamps. A section that cannot be drawn says "not run" and why.
    """
    study = Path(study_dir)
    if not (study / "study.json").is_file():
        raise InputError(f"{str(study)!r} is not a study directory (no study.json); run `deepgeom study` first")
    report_dir = Path(out_dir) if out_dir is not None else study / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(study, report_dir)
    _register_sections()
    body, nav = [], []
    for anchor, title, fn in SECTIONS:
        try:
            content = fn(ctx)
        except NotRun as exc:
            content = f'<p class="notrun">Not run: {html.escape(str(exc))}.</p>'
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            ctx.problems.append(f"{title}: {type(exc).__name__}: {exc}")
            detail = html.escape("".join(traceback.format_exception_only(type(exc), exc)).strip())
            content = f'<p class="notrun">Not run: this section failed to draw ({detail}).</p>'
        nav.append(f'<a href="#{anchor}">{html.escape(title)}</a>')
        body.append(f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{content}\n</section>')
    meta = ctx.meta
    from .. import __version__

    built = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    subtitle = (f"<p>Study <code>{html.escape(str(study))}</code> · started {html.escape(str(meta.get('started')))}"
                f" · finished {html.escape(str(meta.get('finished')))} · report built {built}</p>")
    template = string.Template((Path(__file__).with_name("template.html")).read_text())
    page = template.substitute(
        title=html.escape(f"deepgeom study: {meta.get('name', study.name)}"),
        subtitle=subtitle,
        nav="\n".join(nav),
        body="\n".join(body),
        version=html.escape(__version__),
    )
    index = report_dir / "index.html"
    atomic_write_text(index, page)
    return index
