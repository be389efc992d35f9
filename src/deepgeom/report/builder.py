"""Build the static HTML report of a study directory (``index.html`` + PNG/SVG figures beside it).

The report reads only what :func:`deepgeom.studies.run_study` wrote — ``study.json``, ``config.yaml``,
``tables/*.parquet`` and the per-unit artifacts — so it can be rebuilt at any time without recomputing
anything. Each section draws its figures with the ``deepgeom.viz`` modules and lists its key numbers
as HTML tables; a section whose analysis was not part of the study (or whose table is missing) says
"not run" and why, instead of failing the whole report.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import os
import string
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .._io import atomic_write_text
from .._version import __version__
from ..errors import InputError
from . import sections as s
from .context import NotRun, ReportContext, _p, _placeholder, html_table  # noqa: F401 - the names this module had
from .swept import section_swept

__all__ = ["build_report", "build_report_details", "ReportBuild", "ReportContext", "NotRun", "SECTIONS"]

SectionFn = Callable[[ReportContext], str]

#: (anchor, title, function) in report order; the functions live in :mod:`.sections` and :mod:`.swept`.
SECTIONS: list[tuple[str, str, SectionFn]] = [
    ("overview", "Runs", s.section_overview),
    ("findings", "Pre-registered claims and verdicts", s.section_findings),
    ("id-profile", "Intrinsic dimension over relative depth", s.section_id_profile),
    ("id-accuracy", "Last-hidden-layer ID vs test accuracy", s.section_id_accuracy),
    ("id-training", "Intrinsic dimension during training", s.section_id_training),
    ("cka", "CKA similarity and block structure", s.section_cka),
    ("cka-across", "CKA across models", s.section_cka_across),
    ("spectrum", "Feature-kernel spectrum through training", s.section_spectrum),
    ("collapse", "Neural collapse", s.section_collapse),
    ("predictions", "Prediction comparisons", s.section_predictions),
    ("swept", "Along the swept axes", section_swept),
    ("config", "Configuration and provenance", s.section_config),
]


@dataclasses.dataclass
class ReportBuild:
    """What :func:`build_report_details` did: the page, the problems (failed sections or figures; the
    report is still written), the figure count and the wall time."""

    index: Path
    problems: list[str]
    n_figures: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems


def build_report(study_dir: str | Path, out_dir: str | Path | None = None, *, progress: bool = False,
                 jobs: int | None = None, svg: bool = False) -> Path:
    """Write the study's HTML report and return the path of ``index.html``.

    Args:
        study_dir: a directory written by :func:`deepgeom.studies.run_study` (holds ``study.json``).
        out_dir: where ``index.html`` and ``figures/`` go (default ``<study_dir>/report``).
        progress: print each section and the figure count to stderr as they finish.
        jobs: processes that draw figures (default: the CPUs this process may use, at most 8).
        svg: also write an SVG copy of every figure (vector, for papers); it adds about half again to
            the time the figures take, so it is off by default.

    The page is static (no JavaScript); figures are PNG files next to it (with SVG copies when
    ``svg=True``), tables are HTML. Sections: runs and learning curves; ID profile over relative depth (trained, untrained and
    shuffled-label networks, TwoNN and PC-ID — Ansuini et al. 2019); last-hidden-layer ID vs test
    accuracy; ID during training; CKA heatmaps with block spans and across models (Nguyen et al. 2021);
    feature-kernel spectrum through training with the dominant count and MF/EF call (Nam et al. 2024);
    neural-collapse metrics (Papyan et al. 2020); prediction comparisons; measures along every swept
    axis (width, depth, label-shuffle fraction, seed); the config, library versions and timestamps. A
    section that cannot be drawn says "not run" and why; :func:`build_report_details` also returns
    the sections that failed.
    """
    return build_report_details(study_dir, out_dir, progress=progress, jobs=jobs, svg=svg).index


def _default_jobs() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def build_report_details(study_dir: str | Path, out_dir: str | Path | None = None, *, progress: bool = False,
                         jobs: int | None = None, svg: bool = False) -> ReportBuild:
    """:func:`build_report`, returning a :class:`ReportBuild` (index path, problems, figures, seconds)."""
    t0 = time.perf_counter()
    study = Path(study_dir)
    if not (study / "study.json").is_file():
        raise InputError(f"{str(study)!r} is not a study directory (no study.json); run `deepgeom study` first")
    report_dir = Path(out_dir) if out_dir is not None else study / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    jobs = _default_jobs() if jobs is None else max(1, int(jobs))
    ctx = ReportContext(study, report_dir, defer=True, svg=svg)
    body, nav = [], []
    for k, (anchor, title, fn) in enumerate(SECTIONS, 1):
        if anchor == "config":  # the last section lists every problem, figures' included: draw them first
            _fill(body, ctx.render_pending(jobs=jobs, progress=progress))
        ts = time.perf_counter()
        ctx.section = title
        try:
            content = fn(ctx)
        except NotRun as exc:
            content = f'<p class="notrun">Not run: {html.escape(str(exc))}.</p>'
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            ctx.problems.append(f"{title}: {type(exc).__name__}: {exc}")
            detail = html.escape("".join(traceback.format_exception_only(type(exc), exc)).strip())
            content = f'<p class="notrun">Not run: this section failed to draw ({detail}).</p>'
        ctx.start_pending(jobs)  # this section's figures draw in the background while the next builds
        nav.append(f'<a href="#{anchor}">{html.escape(title)}</a>')
        body.append(f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{content}\n</section>')
        if progress:
            print(f"report: [{k}/{len(SECTIONS)}] {title} ({time.perf_counter() - ts:.1f} s)", file=sys.stderr,
                  flush=True)
    _fill(body, ctx.render_pending(jobs=jobs, progress=progress))
    meta = ctx.meta
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
    n_png = sum(1 for p in ctx.figures if p.suffix == ".png")
    return ReportBuild(index=index, problems=list(ctx.problems), n_figures=n_png,
                       seconds=time.perf_counter() - t0)


def _fill(body: list[str], figures: dict[int, str]) -> None:
    """Put drawn figures' HTML in place of their placeholders."""
    if not figures:
        return
    for j, part in enumerate(body):
        if "<!--deepgeom-figure:" in part:
            for i, fig_html in figures.items():
                part = part.replace(_placeholder(i), fig_html)
            body[j] = part
