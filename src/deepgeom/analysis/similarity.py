r"""Layer-by-layer representation similarity (Nguyen, Raghu, Kornblith, ICLR 2021).

* :func:`cka_matrix` — the L_a × L_b CKA heatmap between every pair of layers of one or two models in
  a **single pass** over the data: each batch is fed to both models, the per-batch activations are
  turned into U-centred kernels and added to running HSIC₁ sums (:class:`~deepgeom.analysis.streaming.MinibatchCKA`);
  nothing else is kept. Also from capture directories (streamed over row blocks of the ``.npy``
  memmaps), and a full-data (non-minibatch) form from N×N Gram matrices when they fit in memory.
* :func:`find_blocks` — the "block structure": spans of consecutive layers with high mutual CKA.
* :func:`pc1_fraction` / :func:`pc1_fractions` — variance fraction of each layer's first principal
  component; ``cka_matrix(..., remove_pc1=True)`` recomputes the heatmap with that component projected
  out (the paper's test that the block *is* the dominant component).
* :func:`best_match` — for each layer of model A, the most similar layer of model B.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from collections.abc import Iterator, Mapping, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import check_finite_values, check_matrix, check_positive_int
from ..capture import capture, load_capture, parse_bytes, resolve_layers, stream
from ..errors import InputError, UnknownNameError
from ..functional.cka import KERNELS, MIN_CKA_ROWS, centred_linear_kernel, gram_rbf, u_center
from ..functional.matrix import as_tensor, center_gram, unit_scaled
from ._layers import first_order, flat_rows, relative_depth
from .blocks import Block, best_match, find_blocks
from .cka_result import CKAResult
from .pc1 import PC1_MAX_DIM, StreamingPC1, pc1_fraction, pc1_fractions, remove_pc1_full
from .streaming import MinibatchCKA

__all__ = [
    "CKAResult",
    "HeatmapOptions",
    "Block",
    "cka_matrix",
    "cka_matrix_from_captures",
    "find_blocks",
    "pc1_fraction",
    "pc1_fractions",
    "best_match",
]

_MIN_BATCH = 4  # the unbiased HSIC estimator needs n >= 4


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise UnknownNameError("CKA kernel", kernel, list(KERNELS))


# ----------------------------------------------------------------------------------- data → batches
@dataclasses.dataclass(frozen=True)
class HeatmapOptions:
    """The settings :func:`cka_matrix` and :func:`cka_matrix_from_captures` share, validated once and
    handed as one object to the engines (see :func:`cka_matrix` for what each means)."""

    batch_size: int = 256
    kernel: str = "linear"
    sigma: float = 0.8
    minibatch: bool = True
    debiased: bool = False
    remove_pc1: bool = False
    pc1_max_dim: int = PC1_MAX_DIM
    compute_dtype: torch.dtype | str = "auto"
    device: str | torch.device = "cpu"
    memory_budget: int | str = "2GB"

    def __post_init__(self) -> None:
        _check_kernel(self.kernel)
        object.__setattr__(self, "batch_size", check_positive_int(self.batch_size, "batch_size", minimum=_MIN_BATCH))


def _model_batches(model_a: nn.Module, model_b: nn.Module | None, data: Any, layers_a: Any, layers_b: Any,
                   batch_size: int, device: Any, reduce: str, progress: bool,
                   ) -> tuple[list[str], list[str] | None, Iterator[tuple[dict, dict | None]]]:
    """Zip the streams of both models over the same data, checking every batch holds the same inputs."""
    names_a = resolve_layers(model_a, layers_a)
    names_b = resolve_layers(model_b, layers_b) if model_b is not None else None
    # with two models the batch inputs are recorded too, to check both streams saw the same examples
    req_a = names_a if ("input" in names_a or model_b is None) else ["input", *names_a]
    # copy=False: every batch is consumed before either model runs again (no copy of each activation)
    sa = stream(model_a, data, req_a, batch_size=batch_size, device=device, reduce=reduce, progress=progress,
                copy=False)
    sb = None
    if model_b is not None:
        req_b = names_b if "input" in names_b else ["input", *names_b]
        sb = stream(model_b, data, req_b, batch_size=batch_size, device=device, reduce=reduce, copy=False)

    def gen():
        if sb is None:
            for ba in sa:
                yield ba, None
                del ba  # no batch held while the stream runs the next forward pass
            return
        for k, (ba, bb) in enumerate(zip_longest(sa, sb)):
            if ba is None or bb is None:
                raise InputError(f"model A and model B got a different number of batches (one ran out at batch "
                                 f"{k}): they must see the same examples in the same order")
            same = (ba["input"].shape == bb["input"].shape and torch.equal(ba["input"], bb["input"])
                    and torch.equal(ba.index, bb.index))
            if not same:
                raise InputError(
                    f"model A and model B were fed different examples in batch {k}: the data must be read in one "
                    "fixed order (a shuffling sampler, or data that changes between passes, would pair "
                    "activations of different examples and give a meaningless CKA)")
            yield ba, bb
            del ba, bb

    return names_a, names_b, gen()


# ------------------------------------------------------------------------------------------- engine
def _minibatch_engine(batches: Iterator[tuple[Mapping, Mapping | None]], names_a: list[str],
                      names_b: list[str] | None, opts: HeatmapOptions, replay: Any,
                      ) -> tuple[np.ndarray, list[str], list[str] | None, int, dict | None, dict | None]:
    """Run the accumulator over the batches; with ``remove_pc1`` a first pass estimates the PCs and
    ``replay()`` provides a second, identical stream of batches."""
    pcs_a = pcs_b = None
    order_a: list[str] | None = None
    order_b: list[str] | None = None
    remove_pc1 = opts.remove_pc1
    if remove_pc1:
        pcs_a = StreamingPC1(names_a, opts.pc1_max_dim)
        pcs_b = StreamingPC1(names_b, opts.pc1_max_dim) if names_b is not None else None
        for ba, bb in batches:
            pcs_a.update(ba)
            if pcs_b is not None:
                pcs_b.update(bb)
        pcs_a.finish()
        if pcs_b is not None:
            pcs_b.finish()
        if pcs_a.iterative or (pcs_b is not None and pcs_b.iterative):
            for it in range(pcs_a.iterations):
                for ba, bb in replay():
                    pcs_a.iter_update(ba)
                    if pcs_b is not None:
                        pcs_b.iter_update(bb)
                pcs_a.iter_finish(last=it == pcs_a.iterations - 1)
                if pcs_b is not None:
                    pcs_b.iter_finish(last=it == pcs_a.iterations - 1)
        batches = replay()
    acc = MinibatchCKA(kernel=opts.kernel, sigma=opts.sigma, compute_dtype=opts.compute_dtype, device=opts.device)
    skipped = 0
    for ba, bb in batches:
        if order_a is None:
            order_a = first_order(ba, names_a)
            order_b = first_order(bb, names_b) if bb is not None else None
        rows = int(flat_rows(ba[order_a[0]]).shape[0])
        if rows < _MIN_BATCH:
            skipped += rows
            continue
        xs = [pcs_a.project(n, ba[n]) if pcs_a else ba[n] for n in order_a]
        ys = None if bb is None else [pcs_b.project(n, bb[n]) if pcs_b else bb[n] for n in order_b]
        acc.update(xs, ys)
        del ba, bb, xs, ys  # this batch's activations go before the next forward passes run
    if acc.n_batches == 0:
        raise InputError(f"no batch with at least {_MIN_BATCH} examples: the unbiased HSIC estimator needs more data")
    if skipped:
        warnings.warn(f"the last batch held only {skipped} example(s) (< {_MIN_BATCH}) and was left out of "
                      "minibatch CKA", RuntimeWarning, stacklevel=3)
    M = acc.compute()
    fa = {n: pcs_a.fraction[n] for n in order_a} if pcs_a else None
    fb = ({n: pcs_b.fraction[n] for n in order_b} if pcs_b else fa) if remove_pc1 else None
    return M, order_a, order_b, acc.n_examples, fa, fb


def _normalised_kernels(arrays: Sequence[Any], kernel: str, sigma: float, debiased: bool,
                        compute_dtype: torch.dtype | str, device: Any, names: Sequence[str] | None = None,
                        ) -> torch.Tensor:
    """(L, N²) stack of centred (or U-centred) kernels, each scaled to unit Frobenius norm.

    A layer beyond 2^±64 is read scaled by a power of two (CKA does not see the scale; its squared
    kernel entries would otherwise overflow); NaN/Inf activations raise :class:`InputError` naming
    the layer and rows (a non-finite kernel is never mistaken for a constant layer)."""
    rows = []
    names = list(names) if names is not None else [f"#{i}" for i in range(len(arrays))]

    def centred(K):  # linear kernels come centred (HKH) from the core; RBF kernels are centred here
        if debiased:
            return u_center(K)
        return center_gram(K) if kernel == "rbf" else K

    for name, X in zip(names, arrays, strict=True):
        X0 = X
        X, _ = unit_scaled(X)
        K = (centred_linear_kernel(X, centred, compute_dtype=compute_dtype, device=device) if kernel == "linear"
             else centred(gram_rbf(X0, sigma, compute_dtype=compute_dtype, device=device)))
        if not bool(torch.isfinite(K).all()):
            check_finite_values(X0, f"layer {name!r}")
            raise InputError(f"layer {name!r} overflows its kernel (values beyond float64's range once squared)")
        norm = float(torch.linalg.norm(K))
        rows.append((K / norm if norm > 0 else torch.full_like(K, float("nan"))).reshape(-1).cpu())
        del K
    return torch.stack(rows)


def _full_engine(arrays_a: Sequence[Any], arrays_b: Sequence[Any] | None, opts: HeatmapOptions,
                 names_a: Sequence[str] | None = None, names_b: Sequence[str] | None = None) -> np.ndarray:
    memory_budget = parse_bytes(opts.memory_budget)
    n = int(arrays_a[0].shape[0])
    if n < MIN_CKA_ROWS:
        raise InputError(f"full-data CKA needs at least {MIN_CKA_ROWS} examples (with fewer it is 1 or nearly "
                         f"so for any data); got {n}")
    count = len(arrays_a) + (len(arrays_b) if arrays_b is not None else 0)
    need = (count + 2) * n * n * 8
    if need > memory_budget:
        raise InputError(
            f"full-data CKA keeps one N×N float64 kernel per layer: {count} layers × N={n} needs "
            f"~{need / 2**30:.1f} GiB > memory_budget {memory_budget / 2**30:.1f} GiB; use minibatch=True "
            "(the paper's estimator, memory independent of N), fewer layers or fewer examples")
    args = (opts.kernel, opts.sigma, opts.debiased, opts.compute_dtype, opts.device)
    A = _normalised_kernels(arrays_a, *args, names_a)
    B = A if arrays_b is None else _normalised_kernels(arrays_b, *args, names_b)
    bad = [i for i in range(A.shape[0]) if not torch.isfinite(A[i]).all()]
    if bad or (arrays_b is not None and any(not torch.isfinite(B[j]).all() for j in range(B.shape[0]))):
        warnings.warn("some layers have no variance (constant activations): their CKA is NaN",
                      RuntimeWarning, stacklevel=3)
    return (A @ B.T).numpy()


def _result(M: np.ndarray, la: list[str], lb: list[str], da: list[float], db: list[float], n: int,
            opts: HeatmapOptions, *, within: bool, fa: dict | None, fb: dict | None) -> CKAResult:
    df = pd.DataFrame(M, index=pd.Index(la, name="layer_a"), columns=pd.Index(lb, name="layer_b"))
    mb = opts.minibatch
    return CKAResult(matrix=df, layers_a=list(la), layers_b=list(lb), depth_a=list(da), depth_b=list(db), n=int(n),
                     kernel=opts.kernel, sigma=opts.sigma if opts.kernel == "rbf" else None, minibatch=mb,
                     debiased=True if mb else opts.debiased, batch_size=opts.batch_size if mb else None,
                     within=within, pc1_removed=opts.remove_pc1, pc1_fraction_a=fa, pc1_fraction_b=fb)


# -------------------------------------------------------------------------------------- public API
def cka_matrix(
    model_a: Any,
    model_b: Any = None,
    data: Any = None,
    *,
    layers_a: Any = None,
    layers_b: Any = None,
    batch_size: int = 256,
    kernel: str = "linear",
    sigma: float = 0.8,
    minibatch: bool = True,
    debiased: bool = False,
    remove_pc1: bool = False,
    pc1_max_dim: int = PC1_MAX_DIM,
    reduce: str | None = None,
    device: str | torch.device = "cpu",
    compute_dtype: torch.dtype | str = "auto",
    memory_budget: int | str = "2GB",
    progress: bool = True,
) -> CKAResult:
    r"""CKA between every pair of layers of one or two models, in one pass over ``data``.

    Minibatch CKA (Nguyen, Raghu, Kornblith, ICLR 2021):

    .. math:: \mathrm{CKA}(a, b) = \frac{\sum_i \mathrm{HSIC}_1(K_{a,i}, L_{b,i})}
              {\sqrt{\sum_i \mathrm{HSIC}_1(K_{a,i}, K_{a,i})\,\sum_i \mathrm{HSIC}_1(L_{b,i}, L_{b,i})}}

    over minibatches i, with Song et al.'s unbiased HSIC₁. Each batch is read once, fed to both
    models (:func:`deepgeom.capture.stream`, fixed order), the batch's inputs are compared between the
    two streams (a mismatch raises), and only running float64 HSIC sums survive the batch — memory is
    independent of N. The paper used batch 256 (and 10 shuffled passes; shuffle ``data`` yourself
    with a fixed permutation if you want more passes).

    Args:
        model_a: an ``nn.Module`` — or a capture directory / :class:`deepgeom.capture.Capture` / mapping
            ``layer → (N, D) array`` (then see :func:`cka_matrix_from_captures`; ``data`` unused).
        model_b: second model (or capture); None → layer pairs within ``model_a`` (symmetric matrix).
        data: what :func:`deepgeom.capture.stream` accepts (tensor/array (N, ...), (x, y) pair,
            Dataset, non-shuffling DataLoader, dict of model inputs).
        layers_a, layers_b: layer selections (names, globs, module types; None → ``analysis_layers``).
        batch_size: examples per batch (≥ 4; a final batch of < 4 examples is left out with a warning).
        kernel: ``"linear"`` or ``"rbf"`` (bandwidth ``sigma`` × median distance, per batch).
        minibatch: False → full-data CKA from N×N Grams of all activations (captured first, within
            ``memory_budget``); ``debiased`` then selects the unbiased HSIC.
        remove_pc1: project each layer's first principal component out before the kernels. The PCs come
            from a first streamed pass (exact, from a float64 D×D scatter matrix, for D ≤ ``pc1_max_dim``;
            wider layers add 6 passes of randomized subspace iteration with a block of 8 — D×8 memory);
            the heatmap from a last pass. The variance fraction of each PC is returned in
            ``pc1_fraction_a/b``.
        reduce: how (B, T, H) outputs become rows (see :func:`deepgeom.capture.stream`).
        compute_dtype: dtype of the Gram products, after centring (HSIC terms and sums are float64).
            ``"auto"``: the activations' own precision — float32 products for float32 activations in
            batches of ≥ 32 (values within ~1e-9 of float64 products; see
            :func:`deepgeom.functional.matrix.product_dtype`), float64 for float64 data, smaller
            batches and the RBF kernel.

    Returns:
        :class:`CKAResult`.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> r = cka_matrix(net, data=torch.randn(64, 5), layers_a=["0", "1", "2"], batch_size=32, progress=False)
        >>> r.matrix.shape
        (3, 3)
    """
    opts = HeatmapOptions(batch_size=batch_size, kernel=kernel, sigma=sigma, minibatch=minibatch, debiased=debiased,
                          remove_pc1=remove_pc1, pc1_max_dim=pc1_max_dim, compute_dtype=compute_dtype, device=device,
                          memory_budget=memory_budget)
    if not isinstance(model_a, nn.Module):
        if data is not None:
            raise InputError("data is not used with captures (their rows are the examples); pass models to run "
                             "them on data, or leave data out")
        if model_b is not None and isinstance(model_b, nn.Module):
            raise InputError("model_a is a capture but model_b is a model: pass two captures or two models")
        return _from_captures(model_a, model_b, layers_a, layers_b, opts)
    if model_b is not None and not isinstance(model_b, nn.Module):
        raise InputError(f"model_b must be a torch.nn.Module or None; got {type(model_b).__name__}")
    if data is None:
        raise InputError("cka_matrix needs data: the examples both models are run on")
    if not opts.minibatch:  # full-data CKA: capture (within the memory budget), then N×N kernels
        kw = dict(batch_size=opts.batch_size, device=opts.device, reduce=reduce, memory_budget=opts.memory_budget)
        cap_a = capture(model_a, data, layers_a, progress=progress, **kw)
        cap_b = capture(model_b, data, layers_b, progress=False, **kw) if model_b is not None else None
        return _from_captures(cap_a, cap_b, None, None, opts)

    def batches():
        return _model_batches(model_a, model_b, data, layers_a, layers_b, opts.batch_size, opts.device, reduce,
                              progress)

    names_a, names_b, it = batches()
    M, order_a, order_b, n, fa, fb = _minibatch_engine(it, names_a, names_b, opts, replay=lambda: batches()[2])
    within = model_b is None
    lb = order_a if within else order_b
    return _result(M, order_a, lb, relative_depth(model_a, order_a),
                   relative_depth(model_a if within else model_b, lb), n, opts, within=within, fa=fa, fb=fb)


def _open_capture(c: Any, which: str) -> tuple[Mapping[str, Any], dict[str, float] | None, Any]:
    if isinstance(c, (str, Path)):
        c = load_capture(c)
    if not isinstance(c, Mapping):
        raise InputError(f"capture {which} must be a directory, a deepgeom Capture or a mapping layer → array; "
                         f"got {type(c).__name__}")
    depth = getattr(c, "relative_depth", None)
    return c, depth, getattr(c, "example_index", None)


def _select(cap: Mapping[str, Any], layers: Any, which: str) -> list[str]:
    available = list(cap.keys())
    if layers is None:
        return available
    if isinstance(layers, str):
        layers = [layers]
    out: list[str] = []
    for item in layers:
        hits = [item] if item in cap else fnmatch.filter(available, item)
        if not hits:
            raise UnknownNameError(f"layer of capture {which}", item, available)
        out += [h for h in hits if h not in out]
    return [n for n in available if n in out]


def cka_matrix_from_captures(
    capture_a: Any,
    capture_b: Any = None,
    *,
    layers_a: Any = None,
    layers_b: Any = None,
    batch_size: int = 256,
    kernel: str = "linear",
    sigma: float = 0.8,
    minibatch: bool = True,
    debiased: bool = False,
    remove_pc1: bool = False,
    pc1_max_dim: int = PC1_MAX_DIM,
    compute_dtype: torch.dtype | str = "auto",
    device: str | torch.device = "cpu",
    memory_budget: int | str = "2GB",
) -> CKAResult:
    """:func:`cka_matrix` for layers already captured (``deepgeom capture`` directories, ``Capture``
    objects, or mappings ``layer → (N, D)`` array/memmap): rows are streamed in batches of
    ``batch_size`` straight from the memmaps, so only one batch of every layer is in memory.

    Two captures must hold the same examples in the same order: same N, and the same
    ``example_index`` and labels when the captures record them (else :class:`InputError`).
    Layers may be exact names or globs; relative depths come from the capture manifest.
    """
    opts = HeatmapOptions(batch_size=batch_size, kernel=kernel, sigma=sigma, minibatch=minibatch, debiased=debiased,
                          remove_pc1=remove_pc1, pc1_max_dim=pc1_max_dim, compute_dtype=compute_dtype, device=device,
                          memory_budget=memory_budget)
    return _from_captures(capture_a, capture_b, layers_a, layers_b, opts)


def _from_captures(capture_a: Any, capture_b: Any, layers_a: Any, layers_b: Any, opts: HeatmapOptions) -> CKAResult:
    cap_a, depth_a, idx_a = _open_capture(capture_a, "A")
    within = capture_b is None
    cap_b, depth_b, idx_b = (cap_a, depth_a, idx_a) if within else _open_capture(capture_b, "B")
    la = _select(cap_a, layers_a, "A")
    lb = la if within and layers_b is None else _select(cap_b, layers_b, "B")
    arrs_a = [check_matrix(cap_a[n], f"capture A layer {n!r}", check_finite=False) for n in la]
    arrs_b = [check_matrix(cap_b[n], f"capture B layer {n!r}", check_finite=False) for n in lb]
    ns = {arr.shape[0] for arr in arrs_a + arrs_b}
    if len(ns) != 1:
        raise InputError(f"all layers must hold the same examples; got row counts {sorted(ns)}")
    n = ns.pop()
    if not within:
        if idx_a is not None and idx_b is not None and not np.array_equal(np.asarray(idx_a), np.asarray(idx_b)):
            raise InputError("captures A and B hold different examples (or the same ones in another order): "
                             "their example_index differ")
        la_lab, lb_lab = getattr(cap_a, "labels", None), getattr(cap_b, "labels", None)
        if la_lab is not None and lb_lab is not None and not np.array_equal(la_lab, lb_lab):
            raise InputError("captures A and B hold different examples: their labels differ row by row")
    da = [float(depth_a[x]) for x in la] if depth_a else relative_depth(None, la)
    db = [float(depth_b[x]) for x in lb] if depth_b else relative_depth(None, lb)
    if not opts.minibatch:
        if opts.remove_pc1:
            fa = {x: pc1_fraction(a) for x, a in zip(la, arrs_a, strict=False)}
            arrs_a = [remove_pc1_full(a) for a in arrs_a]
            fb = fa if within else {x: pc1_fraction(a) for x, a in zip(lb, arrs_b, strict=False)}
            arrs_b = arrs_a if within and layers_b is None else [remove_pc1_full(a) for a in arrs_b]
        else:
            fa = fb = None
        M = _full_engine(arrs_a, None if (within and layers_b is None) else arrs_b, opts, names_a=la, names_b=lb)
        return _result(M, la, lb, da, db, n, opts, within=within, fa=fa, fb=fb)

    same_side = within and layers_b is None

    def batches():
        for start in range(0, n, opts.batch_size):
            stop = min(n, start + opts.batch_size)
            ba = {x: _checked_rows(a, start, stop, x) for x, a in zip(la, arrs_a, strict=False)}
            bb = None if same_side else {x: _checked_rows(a, start, stop, x) for x, a in zip(lb, arrs_b, strict=False)}
            yield ba, bb

    M, oa, ob, used, fa, fb = _minibatch_engine(batches(), la, None if same_side else lb, opts, replay=batches)
    return _result(M, la, lb, da, db, used, opts, within=within, fa=fa, fb=fb)


def _checked_rows(a: Any, start: int, stop: int, name: str) -> torch.Tensor:
    blk = as_tensor(np.asarray(a[start:stop]) if isinstance(a, np.ndarray) else a[start:stop])
    if not torch.isfinite(blk).all():
        bad = (~torch.isfinite(blk.reshape(blk.shape[0], -1))).any(1).nonzero()[:, 0] + start
        shown = ", ".join(str(int(r)) for r in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise InputError(f"layer {name!r} contains NaN or Inf (first in row {int(bad[0])}) in rows {shown} "
                         f"of the batch {start}..{stop - 1}; remove or impute those rows first")
    return blk


