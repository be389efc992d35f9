r"""Candidate products in 8-bit integers: the search for CPUs without native bfloat16.

Where bfloat16 is emulated (AVX2, AVX-512 without BF16) it runs at a tenth of float32's rate, but
8-bit integer products (oneDNN's int8 matmul, which torch ships for its quantized inference) run at
about twice float32's. Each centred row is quantized with its own step,
:math:`\hat x_i = \sigma_i q_i`, :math:`q_i \in \{-63,\dots,63\}^D`, :math:`\sigma_i = \max_f |x_{if}|/63`,
and the integer dot products :math:`q_i\cdot q_j` are exact (int32 accumulation; feature chunks of
at most 4,096 keep :math:`|q_i\cdot q_j| < 2^{24}`, so even their float32 output is exact). The
searched values are

.. math:: \hat d^2_{ij} = \mathrm{fl}_{32}\big(s_i + s_j - 2\,\sigma_i\sigma_j\,(q_i\cdot q_j)\big),
   \qquad s_i = \|\hat x_i\|^2,

the squared distance of the quantized points up to a few float32 roundings (the error model's
``int8`` case). The proof needs no floating-point bound for the products: by the triangle
inequality :math:`|\,\|x_i-x_j\| - \|\hat x_i-\hat x_j\|\,| \le r_i + r_j` with
:math:`r_i = \|x_i - \hat x_i\|`, bounded per row (:func:`quantize_rows`; the ``radius`` of :func:`._refine._refine`).

Why 63 levels and not 127: without AVX-512 VNNI the int8 kernels multiply unsigned by signed bytes
and add pairs in saturating int16 (``vpmaddubsw``); with :math:`q+64 \le 127` on the unsigned side
and :math:`|q| \le 63` on the signed side a pair is at most :math:`2\cdot127\cdot63 < 2^{15}`, so
nothing saturates on any x86 CPU, and one quantization serves both sides of the symmetric product.
The bound is wider than bfloat16's (a residual of ~1% of the norm for bounded features, more for
heavy-tailed ones), so :func:`knn` runs a pilot first and keeps float32 where it would not certify.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._search import _merge

__all__ = ["int8_available", "QuantizedRows", "quantize_rows", "int8_products", "int8_against_all",
           "int8_symmetric_search"]

LEVELS = 63  #: |q| ≤ 63 (see the module docstring: no int16 saturation without VNNI)
EXACT_DEPTH = 4096  #: features per product chunk: 4096·63² < 2²⁴, so each chunk's float32 output is exact
BLOCK = 512  #: rows per packed column block (oneDNN ran at its int8 peak from 512×512 blocks up)

_AVAILABLE: bool | None = None


def int8_available() -> bool:
    """Does this torch build multiply int8 matrices through oneDNN, exactly?  Checked once, on a
    product whose pairs would saturate int16 if the kernels mishandled the ranges used here."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = False
        try:
            g = torch.Generator().manual_seed(0)
            q = torch.randint(-LEVELS, LEVELS + 1, (64, 700), generator=g, dtype=torch.int8)
            q[:, :16] = LEVELS  # worst case for the unsigned side's pairs
            got = int8_products(_unsigned(q[:40]), _pack(q[40:], 40), torch.ones(24))
            _AVAILABLE = torch.equal(got.double(), q[:40].double() @ q[40:].double().T)
        except (RuntimeError, AttributeError, NotImplementedError):
            _AVAILABLE = False
    return _AVAILABLE


def _unsigned(q: torch.Tensor) -> torch.Tensor:
    """q + 64 as uint8 (oneDNN's unsigned left-hand side, zero point 64)."""
    return q.to(torch.int16).add_(LEVELS + 1).to(torch.uint8)


def _pack(q: torch.Tensor, rows_hint: int) -> Any:
    """oneDNN's packed layout of the int8 rows ``q`` (the right-hand side of a product)."""
    return torch.ops.onednn.qlinear_prepack(q.contiguous(), [rows_hint, q.shape[1]])


