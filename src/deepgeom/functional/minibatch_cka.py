r"""Minibatch CKA (Nguyen, Raghu, Kornblith, ICLR 2021) as pure steps, in torchmetrics' update/compute
form: :func:`minibatch_hsic_update` (one batch's HSIC₁ terms for every layer pair),
:func:`minibatch_hsic_merge` (add them to the running sums) and :func:`minibatch_cka_compute`

.. math:: \mathrm{CKA}_{\mathrm{mb}}(a, b) = \frac{\sum_i \mathrm{HSIC}_1(K_{a,i}, L_{b,i})}
          {\sqrt{\sum_i \mathrm{HSIC}_1(K_{a,i}, K_{a,i})\ \sum_i \mathrm{HSIC}_1(L_{b,i}, L_{b,i})}}

with the unbiased HSIC₁ of Song et al. (2012) through U-centred kernels (:mod:`.cka`).  The stateful
accumulator over these is :class:`deepgeom.analysis.streaming.MinibatchCKA`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import check_matrix
from ..errors import InputError, UnknownNameError
from .cka import KERNELS, _centred_pairs, _u_center_, centred_linear_kernel, float32_too_coarse, gram_rbf
from .matrix import (
    _self_product,
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


def _kernel_stack(buffers: dict[str, torch.Tensor] | None, side: str, shape: tuple[int, int, int],
                  dev: torch.device) -> torch.Tensor:
    """The float64 kernel stack of one side, reused from batch to batch through ``buffers``: no fresh
    multi-MB block (and its page faults) per batch."""
    K = None if buffers is None else buffers.get(side)
    if K is None or tuple(K.shape) != shape or K.device != dev:
        K = torch.empty(shape, dtype=torch.float64, device=dev)
        if buffers is not None:
            buffers[side] = K
    return K


#: rows per block of the stacked symmetric products (one thread per layer's block product)
_STACK_BLOCK = 64
#: at most this many bytes of stacked activations at once (the per-layer route holds one layer)
_STACK_BYTES = 64 * 2**20


def _stacked_linear_kernels(layers: list[torch.Tensor], K: torch.Tensor, selfs: torch.Tensor,
                            compute_dtype: torch.dtype | str, dev: torch.device) -> np.ndarray:
    """With several CPU threads: runs of consecutive float32 layers of one width, U-centred as one
    (L, n, n) stack — batched products split across threads by layer, each a single-threaded upper
    block triangle, and a few stacked passes instead of a dozen small ones per layer. The same
    arithmetic as the per-layer route (centring in two float32 passes, float32 products, float64
    U-centring); layers whose kernel needs that route's rescaling or float64 redo are left to it, and
    so are layers too wide to stack two of within ``_STACK_BYTES``. Returns which layers are done."""
    done = np.zeros(len(layers), dtype=bool)
    if torch.get_num_threads() <= 1 or dev.type != "cpu":
        return done  # one thread: per layer is faster (no stacking copy; BENCHMARKS_cka.md)
    n = K.shape[-1]

    def stackable(x: torch.Tensor) -> bool:
        return (x.dtype == torch.float32 and x.device.type == "cpu"
                and product_dtype(compute_dtype, x, dev) == torch.float32)

    i0 = 0
    while i0 < len(layers):
        i1 = i0 + 1
        most = _STACK_BYTES // (4 * layers[i0].numel())  # layers per stack within the memory bound
        if stackable(layers[i0]):
            while (i1 < len(layers) and i1 - i0 < most and stackable(layers[i1])
                   and layers[i1].shape == layers[i0].shape):
                i1 += 1
        if i1 - i0 < 2:
            i0 = i1
            continue
        S = torch.stack(layers[i0:i1])  # a copy: centred in place
        S -= S.mean(1, keepdim=True)
        S -= S.mean(1, keepdim=True)  # the first mean's rounding (as gram() does per layer)
        U = _self_product(S, out=K[i0:i1], block=_STACK_BLOCK if n >= 2 * _STACK_BLOCK else 0)
        diag = U.diagonal(dim1=1, dim2=2)
        in_range = diagonal_in_range(diag.amax(1), torch.float32).tolist()
        traces = diag.sum(1).tolist()
        _u_center_(U)
        flat = U.reshape(i1 - i0, -1)
        uu = torch.linalg.vecdot(flat, flat)
        selfs[i0:i1] = uu
        # the per-layer route's own tests: the product in float32's range, ⟨U, U⟩ in its range, and
        # float32 products fine enough for what the centring left
        done[i0:i1] = [r and _SELF_RANGE[0] < v < _SELF_RANGE[1] and not float32_too_coarse(t, math.sqrt(v))
                       for r, t, v in zip(in_range, traces, uu.tolist(), strict=True)]
        i0 = i1
    return done


def _batch_kernels(xs: Sequence[Any], side: str, n: int | None, kernel: str, sigma: float,
                   compute_dtype: torch.dtype | str, device: str | torch.device | None,
                   buffers: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, int, np.ndarray]:
    """The batch's U-centred kernels as one float64 (L, n, n) stack, their self products ⟨U, U⟩ and
    each kernel's power-of-two exponent E (the true kernel is 2ᴱ times the one in the stack). Each
    kernel is U-centred and squared right after its Gram product, while it is still in cache: the
    stack is then read once more, by the pair product."""
    if len(xs) == 0:
        raise InputError(f"{side}: need at least one layer's activations per batch")
    dev = resolve_device(device)
    expo = np.zeros(len(xs), dtype=np.int64)
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
    K = _kernel_stack(buffers, side, (len(xs), n, n), dev)
    selfs = torch.empty(len(xs), dtype=torch.float64, device=dev)
    done = (_stacked_linear_kernels(layers, K, selfs, compute_dtype, dev) if kernel == "linear"
            else np.zeros(len(layers), dtype=bool))
    for i, x in enumerate(layers):
        if done[i]:
            continue
        if kernel == "linear":
            _, uu = centred_linear_kernel(x, _u_center_, compute_dtype=compute_dtype, device=dev, out=K[i],
                                          with_self=True)
            if not _SELF_RANGE[0] < uu < _SELF_RANGE[1]:
                # ⟨U, U⟩ ~ x⁴ overflowed, or may have lost digits to underflow (or x is constant or
                # not finite, which this leaves as it is): redo on x scaled by 2⁻ᵉ (exact); the
                # kernel then carries 4ᵉ. Only such layers pay for the extra pass over x.
                e = max_abs_exponent(x)
                if e:
                    x, expo[i] = mul_pow2(x.to(torch.float64), -e), 2 * e
                    _, uu = centred_linear_kernel(x, _u_center_, compute_dtype=compute_dtype, device=dev, out=K[i],
                                          with_self=True)
            selfs[i] = uu
        else:
            K[i] = gram_rbf(x, sigma, compute_dtype=compute_dtype, device=dev)
            u = _u_center_(K[i]).reshape(-1)
            selfs[i] = torch.dot(u, u)
    return K, selfs, int(n), expo


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
    Ua, kk, n, ea = _batch_kernels(xs, "xs", None, kernel, sigma, compute_dtype, device, buffers)
    Ub, ll, _, eb = ((None, None, n, ea) if ys is None
                     else _batch_kernels(ys, "ys", n, kernel, sigma, compute_dtype, device, buffers))
    kl, kk, ll = _centred_pairs(Ua, Ub, kk, ll)
    for side, terms in (("xs", kk), ("ys", ll if ys is not None else None)):
        if terms is not None and not bool(torch.isfinite(terms).all()):
            bad = torch.nonzero(~torch.isfinite(terms)).flatten().tolist()
            raise InputError(f"{side}{bad} of this batch contain NaN or Inf (or overflow the kernel): "
                             "remove or impute those rows first")
    return MinibatchHSIC(kl.cpu().clone(), kk.cpu().clone(), ll.cpu().clone(), ea.copy(), eb.copy(),
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
