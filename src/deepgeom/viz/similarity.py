"""Figures for representation similarity (Nguyen, Raghu, Kornblith 2021 style).

* :func:`plot_cka_heatmap` — layer × layer CKA, origin lower-left as in the paper, layer names on the
  axes, colorbar, block spans outlined (within one model).
* :func:`plot_pc1_fraction` — variance fraction of each layer's first principal component.

Plots take result objects and return figures; save them with :func:`deepgeom.viz._common.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.blocks import Block, find_blocks
from ..analysis.cka_result import CKAResult
from ..errors import InputError
from ._common import plt, save_figure

__all__ = ["plot_cka_heatmap", "plot_pc1_fraction", "save_figure"]


def _tick_labels(names: Sequence[str], max_ticks: int) -> tuple[np.ndarray, list[str]]:
    idx = np.arange(len(names))
    if len(names) > max_ticks:
        idx = np.unique(np.linspace(0, len(names) - 1, max_ticks).round().astype(int))
    return idx, [str(names[i]) for i in idx]


def plot_cka_heatmap(result: CKAResult, *, blocks: bool | Sequence[Block] = True, threshold: float = 0.9,
                     pc1_fraction: Mapping[str, float] | None = None, title: str | None = None, cmap: str = "magma", vmin: float = 0.0, vmax: float = 1.0,
                     annotate: bool | None = None, max_ticks: int = 40, ax: Any = None,
                     label_a: str = "model A", label_b: str | None = None):
    """CKA heatmap: rows = layers of A (y axis, first layer at the bottom), columns = layers of B.

    Args:
        result: a :class:`~deepgeom.analysis.similarity.CKAResult`.
        blocks: True → outline the blocks :func:`find_blocks` finds at ``threshold`` (within-model only)
            with ``pc1_fraction`` (default: the fractions a ``remove_pc1=True`` result carries; without
            any, runs of high CKA alone are outlined); a list of :class:`Block` to draw those; False → none.
        annotate: write each value in its cell (default: when both axes have ≤ 12 layers).
        max_ticks: at most this many tick labels per axis (evenly thinned beyond).

    Returns:
        The matplotlib Figure.
    """
    if not isinstance(result, CKAResult):
        raise InputError(f"plot_cka_heatmap takes a CKAResult; got {type(result).__name__}")
    M = result.values
    if ax is None:
        w = min(12.0, 3.0 + 0.35 * M.shape[1])
        h = min(11.0, 2.5 + 0.35 * M.shape[0])
        fig, ax = plt.subplots(figsize=(max(w, 4.5), max(h, 4.0)))
    else:
        fig = ax.figure
    im = ax.imshow(M, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    xi, xl = _tick_labels(result.layers_b, max_ticks)
    yi, yl = _tick_labels(result.layers_a, max_ticks)
    ax.set_xticks(xi)
    ax.set_xticklabels(xl, rotation=90, fontsize=7)
    ax.set_yticks(yi)
    ax.set_yticklabels(yl, fontsize=7)
    lb = label_b or (label_a if result.within else "model B")
    ax.set_xlabel(f"layer ({lb})")
    ax.set_ylabel(f"layer ({label_a})")
    kind = f"{result.kernel} CKA" + (" (minibatch)" if result.minibatch else "")
    if result.pc1_removed:
        kind += ", first PC removed"
    ax.set_title(title or f"{kind}, n = {result.n}", fontsize=10)
    fig.colorbar(im, ax=ax, label="CKA", fraction=0.046, pad=0.04)
    if annotate is None:
        annotate = M.shape[0] <= 12 and M.shape[1] <= 12
    if annotate:
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                v = M[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if v > 0.6 * (vmax - vmin) + vmin else "white")
    spans: Sequence[Block] = []
    if blocks is True and result.within:
        pc1 = pc1_fraction if pc1_fraction is not None else (result.pc1_fraction_a or False)
        spans = find_blocks(result, threshold=threshold, pc1_fraction=pc1)
    elif blocks not in (True, False, None):
        spans = list(blocks)  # type: ignore[arg-type]
    for b in spans:
        ax.add_patch(plt.Rectangle((b.start - 0.5, b.start - 0.5), b.size, b.size, fill=False,
                                   edgecolor="cyan", linewidth=2.0, linestyle="--"))
    fig.tight_layout()
    return fig


def plot_pc1_fraction(data: CKAResult | pd.DataFrame | Mapping[str, float], *, ax: Any = None,
                      title: str | None = None, label: str | None = None):
    """First-PC variance fraction per layer (Nguyen et al. 2021: high inside the block structure).

    Accepts a :class:`CKAResult` computed with ``remove_pc1=True`` (both models drawn when they
    differ), the DataFrame of :func:`~deepgeom.analysis.similarity.pc1_fractions`, or ``{layer: fraction}``.
    """
    series: list[tuple[str, list[str], list[float], list[float]]] = []
    if isinstance(data, CKAResult):
        if data.pc1_fraction_a is None:
            raise InputError("this CKAResult has no PC1 fractions: compute it with remove_pc1=True")
        series.append((label or "model A", data.layers_a, data.depth_a, [data.pc1_fraction_a[n] for n in data.layers_a]))
        if not data.within and data.pc1_fraction_b is not None:
            series.append(("model B", data.layers_b, data.depth_b, [data.pc1_fraction_b[n] for n in data.layers_b]))
    elif isinstance(data, pd.DataFrame):
        if not {"layer", "pc1_fraction"} <= set(data.columns):
            raise InputError("the DataFrame needs columns 'layer' and 'pc1_fraction' (see pc1_fractions)")
        depth = list(data["relative_depth"]) if "relative_depth" in data else list(np.linspace(0, 1, len(data)))
        series.append((label or "", list(map(str, data["layer"])), depth, list(data["pc1_fraction"])))
    elif isinstance(data, Mapping):
        names = list(data)
        series.append((label or "", names, list(np.linspace(0, 1, len(names))), [float(data[n]) for n in names]))
    else:
        raise InputError(f"plot_pc1_fraction takes a CKAResult, DataFrame or mapping; got {type(data).__name__}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
    else:
        fig = ax.figure
    for name, _layers, depth, frac in series:
        ax.plot(depth, frac, marker="o", label=name or None)
    if len(series) == 1:
        layers, depth = series[0][1], series[0][2]
        idx, labels = _tick_labels(layers, 30)
        ax.set_xticks([depth[i] for i in idx])
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_xlabel("layer")
    else:
        ax.set_xlabel("relative depth")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("variance fraction of PC 1")
    ax.set_title(title or "first principal component per layer", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