def int8_products(u_left: torch.Tensor, packed: Any, col_scale: torch.Tensor) -> torch.Tensor:
    """float32 ``col_scale[j] · (q_left[i] · q_right[j])`` for ``u_left`` = q_left + 64 (uint8) and the
    packed right-hand rows: the integer sums are exact, the zero point 64 removed by oneDNN."""
    n = col_scale.shape[0]
    return torch.ops.onednn.qlinear_pointwise(u_left, 1.0, LEVELS + 1, packed, col_scale.float(),
                                              torch.zeros(n, dtype=torch.int32), None, 1.0, 0, torch.float32,
                                              "none", [], "")


@dataclass
class QuantizedRows:
    """Rows as per-row steps times small integers, ready for products: the unsigned left-hand side
    and the packed right-hand side in feature chunks of at most ``EXACT_DEPTH``."""

    u: list[torch.Tensor]  #: uint8 q + 64 per feature chunk, (N, ≤ 4096)
    blocks: list[tuple[slice, list[Any]]]  #: each ``BLOCK``-row block of q, packed per feature chunk
    sigma: torch.Tensor  #: (N,) float32 step per row
    sq: torch.Tensor  #: (N,) float64 ‖σ_i q_i‖²
    radius: torch.Tensor  #: (N,) float64 ≥ ‖x_i − σ_i q_i‖ (x_i: the centred float32 row)
    sq_x: torch.Tensor  #: (N,) float64 ‖x_i‖²


#: the smallest step: products of two steps and an integer stay far above float32's subnormals
#: (a row whose values are all below 63·2⁻¹⁰⁰ is quantized to 0, its residual being its norm)
_MIN_STEP = 2.0**-100


def quantize_rows(rows: Callable[[int, int], torch.Tensor], n: int, d: int, rows_hint: int,
                  block_bytes: int = 2**20) -> QuantizedRows:
    r"""Quantize the centred float32 rows ``rows(r0, r1)`` block by block (``block_bytes`` of float32:
    they stay in cache, and no centred copy of the data is kept): :math:`\sigma_i = \max(\max_f|x_{if}|/63,
    2^{-100})` (float32), :math:`q_i = \mathrm{round}(x_i/\sigma_i)`, their norms, the rows' own float64
    squared norms, the residual radii, and the packed blocks (``rows_hint``: the left-hand rows per
    product, for oneDNN's layout).

    :math:`\sum_f q_{if}^2` is an integer below :math:`2^{24}` per feature chunk, so exact in float32;
    the residual :math:`e_i = x_i - \sigma_i q_i` is computed in float32 with two roundings per value
    (:math:`\le 2u(|x| + |\sigma q|)`, plus :math:`2^{-149}` where it underflows) and its norm in
    float64, so :math:`r_i = (1+\epsilon)\,(\mathrm{fl}(\|e_i\|) + 2u(\|x_i\| + \|\hat x_i\|)) + 2^{-148}\sqrt D`
    bounds the true residual (:math:`\epsilon` = (D+2)·2⁻²⁴, generous for the float64 norms)."""
    sigma = torch.empty(n, dtype=torch.float32)
    q = torch.empty((n, d), dtype=torch.int8)
    u = torch.empty((n, d), dtype=torch.uint8)
    qsq = torch.zeros(n, dtype=torch.float64)
    sq_x = torch.empty(n, dtype=torch.float64)
    enorm = torch.empty(n, dtype=torch.float64)
    chunks = [slice(c0, c0 + EXACT_DEPTH) for c0 in range(0, d, EXACT_DEPTH)]
    rb = max(1, block_bytes // (4 * d))
    for r0 in range(0, n, rb):
        r1 = min(n, r0 + rb)
        x = rows(r0, r1)
        s = sigma[r0:r1]
        torch.maximum(x.amin(1).neg_(), x.amax(1), out=s)  # faster than aminmax
        s = s.div_(LEVELS).clamp_min_(_MIN_STEP)[:, None]
        qf = torch.div(x, s).round_().clamp_(-LEVELS, LEVELS)  # integers, exact in float32
        # norms in float64: squares of float32 values neither underflow nor overflow there
        enorm[r0:r1] = torch.linalg.vector_norm(torch.addcmul(x, qf, s, value=-1.0), dim=1, dtype=torch.float64)
        sq_x[r0:r1] = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64).square_()
        for c in chunks:
            qsq[r0:r1] += torch.linalg.vecdot(qf[:, c], qf[:, c]).double()  # exact: integers < 2²⁴
        q[r0:r1] = qf
        u[r0:r1] = qf.add_(LEVELS + 1)
    U = 2.0**-24
    g = (d + 2) * U
    sq = sigma.double() ** 2 * qsq  # two float64 roundings: inside the error model's count
    # (+ half an ulp of float32's smallest subnormal per operation, for values that underflow)
    radius = (1 + g) * (enorm + 2 * U * (sq_x.sqrt() + sq.sqrt())) + 2.0**-148 * math.sqrt(d)
    blocks = []
    for j0 in range(0, n, BLOCK):
        cols = slice(j0, min(n, j0 + BLOCK))
        blocks.append((cols, [_pack(q[cols, c], rows_hint) for c in chunks]))
    us = [u] if d <= EXACT_DEPTH else [u[:, c].contiguous() for c in chunks]
    return QuantizedRows(u=us, blocks=blocks, sigma=sigma, sq=sq, radius=radius, sq_x=sq_x)


