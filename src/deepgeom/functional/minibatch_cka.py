r"""Minibatch CKA (Nguyen, Raghu, Kornblith, ICLR 2021) as pure steps, in torchmetrics' update/compute
form: :func:`minibatch_hsic_update` (one batch's HSIC₁ terms for every layer pair),
:func:`minibatch_hsic_merge` (add them to the running sums) and :func:`minibatch_cka_compute`

.. math:: \mathrm{CKA}_{\mathrm{mb}}(a, b) = \frac{\sum_i \mathrm{HSIC}_1(K_{a,i}, L_{b,i})}
          {\sqrt{\sum_i \mathrm{HSIC}_1(K_{a,i}, K_{a,i})\ \sum_i \mathrm{HSIC}_1(L_{b,i}, L_{b,i})}}

with the unbiased HSIC₁ of Song et al. (2012) through U-centred kernels (:mod:`.cka`).  The stateful
accumulator over these is :class:`deepgeom.analysis.streaming.MinibatchCKA`.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import check_matrix
from ..errors import InputError, UnknownNameError
from ._syrk import run_per_thread, syrk_available, syrk_lower
from .cka import KERNELS, _u_center_, centred_linear_kernel, float32_too_coarse, gram_rbf
from .matrix import (
    as_tensor,
    diagonal_in_range,
    max_abs_exponent,
    mul_pow2,
    product_dtype,
    resolve_device,
)

__all__ = ["MinibatchHSIC", "minibatch_hsic_update", "minibatch_hsic_merge", "minibatch_hsic_sums",
           "minibatch_cka_compute"]

#: ⟨U, U⟩ of a batch kernel outside this range is recomputed on power-of-two-scaled activations: far
#: inside float64 (2^±1022), so sums over batches and cross terms (≤ √(⟨U,U⟩⟨V,V⟩)) stay finite
_SELF_RANGE = (2.0**-600, 2.0**600)


def _pow2_grid(T: torch.Tensor, ra: np.ndarray, rb: np.ndarray) -> torch.Tensor:
    """T (A, B) times 2^(ra_a + rb_b), or (A,) times 2^(ra_a + rb_a) (all exponents ≤ 0: exact, or a
    negligible underflow)."""
    if T.ndim == 1:
        return torch.from_numpy(np.ldexp(T.numpy(), (ra + rb).astype(np.int32)))
    return torch.from_numpy(np.ldexp(T.numpy(), (ra[:, None] + rb[None, :]).astype(np.int32)))


@dataclass(frozen=True)
class MinibatchHSIC:
    r"""HSIC₁ terms of every layer pair, for one minibatch or summed over several (Nguyen, Raghu,
    Kornblith 2021), in power-of-two units.

    ``kl`` (A, B), ``kk`` (A,) and ``ll`` (B,) are float64 CPU tensors; the sums they stand for are
    :math:`kl_{ab}\,2^{e^a_a + e^b_b}`, :math:`kk_a\,2^{2e^a_a}`, :math:`ll_b\,2^{2e^b_b}` with
    ``ea``/``eb`` the per-layer exponents (nonzero only for activations beyond 2^±64, whose fourth
    powers would leave float64).  ``within``: one model's layers against themselves (no ``ys``).
    """

    kl: torch.Tensor
    kk: torch.Tensor
    ll: torch.Tensor
    ea: np.ndarray
    eb: np.ndarray
    within: bool
    n_examples: int
    n_batches: int = 1


@dataclass(frozen=True)
class _SideKernels:
    """One side's batch kernels in the form the HSIC₁ sums read: for each layer's kernel K, with K̃ its
    copy with a zero diagonal, ``P`` (L, n(n−1)/2) float64 holds the strict lower triangle of K̃, row by
    row (⟨K̃, L̃⟩ = 2·⟨P_K, P_L⟩; packed, the all-pairs product reads half the memory of n × n blocks:
    2.5× faster at n = 256), ``R`` (L, n) the row sums K̃1, ``uu`` = ⟨U(K), U(K)⟩ and ``expo`` the power
    of two the kernel was scaled by (the true kernel is 2ᴱ times this one)."""

    P: torch.Tensor
    R: torch.Tensor
    uu: torch.Tensor
    expo: np.ndarray
    n: int


def _hsic_sums(P: torch.Tensor, R: torch.Tensor, Q: torch.Tensor, S: torch.Tensor, n: int) -> torch.Tensor:
    r"""n(n−3)·HSIC₁ of every pair (A, B), Song et al. (2012) eq. (5) on zero-diagonal symmetric kernels,
    :math:`\langle\tilde K,\tilde L\rangle + \frac{1^\top\tilde K1\,1^\top\tilde L1}{(n-1)(n-2)}
    - \frac{2}{n-2}(\tilde K1)^\top\tilde L1` (= ⟨U(K), U(L)⟩), from the flattened lower triangles
    ``P``/``Q`` (A or B, n(n−1)/2) and the row sums ``R``/``S`` (:class:`_SideKernels`)."""
    return (2.0 * (P @ Q.T) + torch.outer(R.sum(1), S.sum(1)) / ((n - 1) * (n - 2))
            - (R @ S.T) * (2.0 / (n - 2)))


def _hsic_self(pp: torch.Tensor, R: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`_hsic_sums` of each kernel with itself, ⟨U(K), U(K)⟩ (A,), from ``pp`` = ⟨P, P⟩ (A,)."""
    s = R.sum(1)
    return (2.0 * pp + s * s / ((n - 1) * (n - 2))
            - torch.linalg.vecdot(R, R) * (2.0 / (n - 2)))


