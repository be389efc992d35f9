r"""Linear intrinsic dimension from the PCA spectrum (PC-ID; Ansuini et al. 2019).

With :math:`\lambda_1 \ge \lambda_2 \ge \dots` the eigenvalues of the covariance of X and
:math:`p_k = \lambda_k / \sum_j \lambda_j` the normalised spectrum:

* **PC-ID** = the smallest k with :math:`\sum_{j\le k} p_j \ge` ``threshold`` (0.9): the number of
  principal components that explain 90% of the variance.
* **Participation ratio** :math:`PR = (\sum_k \lambda_k)^2 / \sum_k \lambda_k^2` (Gao et al. 2017;
  Recanatesi et al. 2019), a smooth count of the dominant directions.

Ansuini et al.'s code (``IntrinsicDimDeep``) standardises each feature to unit variance first and
reports ``np.where(cumsum > 0.9)[0][0]``, a 0-based index, i.e. the component count minus one.
``standardize=True`` reproduces the first choice; ``ansuini_index`` in the result gives the second
(``n_components - 1``, for ``threshold`` not hit exactly).  Standardising changes the answer when
features have very different scales (e.g. a few large ReLU units); constant features are left at 0,
as scikit-learn's ``StandardScaler`` does.

The eigenvalues come from whichever side is cheaper: the D×D covariance :math:`\tilde X^\top\tilde X`
when D ≤ N, else the N×N centred Gram matrix :math:`\tilde X \tilde X^\top` (same nonzero spectrum),
both from :mod:`deepgeom.functional.matrix` (blocked, float64 accumulation, memmaps streamed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..._results import ResultMixin
from ..._validation import check_fraction
from ...errors import InputError
from ..matrix import as_tensor, block_size_for, column_mean, covariance, gram, iter_blocks, unit_scaled
from ._common import check_points, is_constant

__all__ = ["PCAIDResult", "pca_id"]


@dataclass(frozen=True)
class PCAIDResult(ResultMixin):
    """Result of :func:`pca_id`.

    Attributes:
        id: PC-ID, the number of components explaining ``threshold`` of the variance (an int; also
            ``.estimate`` and ``n_components``).
        ansuini_index: ``id - 1``, the 0-based index Ansuini et al.'s code reports.
        participation_ratio: :math:`(\\sum\\lambda)^2/\\sum\\lambda^2`.
        spectrum: the normalised eigenvalues :math:`p_k`, descending, length min(N, D).
        threshold, standardize: settings; n, d: the data's shape; method: always ``"pca"``.
    """

    id: int
    ansuini_index: int
    participation_ratio: float
    threshold: float
    standardize: bool
    n: int
    d: int
    method: str
    spectrum: np.ndarray = field(repr=False)

    @property
    def estimate(self) -> int:
        return self.id

    @property
    def n_components(self) -> int:
        return self.id


class _Standardized:
    """A lazy view of X with columns divided by their std (std 0 → 1); rows/columns sliced on demand."""

    def __init__(self, X: Any, std: np.ndarray):
        self.X, self.std, self.shape = X, std, X.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        blk = self.X[key]
        blk = blk.detach().cpu().numpy() if isinstance(blk, torch.Tensor) else np.asarray(blk)
        cols = key[1] if isinstance(key, tuple) else slice(None)
        return blk.astype(np.float64) / self.std[cols]


def _column_std(X: Any, mean: torch.Tensor) -> np.ndarray:
    n, d = X.shape
    ss = torch.zeros(d, dtype=torch.float64)
    for _, _, blk in iter_blocks(X, block_size_for(d, 8), axis=0):
        ss += ((as_tensor(blk).to(torch.float64).cpu() - mean) ** 2).sum(0)
    std = torch.sqrt(ss / n).numpy()
    return np.where(std > 0, std, 1.0)


def pca_id(
    X: Any,
    *,
    threshold: float = 0.9,
    standardize: bool = False,
    device: Any = None,
) -> PCAIDResult:
    r"""PC-ID: the number of principal components explaining ``threshold`` of the variance.

    .. math::  \mathrm{PC\text{-}ID} = \min\{k : \textstyle\sum_{j\le k}\lambda_j \ge
               \mathrm{threshold}\cdot\sum_j \lambda_j\}

    Args:
        X: (N, D) array, tensor or memmap with N ≥ 3 (constant data has no spectrum: error).
        threshold: explained-variance share in (0, 1] (0.9 as in Ansuini et al. 2019).
        standardize: divide every feature by its std first (Ansuini's code does).
        device: where products run (``"auto"`` picks CUDA when present).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((500, 4)) @ rng.standard_normal((4, 30))
        >>> pca_id(X, threshold=0.999).id <= 4
        True
    """
    threshold = check_fraction(threshold, "threshold", open_low=True)
    X = check_points(X)
    n, d = X.shape
    if is_constant(X):
        raise InputError(f"X is constant (all {n} rows identical): PC-ID is undefined")
    # PC-ID and PR are ratios of eigenvalues: data beyond 2^±64 are read scaled by a power of two
    # (exact), or the eigenvalues' squares would leave float64 (1e140 data overflowed)
    src, _ = unit_scaled(X)
    if standardize:
        src = _Standardized(src, _column_std(src, column_mean(src)))
    if d <= n:
        M = covariance(src, center=True, device=device)
    else:
        M = gram(src, center=True, device=device)
    evals = torch.linalg.eigvalsh(M).cpu().numpy()[::-1].clip(min=0.0)
    total = float(evals.sum())
    if not total > 0.0:
        raise InputError("X has zero variance after centring: PC-ID is undefined")
    spectrum = evals / total
    cum = np.cumsum(spectrum)
    k = int(np.searchsorted(cum, threshold * (1 - 1e-12), side="left")) + 1
    k = min(k, spectrum.size)
    pr = total**2 / float((evals**2).sum())
    return PCAIDResult(id=k, ansuini_index=k - 1, participation_ratio=float(pr), threshold=threshold,
                       standardize=bool(standardize), n=int(n), d=int(d), method="pca",
                       spectrum=spectrum[: min(n, d)].copy())
