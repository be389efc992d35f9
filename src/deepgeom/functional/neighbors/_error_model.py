r"""Floating-point error model of the candidate search: how far a blocked product
:math:`\hat d^2 = s_i + s_j - 2\,\tilde x_i\cdot\tilde x_j` can be from the true squared distance.

The margin proof (:mod:`._refine`) turns these bounds into a certificate that no point outside the
candidates can be nearer than the k-th found one (Higham, *Accuracy and Stability of Numerical
Algorithms*, §3.1).
"""

from __future__ import annotations

import math

import torch

from ..matrix import float32_matmul_is_exact_ieee

U32 = 2.0**-24  #: unit roundoff of float32
U64 = 2.0**-53  #: unit roundoff of float64
#: rounding steps outside the dot product in s_i + s_j - 2 x·y (norm rounding, two additions, the
#: centring of the data) — counted generously.
_EXTRA_ROUNDINGS = 8


def _gamma(h: int, u: float) -> float:
    """Higham's γ_h = h·u / (1 − h·u): bound on the relative error of an h-term dot product."""
    hu = h * u
    if hu >= 0.5:
        return math.inf
    return hu / (1.0 - hu)


def _matmul_unit(dtype: torch.dtype, dev: torch.device) -> float:
    """Unit roundoff of a matmul in ``dtype`` on ``dev`` (float32 may run as TF32/bf16 if torch allows)."""
    if dtype == torch.float64:
        return U64
    return U32 if float32_matmul_is_exact_ieee(dev) else 2.0**-8


U_BF16 = 2.0**-8  #: unit roundoff of bfloat16 (8 significant bits)


def _search_error(dtype: torch.dtype, h: int, dev: torch.device, d: int, chunks: int = 1) -> tuple[float, float]:
    r"""Error model (c, t) of a candidate search in ``dtype``: :math:`|\hat d^2-d^2| \le c(s_i+s_j) + t(1+|x|+|y|)`.

    float32/float64 products: a dot product of depth h errs by :math:`\gamma_h|x||y| \le
    \tfrac{\gamma_h}{2}(s_i+s_j)`, doubled in :math:`-2x\cdot y`, plus the roundings of the norms and
    additions (``_EXTRA_ROUNDINGS``) and two per feature chunk (``chunks``: the running sum that
    carries :math:`s_j` is rounded once per chunk).  Subnormal operands, products and sums err by
    an absolute half-ulp each (:math:`2^{-150}` in float32): at most :math:`(2h+\sqrt D+16)` of them
    per pair, the absolute term t.

    bfloat16 products (oneDNN: bf16 operands, float32 accumulation, bf16 result, then float32
    arithmetic): rounding both operands to bf16 errs by :math:`(2u_b+u_b^2)|x||y|`, the float32
    accumulation by :math:`\gamma_h(1+u_b)^2|x||y|`, rounding the result to bf16 by
    :math:`u_b(1+\gamma_h)(1+u_b)^2|x||y|`, with :math:`u_b = 2^{-8}`; the bf16 instructions flush
    subnormals, which moves each dot product by at most :math:`2^{-126}(\sqrt D(|x|+|y|) + D)`.

    int8 products (:mod:`._quantized`): the integer dot products are exact, so only the float32
    steps count: the scaling of each chunk's product, the chunks' running sum, the row scaling and
    the two norm additions, each rounding a value at most :math:`s_i+s_j` in magnitude, plus the
    norms' own rounding: :math:`2(8 + 2\,\text{chunks})u` covers them. The steps are at least
    :math:`2^{-100}`, so no operand oneDNN sees is subnormal and only the float32 steps after it can
    underflow (half an ulp, :math:`2^{-150}`, each). The distance between the quantized and the
    true points is the ``radius`` of the proof, not part of this model.

    The data are scaled by a power of two so that every centred value is below 1 in magnitude
    (:func:`_unit_scale`), so nothing overflows and subnormals only arise far below the data's scale.
    """
    roundings = _EXTRA_ROUNDINGS + 2 * chunks
    subnormal_ops = 2 * h + math.sqrt(d) + 16
    if dtype == torch.int8:  # exact integer products, then float32 scalings and sums (module _quantized)
        return 2 * roundings * U32, 2.0**-149 * (roundings + 8)
    if dtype == torch.bfloat16:  # bf16 products, float32 everything else
        g = _gamma(h, U32)
        c_dot = (2 * U_BF16 + U_BF16**2) + (1 + U_BF16) ** 2 * (g + U_BF16 * (1 + g))
        return c_dot + roundings * U32, 2.0 * 2.0**-126 * (math.sqrt(d) + d) + 2.0**-149 * subnormal_ops
    u = _matmul_unit(dtype, dev)
    half_ulp_min = 2.0**-1074 if dtype == torch.float64 else 2.0**-149
    return _gamma(h, u) + roundings * u, half_ulp_min * subnormal_ops


def _unit_scale(amax: float) -> float:
    """A power of two s with s·amax < 1 (s = 1 for amax = 0), within [2⁻¹⁰⁰⁰, 2¹⁰⁰⁰]: scaling by it
    is exact (short of subnormal results, which the error model's absolute term covers)."""
    if not amax > 0 or not math.isfinite(amax):
        return 1.0
    return math.ldexp(1.0, max(-1000, min(1000, -math.frexp(amax)[1])))