def _new(shape: tuple[int, ...], fill: float | None, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    """A fresh tensor, uninitialised (``fill`` None) or holding ``fill``."""
    if fill is None:
        return torch.empty(shape, dtype=dtype, device=dev)
    return torch.full(shape, fill, dtype=dtype, device=dev)


def _buffer(buffers: dict | None, key: Any, shape: tuple[int, ...], dtype: torch.dtype, dev: torch.device,
            fill: float | None = None, per_thread: bool = False) -> torch.Tensor:
    """A work tensor reused from batch to batch through ``buffers`` (no fresh multi-MB block, and its
    page faults, per batch); ``fill``: the value it holds when first made. ``per_thread``: private to the
    calling thread (run_per_thread's workers persist, so each keeps its own, small enough to stay in
    its core's cache between one layer's steps), a view of a flat block that only grows (layers of
    different widths share it); the views are kept too (slicing anew costs 3.5 µs a call)."""
    if not per_thread:
        T = None if buffers is None else buffers.get(key)
        if T is None or tuple(T.shape) != shape or T.dtype != dtype or T.device != dev:
            T = _new(shape, fill, dtype, dev)
            if buffers is not None:
                buffers[key] = T
        return T
    key = (key, threading.get_ident(), dtype, dev)
    base, views = (None, {}) if buffers is None else buffers.get(key, (None, {}))
    view = views.get(shape)
    if view is None:
        numel = math.prod(shape)
        if base is None or base.numel() < numel:  # a larger block: the old views go with the old one
            base, views = _new((numel,), fill, dtype, dev), {}
        view = views[shape] = base[:numel].view(shape)
        if buffers is not None:
            buffers[key] = (base, views)
    return view


#: largest ratio of ⟨U, U⟩'s subtracted row-sum term to ⟨U, U⟩ itself for the sums form (float64
#: keeps ~1e-12 of it); beyond, the layer is U-centred entry by entry, where the cancellation is first order
_CANCEL_LIMIT = 1e4


def _lower_product(xc: torch.Tensor, C: torch.Tensor) -> None:
    """C (n×n, strict upper triangle zero) ← the lower triangle of X̃X̃ᵀ: BLAS syrk (half the flops)
    where available, else a full product cut to its lower triangle."""
    if xc.device.type == "cpu" and syrk_available(xc.dtype):
        syrk_lower(xc, C)
    else:
        torch.matmul(xc, xc.mT, out=C)
        C.tril_()


@functools.lru_cache(maxsize=8)
def _strict_lower(n: int, dev: torch.device) -> torch.Tensor:
    """Flat indices of an n × n matrix's strict lower triangle, row by row (the packed order of P);
    made once per batch size and device (not to be written to)."""
    r, c = torch.tril_indices(n, n, -1, device=dev)
    return r * n + c


def _layer_kernel(x: torch.Tensor, dtype: torch.dtype, out: _SideKernels, i: int, diag: torch.Tensor,
                  pp: torch.Tensor, buffers: dict | None) -> None:
    """One layer's linear kernel, start to finish on the calling thread while its data are in cache:
    X̃ = X − 1μᵀ in the product ``dtype``, the lower triangle of X̃X̃ᵀ (:func:`_lower_product`) in a
    thread-private float64 block, its diagonal into ``diag[i]`` and then zeroed, the row sums of the
    symmetric zero-diagonal kernel into ``out.R[i]``, its packed strict lower triangle into
    ``out.P[i]`` and ⟨P, P⟩ into ``pp[i]``. μ as (1/n)·1ᵀX, a matrix-vector product (1.5× faster than
    x.mean(0) at 256 × 1,024, a column reduction); its own rounding shifts every row by one small
    vector, which adds a symmetric a1ᵀ + 1aᵀ + c11ᵀ to the kernel: U-centring (hence HSIC₁) annihilates
    that."""
    n, dev = out.n, out.P.device
    x = x.to(dev, dtype)
    xc = _buffer(buffers, "centred", tuple(x.shape), dtype, dev, per_thread=True)
    ones = _buffer(buffers, f"mean{n}", (1, n), dtype, dev, fill=1.0 / n, per_thread=True)  # (1/n)·1ᵀ
    torch.sub(x, torch.matmul(ones, x), out=xc)
    # strict upper triangles zero from creation: syrk never writes them, the full product is cut
    K = _buffer(buffers, f"gram{n}", (n, n), torch.float64, dev, fill=0.0, per_thread=True)
    if dtype == torch.float64:
        _lower_product(xc, K)
    else:
        C = _buffer(buffers, f"gram{n}", (n, n), dtype, dev, fill=0.0, per_thread=True)
        _lower_product(xc, C)
        K.copy_(C)
    d = K.diagonal()
    diag[i].copy_(d)
    d.zero_()
    torch.add(K.sum(1), K.sum(0), out=out.R[i])  # K̃1 of the symmetric kernel from its lower triangle
    torch.index_select(K.view(-1), 0, _strict_lower(n, dev), out=out.P[i])
    torch.dot(out.P[i], out.P[i], out=pp[i])


def _fast_linear(sides: Sequence[tuple[list[torch.Tensor], _SideKernels]], compute_dtype: torch.dtype | str,
                 dev: torch.device, buffers: dict | None) -> list[np.ndarray]:
    """Linear kernels of the in-memory layers of both sides: one :func:`_layer_kernel` per layer, spread
    over torch's CPU threads one layer per thread (BLAS and torch calls that release the GIL), then per
    side ⟨U, U⟩ from the stacked row sums and self terms (sums form). Layers whose product may have
    left its dtype's range, whose ⟨U, U⟩ is outside ``_SELF_RANGE`` or lost too much to cancellation
    (``_CANCEL_LIMIT``), or whose float32 product is too coarse for what the centring left
    (:func:`float32_too_coarse`) are left to the per-layer route; returns which layers of each side
    are done."""
    n = sides[0][1].n
    dtypes = [[product_dtype(compute_dtype, x, dev) for x in layers] for layers, _ in sides]
    stats = [(torch.empty(len(layers), n, dtype=torch.float64, device=dev),
              torch.empty(len(layers), dtype=torch.float64, device=dev)) for layers, _ in sides]
    jobs, costs = [], []
    for (layers, out), ds, (diag, pp) in zip(sides, dtypes, stats, strict=True):
        for i, (x, d) in enumerate(zip(layers, ds, strict=True)):
            jobs.append(lambda x=x, d=d, out=out, i=i, diag=diag, pp=pp: _layer_kernel(x, d, out, i, diag, pp, buffers))
            costs.append(x.shape[1] * d.itemsize)
    if dev.type == "cpu":
        run_per_thread(jobs, costs)
    else:
        for job in jobs:
            job()
    done = []
    for (_, out), ds, (diag, pp) in zip(sides, dtypes, stats, strict=True):
        top, trace = diag.amax(1), diag.sum(1).tolist()
        in_range = {d: diagonal_in_range(top, d).tolist() for d in set(ds)}
        out.uu.copy_(_hsic_self(pp, out.R, n))
        # the row-sum term that ⟨U, U⟩ = 2|P|² + … − (2/(n−2))|R|² subtracts, relative to ⟨U, U⟩:
        # float64 loses that factor of its 1e-16 (a float32 layer within float32_too_coarse's limit
        # has at most 2·256²/n²; a float64 product of a diagonal-heavy kernel can have 1e12)
        cancel = (torch.linalg.vecdot(out.R, out.R) * (2.0 / (n - 2)) / out.uu).tolist()
        done.append(np.array([
            in_range[d][i] and _SELF_RANGE[0] < v < _SELF_RANGE[1] and c <= _CANCEL_LIMIT
            and not (d == torch.float32 and float32_too_coarse(tr, math.sqrt(v)))
            for i, (tr, v, c, d) in enumerate(zip(trace, out.uu.tolist(), cancel, ds, strict=True))], dtype=bool))
    return done


def _side_layers(xs: Sequence[Any], side: str, n: int | None) -> tuple[list[torch.Tensor], int]:
    """One side's activations as (n, D) tensors, checked: at least one layer, n ≥ 4 rows, the same n
    in every layer (and as ``n`` when given)."""
    if len(xs) == 0:
        raise InputError(f"{side}: need at least one layer's activations per batch")
    layers = []
    for i, x in enumerate(xs):
        x = as_tensor(x)  # the core centres and rounds once to the product dtype
        if x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        # finiteness is checked once per batch on the HSIC self-terms (NaN/Inf in x propagate there),
        # not by a separate pass over every activation
        x = check_matrix(x, f"{side}[{i}]", check_finite=False)
        if n is None:
            n = int(x.shape[0])
            if n < 4:
                raise InputError(f"a minibatch needs at least 4 examples for the unbiased HSIC estimator; "
                                 f"got {n}")
        elif x.shape[0] != n:
            raise InputError(f"every layer of a batch must hold the same examples: {side}[{i}] has "
                             f"{x.shape[0]} rows, expected {n}")
        layers.append(x)
    return layers, int(n)


def _per_layer(layers: list[torch.Tensor], out: _SideKernels, todo: np.ndarray, kernel: str, sigma: float,
               compute_dtype: torch.dtype | str, dev: torch.device) -> None:
    """The layers ``todo`` U-centred one by one (U(K) has zero row sums, and HSIC₁(U(K), L) =
    HSIC₁(K, L): U-centring is a projection): RBF kernels, and linear ones the fast route left, with
    float64 products where float32 is too coarse and activations rescaled where ⟨U, U⟩ would leave
    float64."""
    for i in np.flatnonzero(todo):
        x = layers[i]
        if kernel == "linear":
            U, uu = centred_linear_kernel(x, _u_center_, compute_dtype=compute_dtype, device=dev, with_self=True)
            if not _SELF_RANGE[0] < uu < _SELF_RANGE[1]:
                # ⟨U, U⟩ ~ x⁴ overflowed, or may have lost digits to underflow (or x is constant or
                # not finite, which this leaves as it is): redo on x scaled by 2⁻ᵉ (exact); the
                # kernel then carries 4ᵉ. Only such layers pay for the extra pass over x.
                e = max_abs_exponent(x)
                if e:
                    x, out.expo[i] = mul_pow2(x.to(torch.float64), -e), 2 * e
                    U, uu = centred_linear_kernel(x, _u_center_, compute_dtype=compute_dtype, device=dev,
                                                  with_self=True)
        else:
            U = _u_center_(gram_rbf(x, sigma, compute_dtype=compute_dtype, device=dev))
            uu = float(torch.linalg.vecdot(U.reshape(-1), U.reshape(-1)))
        U = U.to(torch.float64)  # U(K): zero diagonal, symmetric
        torch.index_select(U.reshape(-1), 0, _strict_lower(out.n, dev), out=out.P[i])
        out.R[i] = U.sum(1)
        out.uu[i] = uu


def _batch_kernels(xs: Sequence[Any], ys: Sequence[Any] | None, kernel: str, sigma: float,
                   compute_dtype: torch.dtype | str, device: str | torch.device | None,
                   buffers: dict[str, torch.Tensor] | None) -> list[_SideKernels]:
    """The batch's kernels of each side (``xs``, and ``ys`` when given) in :class:`_SideKernels` form:
    linear kernels of in-memory layers by :func:`_fast_linear`, the rest by :func:`_per_layer`."""
    dev = resolve_device(device)
    sides = [_side_layers(xs, "xs", None)]
    if ys is not None:
        sides.append(_side_layers(ys, "ys", sides[0][1]))
    n = sides[0][1]
    outs = [_SideKernels(_buffer(buffers, side + "P", (len(layers), n * (n - 1) // 2), torch.float64, dev),
                         _buffer(buffers, side + "R", (len(layers), n), torch.float64, dev),
                         torch.empty(len(layers), dtype=torch.float64, device=dev),
                         np.zeros(len(layers), dtype=np.int64), n)
            for side, (layers, _) in zip(("xs", "ys"), sides, strict=False)]
    pairs = [(layers, out) for (layers, _), out in zip(sides, outs, strict=True)]
    done = (_fast_linear(pairs, compute_dtype, dev, buffers) if kernel == "linear"
            else [np.zeros(len(layers), dtype=bool) for layers, _ in pairs])
    for (layers, out), ok in zip(pairs, done, strict=True):
        _per_layer(layers, out, ~ok, kernel, sigma, compute_dtype, dev)
    return outs


def minibatch_hsic_update(xs: Sequence[Any], ys: Sequence[Any] | None = None, *, kernel: str = "linear",
                          sigma: float = 0.8, compute_dtype: torch.dtype | str = "auto",
                          device: str | torch.device | None = None,
                          buffers: dict[str, torch.Tensor] | None = None) -> MinibatchHSIC:
    r"""One minibatch's HSIC₁ terms (Song et al. 2012) for every pair of layers: the ``update`` step
    of minibatch CKA (Nguyen, Raghu, Kornblith 2021), :math:`\langle U(K_a), U(L_b)\rangle_F/(n(n-3))`.

    ``xs``: per-layer activations (each (B, D_a), any widths) of one batch; ``ys``: a second model's
    on the same B ≥ 4 examples (None: ``xs`` against themselves). Columns are centred before the
    Gram product (the same estimate; it removes the offset that makes float32 HSIC₁ negative for ReLU
    features). ``buffers``: a dict the caller keeps between batches so the kernel stacks are reused.
    Sum the results with :func:`minibatch_hsic_merge`; :func:`minibatch_cka_compute` finishes.
    """
    if kernel not in KERNELS:
        raise UnknownNameError("CKA kernel", kernel, list(KERNELS))
    a, *rest = _batch_kernels(xs, ys, kernel, sigma, compute_dtype, device, buffers)
    b = rest[0] if rest else None
    n = a.n
    scale = 1.0 / (n * (n - 3))
    kl = _hsic_sums(a.P, a.R, *((a.P, a.R) if b is None else (b.P, b.R)), n) * scale
    kk = a.uu * scale
    ll = kk if b is None else b.uu * scale
    for side, terms in (("xs", kk), ("ys", ll if b is not None else None)):
        if terms is not None and not bool(torch.isfinite(terms).all()):
            bad = torch.nonzero(~torch.isfinite(terms)).flatten().tolist()
            raise InputError(f"{side}{bad} of this batch contain NaN or Inf (or overflow the kernel): "
                             "remove or impute those rows first")
    eb = a.expo if b is None else b.expo
    return MinibatchHSIC(kl.cpu().clone(), kk.cpu().clone(), ll.cpu().clone(), a.expo.copy(), eb.copy(),
                         within=ys is None, n_examples=n)


def minibatch_hsic_merge(total: MinibatchHSIC, batch: MinibatchHSIC) -> MinibatchHSIC:
    """The sums of ``total`` and one more ``batch`` (the same layers), in common power-of-two units:
    per layer the largest exponent seen, both sides brought to it exactly before adding."""
    shape = tuple(batch.kl.shape)
    if shape != tuple(total.kl.shape) or batch.within != total.within:
        raise InputError(f"every batch must bring the same layers: first batch gave a {tuple(total.kl.shape)} "
                         f"layer grid{' (within one model)' if total.within else ''}, this one {shape}")
    kl, kk, ll, ea, eb = batch.kl, batch.kk, batch.ll, batch.ea, batch.eb
    tkl, tkk, tll, tea, teb = total.kl, total.kk, total.ll, total.ea, total.eb
    if ea.any() or eb.any() or tea.any() or teb.any():
        na, nb = np.maximum(tea, ea), np.maximum(teb, eb)
        tkl = _pow2_grid(tkl, tea - na, teb - nb)
        tkk = _pow2_grid(tkk, tea - na, tea - na)
        tll = _pow2_grid(tll, teb - nb, teb - nb)
        kl = _pow2_grid(kl, ea - na, eb - nb)
        kk = _pow2_grid(kk, ea - na, ea - na)
        ll = _pow2_grid(ll, eb - nb, eb - nb)
        tea, teb = na, nb
    return MinibatchHSIC(tkl + kl, tkk + kk, tll + ll, tea, teb, within=total.within,
                         n_examples=total.n_examples + batch.n_examples, n_batches=total.n_batches + batch.n_batches)


def minibatch_hsic_sums(sums: MinibatchHSIC) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Σ HSIC₁(K_a, L_b), Σ HSIC₁(K_a, K_a), Σ HSIC₁(L_b, L_b)) as float64 arrays in the data's own
    units (±inf where activations beyond ~1e77 make a sum exceed float64)."""
    kl, kk, ll = sums.kl.numpy(), sums.kk.numpy(), sums.ll.numpy()
    with np.errstate(over="ignore"):
        return (np.ldexp(kl, (sums.ea[:, None] + sums.eb[None, :]).astype(np.int32)),
                np.ldexp(kk, (2 * sums.ea).astype(np.int32)), np.ldexp(ll, (2 * sums.eb).astype(np.int32)))


def minibatch_cka_compute(sums: MinibatchHSIC) -> np.ndarray:
    r"""Minibatch CKA from summed HSIC₁ terms, the ``compute`` step:
    :math:`\sum_i \mathrm{HSIC}_1(K_{a,i}, L_{b,i}) / \sqrt{\sum_i \mathrm{HSIC}_1(K_{a,i}, K_{a,i})\,
    \sum_i \mathrm{HSIC}_1(L_{b,i}, L_{b,i})}` as an (A, B) float64 array; a layer with Σ HSIC₁(K, K) ≤ 0
    — no variance in any batch (e.g. a dead ReLU layer) — gets a NaN row/column and a warning."""
    kl, kk, ll = sums.kl.numpy(), sums.kk.numpy(), sums.ll.numpy()  # the power-of-two units cancel
    bad_a, bad_b = np.flatnonzero(~(kk > 0)), np.flatnonzero(~(ll > 0))
    if bad_a.size or bad_b.size:
        warnings.warn(
            f"CKA undefined for layers with no variance in any batch (constant activations): "
            f"first-side indices {bad_a.tolist()}, second-side indices {bad_b.tolist()}; set to NaN",
            RuntimeWarning, stacklevel=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        # √kk·√ll, not √(kk·ll): the product underflows for tiny activations (1e-40 data)
        den = np.sqrt(np.where(kk > 0, kk, np.nan))[:, None] * np.sqrt(np.where(ll > 0, ll, np.nan))[None, :]
        return kl / den
