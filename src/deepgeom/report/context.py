"""What a report section works with: :class:`ReportContext` (the study's tables, its runs, figures
drawn now or in forked workers), :class:`NotRun`, and the HTML helpers."""

from __future__ import annotations

import html
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..viz import plt, save_figure

__all__ = ["ReportContext", "NotRun", "html_table"]


class NotRun(Exception):
    """A report section cannot be drawn (analysis not in the study, table missing); says why."""


class ReportContext:
    """What a section sees: the study directory, its tables, metadata, and a figure writer."""

    def __init__(self, study_dir: Path, report_dir: Path, *, defer: bool = False, svg: bool = True):
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
        # with defer=True, figure() only queues (name, draw, caption, section) and returns a placeholder;
        # render_pending() draws the queue, in parallel processes where it can
        self.defer = defer
        self.formats = ("png", "svg") if svg else ("png",)
        self.section = ""
        self._pending: list[tuple[str, Callable[[], Any], str, str]] = []
        self._started = 0
        self._runner: _ForkRunner | None = None

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
        """Draw with ``draw() -> matplotlib Figure``, save PNG+SVG under figures/, return the HTML (with
        ``defer=True``: queue the drawing and return a placeholder that :meth:`render_pending` fills)."""
        if self.defer:
            self._pending.append((name, draw, caption, self.section))
            return _placeholder(len(self._pending) - 1)
        return self._figure_html(_draw_and_save(self.fig_dir, name, draw, self.formats), caption)

    def _figure_html(self, paths: list[Path], caption: str) -> str:
        self.figures.extend(paths)
        png = next(p for p in paths if p.suffix == ".png")
        svg = next((p for p in paths if p.suffix == ".svg"), None)
        rel = png.relative_to(self.report_dir).as_posix()
        link = f' (<a href="{svg.relative_to(self.report_dir).as_posix()}">SVG</a>)' if svg else ""
        return (f'<figure><img src="{rel}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>")


    def start_pending(self, jobs: int) -> None:
        """Start drawing the queued figures in forked child processes (at most ``jobs`` at a time)
        while the caller goes on; :meth:`render_pending` collects them. Linux only (fork); elsewhere,
        and with ``jobs=1``, figures are drawn in :meth:`render_pending`."""
        if jobs <= 1 or not sys.platform.startswith("linux"):
            return
        if self._runner is None:
            self._runner = _ForkRunner(jobs)
        for i in range(self._started, len(self._pending)):
            name, draw, _caption, _section = self._pending[i]
            self._runner.submit(i, self.fig_dir, name, draw, self.formats)
        self._started = len(self._pending)

    def render_pending(self, *, jobs: int = 1, progress: bool = False) -> dict[int, str]:
        """Draw every queued figure not yet drawn and wait for those started; returns placeholder
        index → HTML. A figure that fails becomes a note and a problem of its section, like a failing
        section."""
        self.start_pending(jobs)
        pending = self._pending
        results: dict[int, list[Path] | str] = {}
        t0 = time.perf_counter()

        def tick(done: int) -> None:
            if progress and (done == len(pending) or done % 10 == 0):
                print(f"report: figures {done}/{len(pending)} ({time.perf_counter() - t0:.1f} s)",
                      file=sys.stderr, flush=True)

        if self._runner is not None:
            for i, res in self._runner.wait_all(tick):
                results[i] = res
        for i in range(len(pending)):
            if i not in results:
                name, draw, _caption, _section = pending[i]
                results[i] = _render(self.fig_dir, name, draw, self.formats)
                tick(len(results))
        self._pending, self._started = [], 0
        html_by_index = {}
        for i, (name, _draw, caption, section) in enumerate(pending):
            res = results[i]
            if isinstance(res, str):
                self.problems.append(f"{section}: figure {name}: {res}")
                html_by_index[i] = (f'<p class="notrun">Figure {html.escape(name)} failed to draw '
                                    f'({html.escape(res)}).</p>')
            else:
                html_by_index[i] = self._figure_html(res, caption)
        return html_by_index


class _ForkRunner:
    """Draw figures in forked children, ``jobs`` at a time: a child inherits the queued drawing
    closure and the tables it reads (nothing is pickled), saves the files and exits; the parent keeps
    building sections meanwhile. Errors come back through a pipe."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.running: dict[int, tuple[int, int, list[Path]]] = {}  # pid -> (index, read fd, paths)
        self.done: list[tuple[int, list[Path] | str]] = []
        _warm_matplotlib()  # fonts and the mathtext parser, loaded once and inherited by every child

    def submit(self, i: int, fig_dir: Path, name: str, draw: Callable[[], Any], formats: tuple[str, ...]) -> None:
        while len(self.running) >= self.jobs:
            self._reap_one()
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: draw, report an error through the pipe, never return into the caller
            code = 0
            try:
                os.close(r)
                res = _render(fig_dir, name, draw, formats)
                if isinstance(res, str):
                    os.write(w, res.encode()[:4000])
                    code = 1
            finally:
                os._exit(code)
        os.close(w)
        self.running[pid] = (i, r, [fig_dir / f"{name}.{fmt}" for fmt in formats])

    def _reap_one(self) -> None:
        pid = next(iter(self.running))  # oldest first; waiting on our own pids leaves others' children alone
        _, status = os.waitpid(pid, 0)
        i, r, paths = self.running.pop(pid)
        with os.fdopen(r, "rb") as f:
            err = f.read().decode(errors="replace")
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self.done.append((i, paths))
        else:
            self.done.append((i, err or f"the drawing process ended with status {status}"))

    def wait_all(self, tick: Callable[[int], None]) -> list[tuple[int, list[Path] | str]]:
        while self.running:
            self._reap_one()
            tick(len(self.done))
        out, self.done = self.done, []
        return out


def _warm_matplotlib() -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.semilogy([1, 2, 3], [1e-3, 1e-1, 10], label="x")
    ax.set_title("warm")
    ax.legend()
    fig.draw_without_rendering()
    plt.close(fig)


def _placeholder(i: int) -> str:
    return f"<!--deepgeom-figure:{i}-->"


def _draw_and_save(fig_dir: Path, name: str, draw: Callable[[], Any],
                   formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    if "svg" not in formats:  # no SVG from an earlier build left behind
        (fig_dir / f"{name}.svg").unlink(missing_ok=True)
    return save_figure(draw(), fig_dir / name, formats=formats)


def _render(fig_dir: Path, name: str, draw: Callable[[], Any], formats: tuple[str, ...]) -> list[Path] | str:
    try:
        return _draw_and_save(fig_dir, name, draw, formats)
    except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the others
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()


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
