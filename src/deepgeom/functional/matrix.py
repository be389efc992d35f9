r"""The matrix core: blocked Gram and covariance products in torch, shared by every estimator.

Everything that needs :math:`XY^\top` (N×N Gram matrices for CKA and kernel spectra) or
:math:`X^\top X` (D×D covariances for PCA and the feature-space route) goes through here, so the
choices that matter for speed and precision are made once:

* **Blocked.** Products are accumulated over blocks of features (for Gram) or rows (for
  covariance), so a memmap captured to disk is streamed and never loaded whole, and peak memory is
  the output plus one block.
* **Precision.** Each block product runs in ``compute_dtype`` (float32 is ~2× faster here) and is
  accumulated in float64; ``center=True`` subtracts exact float64 column means *before* the
  product, which removes the large common offset of ReLU features that otherwise cancels
  catastrophically in :math:`HKH`.
* **Device.** CPU threads by default, CUDA when ``device="auto"`` finds one; results are the same.
"""

from __future__ import annotations

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
    "covariance",
    "center_gram",
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


#: rows per block of a symmetric product on the CPU (measured: 64 saves a third at 256×1280)
_SYM_BLOCK = 64


def _self_product(A: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """A Aᵀ with each symmetric block pair computed once (the upper block triangle, mirrored).

    With b-row blocks this is (1 + b/N)/2 of the flops of the full product; on the CPU it pays
    from N = 2b (256 × 1280 in float64: 2.4 ms instead of 3.6 ms on one thread). On a GPU one
    large product is faster than many small ones, so it stays whole there. ``out`` (N×N, any float
    dtype) receives the result, converted on assignment.
    """
    n = A.shape[0]
    if A.device.type != "cpu" or n < 2 * _SYM_BLOCK:
        if out is None:
            return A @ A.T
        if out.dtype == A.dtype:
            return torch.matmul(A, A.T, out=out)
        return out.copy_(A @ A.T)
    K = torch.empty((n, n), dtype=A.dtype) if out is None else out
    for i in range(0, n, _SYM_BLOCK):
        j = i + _SYM_BLOCK
        K[i:j, i:] = A[i:j] @ A[i:].T
        K[j:, i:j] = K[i:j, j:].T
    return K


def gram(
    X: Any,
    Y: Any | None = None,
    *,
    center: bool = False,
    compute_dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    block_features: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Gram matrix :math:`K = \tilde X \tilde Y^\top` (N×M, float64), accumulated over feature blocks.

    With ``center=True`` the columns of X (and Y) are centred with their exact means first, so
    :math:`K = H X Y^\top H` with :math:`H = I - \frac1n 11^\top` (the centred kernel of
    Kornblith et al. 2019), computed without the cancellation of centring afterwards.

    Args:
        X: (N, D) array, tensor or memmap. Y: (M, D) or None for ``X Xᵀ``.
        center: subtract column means before the product (requires N == M when Y is given).
        compute_dtype: dtype of each block product; float32 is faster, accumulation is float64.
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
    itemsize = torch.tensor([], dtype=compute_dtype).element_size()
    block = block_features or block_size_for(n + (0 if same else m), itemsize)
    if same and isinstance(X, torch.Tensor) and block >= d:
        # one block of an in-memory tensor (a minibatch): centre with its float64 column means and
        # multiply once, straight into ``out``
        xb = X.to(device=dev, dtype=torch.float64)
        if center:
            xb = xb - xb.mean(0)
        K = torch.empty((n, n), dtype=torch.float64, device=dev) if out is None else out
        return _self_product(xb.to(compute_dtype), out=K)
    mx = column_mean(X) if center else None
    my = (mx if same else column_mean(Y)) if center else None
    K = torch.zeros((n, m), dtype=torch.float64, device=dev) if out is None else out.zero_()
    for start, stop, xb in iter_blocks(X, block, axis=1):
        xb = as_tensor(xb).to(device=dev, dtype=torch.float64)
        if center:
            xb = xb - mx[start:stop].to(dev)
        xb = xb.to(compute_dtype)
        if same:
            yb = xb
        else:
            yb = as_tensor(Y[:, start:stop]).to(device=dev, dtype=torch.float64)
            if center:
                yb = yb - my[start:stop].to(dev)
            yb = yb.to(compute_dtype)
        K += (_self_product(xb) if same else xb @ yb.T).to(torch.float64)
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
