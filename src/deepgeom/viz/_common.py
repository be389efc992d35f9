"""Shared figure plumbing: a headless backend and saving as PNG and SVG."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

from .._io import atomic_write  # noqa: E402

__all__ = ["plt", "save_figure", "finish_figure"]


def save_figure(fig, path: str | Path, formats: Iterable[str] = ("png", "svg"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (path's own suffix is replaced); close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    # the tight bounding box once for every format: savefig(bbox_inches="tight") would lay the whole
    # figure out again for each file, most of the time of saving a PNG and an SVG (BENCHMARKS.md)
    formats = tuple(formats)
    bbox: object = "tight"
    if len(formats) > 1:
        fig.draw_without_rendering()
        bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
    for fmt in formats:
        p = path.with_suffix("." + fmt)
        atomic_write(p, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches=bbox))
        out.append(p)
    plt.close(fig)
    return out


def finish_figure(fig, ax, *, title: str | None = None, path: str | Path | None = None):
    """The common ending of a plot function: optional title, tight layout, saved (PNG + SVG) if ``path``."""
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