def _d2(qr: QuantizedRows, rows: slice | torch.Tensor, packs: list[Any], cols: slice) -> torch.Tensor:
    """Searched squared distances of ``rows`` against the packed column block ``cols``."""
    sig = qr.sigma
    col_scale = -2.0 * sig[cols]  # exact: a power of two times float32
    y = None
    for u, pk in zip(qr.u, packs, strict=True):
        part = int8_products(u[rows], pk, col_scale)
        y = part if y is None else y.add_(part)
    return y.mul_(sig[rows][:, None]).add_(qr.sq[cols].float()[None, :]).add_(qr.sq[rows].float()[:, None])


def int8_against_all(qr: QuantizedRows, rows: torch.Tensor) -> torch.Tensor:
    """The (len(rows), N) searched squared distances of ``rows`` against every row (a pilot's strip)."""
    return torch.cat([_d2(qr, rows, packs, cols) for cols, packs in qr.blocks], 1)


def int8_symmetric_search(qr: QuantizedRows, K: int, budget: int, bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """K smallest searched squared distances per row, each unordered pair computed once.

    For each packed column block J, the rows up to J's end (in strips of at most ``budget``/(12·BLOCK)
    rows) are multiplied with it; within J's own square only pairs above the diagonal count. Each
    strip updates its rows (top-k along rows) and J's rows (top-k down the columns).
    """
    n = qr.sigma.shape[0]
    cand_v = torch.full((n, K), math.inf, dtype=torch.float32)
    cand_i = torch.full((n, K), -1, dtype=torch.int64)
    R = max(BLOCK, budget // (12 * BLOCK))
    for cols, packs in qr.blocks:
        j0, j1 = cols.start, cols.stop
        for i0 in range(0, j1, R):
            i1 = min(j1, i0 + R)
            d2 = _d2(qr, slice(i0, i1), packs, cols)
            if i1 > j0:  # J's own rows: keep i < j only (each pair once, no point against itself)
                lo = max(i0, j0)
                sub = d2[lo - i0 : i1 - i0]
                sub.masked_fill_(torch.ones(sub.shape, dtype=torch.bool).tril_(lo - j0), math.inf)
            # rows whose K-th candidate is already below every value here gain nothing: skip them
            # (42% of the rows per strip on average at N = 10,000, D = 4,096; BENCHMARKS.md)
            live = (d2.amin(1) < cand_v[i0:i1, -1]).nonzero()[:, 0]
            if len(live):
                whole = len(live) > (i1 - i0) * 0.9  # nearly all: no gather of the live rows
                v, p = torch.topk(d2 if whole else d2[live], min(K, j1 - j0), dim=1, largest=False, sorted=False)
                _merge(cand_v, cand_i, slice(i0, i1) if whole else live + i0, v, p + j0)
            v, p = torch.topk(d2, min(K, i1 - i0), dim=0, largest=False, sorted=False)
            _merge(cand_v, cand_i, cols, v.T, p.T + i0)
        if bar is not None:
            w = j1 - j0
            bar.update(j0 * w + w * (w + 1) // 2)
    return cand_v, cand_i
