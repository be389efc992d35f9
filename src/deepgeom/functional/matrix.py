r"""The matrix core: blocked Gram and covariance products in torch, shared by every estimator.

Everything that needs :math:`XY^\top` (N×N Gram matrices for CKA and kernel spectra) or
:math:`X^\top X` (D×D covariances for PCA and the feature-space route) goes through here, so the
choices that matter for speed and precision are made once:

* **Blocked.** Products are accumulated over blocks of features (for Gram) or rows (for
  covariance), so a memmap captured to disk is streamed and never loaded whole, and peak memory is
  the output plus one block.
* **Precision.** Each block product runs in ``compute_dtype`` (float32 products are the fast path) and is
  accumulated in float64; ``center=True`` subtracts exact float64 column means *before* the
  product, which removes the large common offset of ReLU features that otherwise cancels
  catastrophically in :math:`HKH`.
* **Device.** CPU threads by default, CUDA when ``device="auto"`` finds one; results are the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = [
    "resolve_device",
    "as_tensor",
    "iter_blocks",
    "block_size_for",
    "column_mean",
    "gram",
    "product_dtype",
    "float32_matmul_is_exact_ieee",
    "covariance",
    "center_gram",
    "max_abs_exponent",
    "PowerOfTwoScaled",
    "unit_scaled",
    "mul_pow2",
]

#: Default working-memory budget for one block, in bytes (the output matrix comes on top).
DEFAULT_BLOCK_BYTES = 256 * 2**20


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"cpu"`` → CPU; ``"auto"`` → CUDA if available else CPU; anything else as torch reads it."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_tensor(X: Any, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> torch.Tensor:
    """A torch view of X (zero-copy for a contiguous CPU numpy array), cast/moved only if asked."""
    if isinstance(X, torch.Tensor):
        t = X
    else:
        arr = np.asarray(X)
        if arr.dtype == np.float16 or not arr.flags.writeable or arr.dtype.byteorder not in "=|":
            arr = np.array(arr, dtype=np.float32 if arr.dtype == np.float16 else arr.dtype.newbyteorder("="))
        t = torch.from_numpy(arr)
    if dtype is not None or device is not None:
        t = t.to(device=resolve_device(device) if device is not None else t.device, dtype=dtype or t.dtype)
    return t


def block_size_for(n_other: int, itemsize: int = 8, budget_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Largest block length such that a (block × n_other) slab fits in ``budget_bytes``."""
    return max(1, int(budget_bytes // max(1, n_other * itemsize)))


def iter_blocks(X: Any, block: int, axis: int = 0) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(start, stop, X_block)`` along ``axis`` (0 rows, 1 columns) without copying X whole.

    Works for torch tensors, numpy arrays and numpy memmaps; for a memmap only the block is read.
    """
    n = X.shape[axis]
    for start in range(0, n, block):
        stop = min(n, start + block)
        yield start, stop, (X[start:stop] if axis == 0 else X[:, start:stop])


def column_mean(X: Any, *, block_rows: int | None = None) -> torch.Tensor:
    """Exact float64 column means of X, streamed over row blocks (CPU tensor of shape (D,))."""
    n, d = X.shape
    block_rows = block_rows or block_size_for(d, 8)
    total = torch.zeros(d, dtype=torch.float64)
    for _, _, blk in iter_blocks(X, block_rows, axis=0):
        total += as_tensor(blk).to(torch.float64).sum(0).cpu()
    return total / n


#: rows per block of a symmetric product on the CPU (the fastest size measured; BENCHMARKS.md)
_SYM_BLOCK = 64


def _sym_block(n: int) -> int:
    """Rows per block of a symmetric CPU product of n rows, 0 for one whole product. On one thread
    64-row blocks are fastest; with more threads each block product must be large enough to split
    across them, and at n ≤ 256 the whole product wins (measurements in BENCHMARKS.md)."""
    if torch.get_num_threads() <= 1:
        return _SYM_BLOCK if n >= 2 * _SYM_BLOCK else 0
    return 0 if n <= 256 else min(max(128, n // 4), 256)


def _self_product(A: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """A Aᵀ with each symmetric block pair computed once (the upper block triangle, mirrored), in the
    block plan of :func:`_sym_block`.

    With b-row blocks this is (1 + b/N)/2 of the flops of the full product; on the CPU it pays
    from N = 2b. On a GPU one large product is faster than many small ones, so it stays whole there.
    ``out`` (N×N, any float dtype) receives the result, converted on assignment. BLAS ``syrk``
    through scipy is not used: its thread pool spins beside torch's (timings in BENCHMARKS.md); the
    minibatch CKA kernels call the MKL inside torch instead (:mod:`._syrk`).
    """
    n = A.shape[0]
    b = _sym_block(n)
    if A.device.type != "cpu" or b == 0:
        if out is None:
            return A @ A.T
        if out.dtype == A.dtype:
            return torch.matmul(A, A.T, out=out)
        return out.copy_(A @ A.T)
    K = torch.empty((n, n), dtype=A.dtype) if out is None else out
    for i in range(0, n, b):
        j = i + b
        K[i:j, i:] = A[i:j] @ A[i:].T
        K[j:, i:j] = K[i:j, j:].T
    return K


def float32_matmul_is_exact_ieee(dev: torch.device) -> bool:
    """Whether torch runs float32 matmuls on ``dev`` in IEEE float32 (not TF32/bf16 internally).

    ``torch.set_float32_matmul_precision("high"/"medium")`` or, on CUDA,
    ``torch.backends.cuda.matmul.allow_tf32 = True`` let torch round inputs to 10 or 8 bits.
    """
    try:
        full = torch.get_float32_matmul_precision() == "highest"
    except Exception:  # noqa: BLE001 - a precision setting torch will not report: assume the worst
        full = False
    if dev.type == "cuda":
        full = full and not bool(torch.backends.cuda.matmul.allow_tf32)
    return full


def product_dtype(compute_dtype: torch.dtype | str, X: Any, dev: torch.device | None = None) -> torch.dtype:
    """The dtype Gram products run in; ``"auto"`` → the data's own precision, at least float32.

    float32 (or narrower) data get float32 products, anything else float64 — and float64 too when
    torch is set to run float32 matmuls on ``dev`` in TF32/bf16 (:func:`float32_matmul_is_exact_ieee`).
    After exact centring a float32 product errs by about ``sqrt(D)·2⁻²⁴`` of the rows' norms per
    entry, the order of the rounding already inside float32 activations (each an inner product of a
    float32 forward pass), so it changes no digit such data carry. (CKA heatmaps,
    ``bench/BENCHMARKS_cka.md``: 1e-9 from float64 products, while one model's float32 forward
    passes on two devices differ by 3e-8.) Centring kernels afterwards (H·H, U-centring) removes
    the diagonal's share, which amplifies that error when a batch is small next to its width
    (measured on i.i.d. Gaussian layers, CKA against float64 products: 2e-5 at n = 8, D = 10⁵;
    1.7e-6 at n = 16; 2.2e-7 at n = 32 — 6e-8 at n = 64), so "auto" keeps float32 only for
    n ≥ 32 rows and D ≤ 100·n² features.
    """
    if isinstance(compute_dtype, torch.dtype):
        return compute_dtype
    if compute_dtype != "auto":
        raise InputError(f"compute_dtype must be a torch floating dtype or 'auto'; got {compute_dtype!r}")
    dtype = X.dtype if isinstance(X, torch.Tensor) else torch.from_numpy(np.empty(0, np.asarray(X[:0]).dtype)).dtype
    n, d = X.shape
    narrow = dtype in (torch.float32, torch.float16, torch.bfloat16) and n >= 32 and d <= 100 * n * n
    return torch.float32 if narrow and float32_matmul_is_exact_ieee(dev or torch.device("cpu")) else torch.float64


def _out_of_range(K: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether a symmetric Gram product in ``dtype`` may have overflowed or lost digits to underflow.

    Read from the diagonal — squared row norms, which bound every entry (Cauchy–Schwarz): within
    2⁸ of the dtype's largest number, or all so small that the products that matter (a mantissa's
    width below the largest) would fall under its smallest normal number, or not a number at all
    (an overflow inside the centring; NaN data are told apart by :func:`_exponent`).
    """
    return not bool(diagonal_in_range(torch.diagonal(K).max(), dtype))


def diagonal_in_range(top: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Elementwise :func:`_out_of_range`'s test, negated, on the largest diagonal entries ``top`` of
    one or more Gram products in ``dtype`` (NaN: not in range)."""
    fi = torch.finfo(dtype)
    digits = 2.0 ** (2 * (round(-math.log2(fi.eps)) + 1))
    return (top >= fi.tiny * digits) & (top <= fi.max / 2**8)  # 0: all products may have underflowed


def _exponent(X: Any, center: bool) -> int:
    """e with max |X̃| = m·2ᵉ, m ∈ [½, 1), X̃ the (centred) data, from a streamed float64 pass —
    float64 holds every float32 magnitude, so neither overflow nor subnormals get in the way; 0 if
    X̃ is 0 or not finite (NaN/Inf data stay for the callers' checks)."""
    mean = column_mean(X) if center else None
    top = 0.0
    for _, _, blk in iter_blocks(X, block_size_for(X.shape[1], 8), axis=0):
        b = as_tensor(blk).to(torch.float64)
        top = max(top, float((b if mean is None else b - mean.to(b.device)).abs().max()))
    return math.frexp(top)[1] if math.isfinite(top) and top > 0 else 0


def gram(
    X: Any,
    Y: Any | None = None,
    *,
    center: bool = False,
    compute_dtype: torch.dtype | str = torch.float64,
    device: str | torch.device | None = None,
    block_features: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Gram matrix :math:`K = \tilde X \tilde Y^\top` (N×M, float64), accumulated over feature blocks.

    With ``center=True`` the columns of X (and Y) are centred with their exact means first, so
    :math:`K = H X Y^\top H` with :math:`H = I - \frac1n 11^\top` (the centred kernel of
    Kornblith et al. 2019), computed without the cancellation of centring afterwards. The centred
    data are rounded once to ``compute_dtype`` — except a float32 in-memory tensor with float32
    products, centred by two float32 passes (2.4× cheaper): its K is H X Xᵀ H within the float32
    bound up to a common shift of the rows by a few float32 roundings of the spread, which every
    centred kernel (H·H, U-centring) removes and which shows only in rows lying at the column mean.
    When a product of X with itself comes out of the dtype's range (data near 1e19 or 1e-19 in
    float32) it is redone on the centred data scaled by a power of two, which is exact.

    Args:
        X: (N, D) array, tensor or memmap. Y: (M, D) or None for ``X Xᵀ``.
        center: subtract column means before the product (requires N == M when Y is given).
        compute_dtype: dtype of each block product, accumulated in float64; float32 is about twice
            as fast; ``"auto"`` follows the data (:func:`product_dtype`).
        device: where products run (``"auto"`` picks CUDA when present); the result is on that device.
        block_features: columns per block; default keeps one block within ~256 MiB.
        out: a float64 (N, M) tensor on ``device`` to write the result into (e.g. a slot of a stack).

    Example:
        >>> import numpy as np
        >>> X = np.arange(6.0).reshape(3, 2)
        >>> gram(X).numpy().tolist()
        [[1.0, 3.0, 5.0], [3.0, 13.0, 23.0], [5.0, 23.0, 41.0]]
    """
    dev = resolve_device(device)
    same = Y is None
    Y = X if same else Y
    n, d = X.shape
    m = Y.shape[0]
    if Y.shape[1] != d:
        raise InputError(f"X and Y need the same number of features for a Gram matrix; got {d} and {Y.shape[1]}")
    dtype = product_dtype(compute_dtype, X, dev)
    block = block_features or block_size_for(n + (0 if same else m), torch.finfo(dtype).bits // 8)
    K = torch.empty((n, m), dtype=torch.float64, device=dev) if out is None else out
    if not same:
        return _cross_product(K, X, Y, center, dtype, dev, block)
    _self_gram(K, X, center, dtype, dev, block, 0)
    if _out_of_range(K, dtype):
        e = _exponent(X, center)
        if e and abs(e) < 1000:  # beyond that float64 itself cannot hold 2⁻ᵉ or the result
            _self_gram(K, X, center, dtype, dev, block, e)
    return K


def _centred(X: Any, mean: torch.Tensor | None, dtype: torch.dtype, dev: torch.device, scale: float = 1.0,
             ) -> torch.Tensor:
    """(X·scale − mean) rounded once to ``dtype`` (the subtraction runs in the mean's float64).

    ``scale`` is a power of two (exact), applied first so that neither the centred values nor their
    products leave the dtype's range; ``mean`` is the mean of the scaled data.
    """
    X = as_tensor(X).to(dev)
    if scale != 1.0:
        X = X.to(torch.float64) * scale  # exact: float64's range holds any 2⁻ᵉ and the scaled data
    if mean is None:
        return X.to(dtype)
    xb = torch.empty(X.shape, dtype=dtype, device=dev)
    return torch.sub(X, mean, out=xb)


def _self_gram(K: torch.Tensor, X: Any, center: bool, dtype: torch.dtype, dev: torch.device, block: int,
               e: int) -> None:
    """K ← X̃ X̃ᵀ over feature blocks (one block for an in-memory minibatch), products in ``dtype``,
    on the data scaled by 2⁻ᵉ (the result scaled back)."""
    n, d = X.shape
    scale = 2.0**-e
    if isinstance(X, torch.Tensor) and block >= d:
        # a minibatch: one product into K
        X = X.to(dev, torch.float64) * scale if e else X.to(dev)  # exact in float64 (any float32 range)
        if center and X.dtype == dtype == torch.float32:
            # float32 data for float32 products: centred in float32 twice, the second pass removing
            # what the first mean's rounding left — 2.4× cheaper than float64 means at 256 × 1,280;
            # the result is within float32 rounding of the exactly centred data, up to a common
            # shift of a few roundings that every centred kernel (H·H, U-centring) annihilates
            xb = X - X.mean(0)
            xb -= xb.mean(0)
        else:
            xb = _centred(X, X.sum(0, dtype=torch.float64) / n if center else None, dtype, dev)
        _self_product(xb, out=K)
    else:
        mean = column_mean(X).to(dev) * scale if center else None
        K.zero_()
        for start, stop, xb in iter_blocks(X, block, axis=1):
            xb = _centred(xb, None if mean is None else mean[start:stop], dtype, dev, scale)
            K += _self_product(xb).to(torch.float64)
    if e:
        K.mul_(2.0**e).mul_(2.0**e)  # 4ᵉ itself may not be a float64


def _cross_product(K: torch.Tensor, X: Any, Y: Any, center: bool, dtype: torch.dtype, dev: torch.device,
                   block: int) -> torch.Tensor:
    """K ← X̃ Ỹᵀ accumulated over feature blocks."""
    mx = column_mean(X).to(dev) if center else None
    my = column_mean(Y).to(dev) if center else None
    K.zero_()
    for start, stop, xb in iter_blocks(X, block, axis=1):
        xb = _centred(xb, None if mx is None else mx[start:stop], dtype, dev)
        yb = _centred(Y[:, start:stop], None if my is None else my[start:stop], dtype, dev)
        K += (xb @ yb.T).to(torch.float64)
    return K


def covariance(
    X: Any,
    *,
    center: bool = True,
    compute_dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    block_rows: int | None = None,
) -> torch.Tensor:
    r"""Feature-space second moment :math:`\tilde X^\top \tilde X` (D×D, float64, *not* divided by N).

    The cheap side when D ≪ N: the nonzero eigenvalues of :math:`X^\top X` equal those of the Gram
    matrix :math:`X X^\top`. ``center=True`` uses exact column means (two passes over a memmap).
    """
    dev = resolve_device(device)
    n, d = X.shape
    mean = column_mean(X).to(dev) if center else None
    itemsize = torch.tensor([], dtype=compute_dtype).element_size()
    block_rows = block_rows or block_size_for(d, itemsize)
    C = torch.zeros((d, d), dtype=torch.float64, device=dev)
    for _, _, xb in iter_blocks(X, block_rows, axis=0):
        xb = as_tensor(xb).to(device=dev, dtype=torch.float64)
        if center:
            xb = xb - mean
        xb = xb.to(compute_dtype)
        C += (xb.T @ xb).to(torch.float64)
    return C


def center_gram(K: torch.Tensor) -> torch.Tensor:
    r"""Double-centre a square kernel: :math:`HKH`, with :math:`H = I - \frac1n 11^\top` (float64)."""
    K = K.to(torch.float64)
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


# ------------------------------------------------------------------------------------- scale range
#: |log2 max|X|| beyond which scale-invariant estimators read the data through :class:`PowerOfTwoScaled`:
#: below it every square, Gram entry and sum of squared entries (N²D²·2⁴ᵉ) stays far inside float64.
SAFE_EXPONENT = 64


def mul_pow2(t: Any, k: int) -> Any:
    """``t · 2ᵏ`` exactly (up to underflow of the result) for a float64 numpy array or tensor, any integer k.

    ``2.0**k`` alone overflows for k > 1023 and is 0 for k < −1074 although the product may be a
    normal number (data near 1e−310 scaled up, 1e308 scaled down): the factor is applied in steps.
    """
    k = int(k)
    while k:
        step = max(-1000, min(1000, k))
        t = t * 2.0**step
        k -= step
    return t


def max_abs_exponent(X: Any) -> int:
    """e with max |X| in [2ᵉ⁻¹, 2ᵉ) (``math.frexp``), streamed over row blocks; 0 for all-zero or
    non-finite data (NaN/Inf stay for the callers' finiteness checks)."""
    top = 0.0
    if isinstance(X, torch.Tensor):
        if X.numel():
            lo, hi = torch.aminmax(X.detach()) if X.dtype != torch.bool else (0, 1)
            top = max(-float(lo), float(hi))
    else:
        for _, _, blk in iter_blocks(X, block_size_for(int(X.shape[1]), 8, 64 * 2**20), axis=0):
            b = np.asarray(blk)
            if b.size:
                top = max(top, float(np.abs(b).max()))
    return math.frexp(top)[1] if math.isfinite(top) and top > 0 else 0


class PowerOfTwoScaled:
    r"""A lazy view of an (N, D) array multiplied by :math:`2^{-e}`, read block by block as float64.

    Scaling by a power of two is exact (no bits are lost unless a value falls below float64's
    smallest normal number, which the choice of e avoids for everything within 2⁵² of the largest
    value), so every estimator that is invariant to the scale of its input (CKA, PC-ID, neural
    collapse) gives the same answer on the view, and a spectrum's eigenvalues are those of the view
    times :math:`4^{e}`.  It exists so that data near 1e±300 — whose squares or their sums leave
    float64's range — are measured instead of overflowing; a memmap stays streamed (only the slice
    asked for is read).  ``shape``, ``ndim``, ``dtype`` (float64) and slicing are what the matrix
    core uses.
    """

    def __init__(self, X: Any, e: int):
        self.X, self.e = X, int(e)
        self.shape = tuple(int(s) for s in X.shape)
        self.ndim = len(self.shape)
        self.dtype = torch.float64 if isinstance(X, torch.Tensor) else np.dtype(np.float64)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        blk = self.X[key]
        if isinstance(blk, torch.Tensor):
            return mul_pow2(blk.detach().to(torch.float64), -self.e)
        return mul_pow2(np.asarray(blk, dtype=np.float64), -self.e)


def unit_scaled(X: Any, *, limit: int = SAFE_EXPONENT) -> tuple[Any, int]:
    """``(X', e)`` with X = X'·2ᵉ: X itself (e = 0) when max |X| lies within 2^±``limit``, else a
    :class:`PowerOfTwoScaled` view whose largest value is in [½, 1).  For scale-invariant estimators
    (Kornblith et al.'s CKA, PC-ID, Papyan et al.'s NC1–NC4) and spectra (eigenvalues × 4ᵉ)."""
    e = max_abs_exponent(X)
    if -limit <= e <= limit:
        return X, 0
    return PowerOfTwoScaled(X, e), e
