"""The feature-kernel eigen-decomposition (:func:`feature_spectrum`) and Π(k) alignment curves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..._results import ResultMixin
from ..._validation import check_labels, check_matrix, check_positive_int
from ...errors import InputError
from .. import matrix

_EPS = float(np.finfo(np.float64).eps)


def rank_tolerance(eigenvalues: np.ndarray, n: int, d: int) -> float:
    r"""Eigenvalues at or below :math:`\max(n, d)\,\epsilon_{64}\,\rho_1` are numerically zero.

    This is the usual matrix-rank cut (as in ``numpy.linalg.matrix_rank``): the eigen-solver's error on
    a symmetric matrix is of order :math:`\epsilon\lVert G\rVert`, summed over up to ``max(n, d)`` terms.
    """
    top = float(eigenvalues[0]) if len(eigenvalues) else 0.0
    return max(n, d) * _EPS * max(top, 0.0)


@dataclass(frozen=True)
class Spectrum(ResultMixin):
    """Eigen-decomposition of the feature kernel of Φ on a sample (see the module docstring).

    Attributes:
        eigenvalues: all ``min(n, D)`` eigenvalues ρ_k of G = ΦᵀΦ/n, descending, clipped at 0.
        eigenfunctions: ``(n, r)`` values e_k(x_i) of the ``r`` retained modes ((1/n) EᵀE = I).
        eigenvectors: ``(D, r)`` unit feature-space directions u_k, or None if not requested.
        rank: number of eigenvalues above :func:`rank_tolerance` (modes with eigenfunctions ≤ this).
        n_samples, n_features: shape of Φ. centered: whether Φ's column means were removed.
        route: ``"gram"`` (N×N kernel) or ``"covariance"`` (D×D), whichever was computed.
        feature_mean: the subtracted column means (centred spectra), to evaluate e_k at new points.
        target_alignment: Π*(k) of the targets, k = 1..r, or None. output_alignment: Π(k) of the outputs.
        n_classes: number of classes when integer labels were given as targets, else None.
    """

    eigenvalues: np.ndarray
    eigenfunctions: np.ndarray
    eigenvectors: np.ndarray | None
    rank: int
    n_samples: int
    n_features: int
    centered: bool
    route: str
    feature_mean: np.ndarray | None = None
    target_alignment: np.ndarray | None = None
    output_alignment: np.ndarray | None = None
    n_classes: int | None = None

    @property
    def n_modes(self) -> int:
        """Number of retained eigenfunctions ``r``."""
        return int(self.eigenfunctions.shape[1])

    def evaluate(self, Phi: Any) -> np.ndarray:
        r"""Eigenfunctions at new points: :math:`e_k(x) = u_k^\top(\Phi(x) - \mu)/\sqrt{\rho_k}` → ``(m, r)``."""
        if self.eigenvectors is None:
            raise InputError("this Spectrum was computed with eigenvectors=False; recompute it to evaluate new points")
        Phi = check_matrix(Phi, "Phi")
        if Phi.shape[1] != self.n_features:
            raise InputError(f"Phi has {Phi.shape[1]} features; the spectrum was computed on {self.n_features}")
        X = matrix.as_tensor(Phi).to(torch.float64)
        if self.feature_mean is not None:
            X = X - torch.from_numpy(self.feature_mean)
        U = torch.from_numpy(self.eigenvectors)
        rho = torch.from_numpy(self.eigenvalues[: self.n_modes])
        return (X @ U / rho.sqrt()).numpy()


def as_target_matrix(targets: Any, n: int, name: str = "targets", n_classes: int | None = None) -> tuple[np.ndarray, int | None]:
    """Targets as an ``(n, m)`` float64 matrix: integer labels → one-hot (returns C), floats as given.

    Integer-typed 1-D arrays are class labels (0..C-1; C = ``n_classes`` or max label + 1); float arrays
    (1-D or 2-D) are continuous targets (regression, network outputs) and are used as they are.
    """
    t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    if t.shape[0] != n:
        raise InputError(f"{name} must have one row per example ({n}); got {t.shape[0]}")
    if t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.number) or np.iscomplexobj(t):
        raise InputError(f"{name} must be integer class labels or real numbers; got dtype {t.dtype}")
    if np.issubdtype(t.dtype, np.integer):
        t, c = check_labels(t, n, n_classes=n_classes, name=name)
        Y = np.zeros((n, c))
        Y[np.arange(n), t] = 1.0
        return Y, c
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise InputError(f"{name} must be 1-D or 2-D; got shape {t.shape}")
    if not np.isfinite(t).all():
        raise InputError(f"{name} contains NaN or Inf")
    return t.astype(np.float64), None


def alignment_curve(eigenfunctions: np.ndarray, Y: np.ndarray, *, center: bool) -> np.ndarray:
    r"""Π_Y(k) for k = 1..r: cumulative share of ``‖Y‖²`` in the span of the top-k eigenfunctions.

    ``eigenfunctions`` are ``(n, r)`` with (1/n)EᵀE = I; ``Y`` is ``(n, m)`` (centred here if ``center``).
    Returns NaNs if ``Y`` is identically zero (nothing to capture).
    """
    n = eigenfunctions.shape[0]
    Y = np.asarray(Y, dtype=np.float64)
    if center:
        Y = Y - Y.mean(0)
    total = float((Y**2).sum())
    if total == 0.0:
        return np.full(eigenfunctions.shape[1], np.nan)
    coef = eigenfunctions.T @ Y / math.sqrt(n)  # coordinates of Y on the orthonormal basis e_k/√n
    return np.minimum(np.cumsum((coef**2).sum(1)) / total, 1.0)


def feature_spectrum(
    Phi: Any,
    *,
    center: bool = False,
    targets: Any = None,
    outputs: Any = None,
    k_max: int | None = None,
    n_classes: int | None = None,
    eigenvectors: bool = True,
    route: Literal["auto", "gram", "covariance"] = "auto",
    device: str | torch.device | None = None,
) -> Spectrum:
    r"""Eigenvalues ρ_k and eigenfunctions e_k of the feature kernel of Φ (Nam et al. 2024, eq. above).

    .. math:: \tfrac1n\Phi^\top\Phi\,u_k = \rho_k u_k,\qquad e_k(x_i) = u_k^\top\Phi(x_i)/\sqrt{\rho_k}.

    Args:
        Phi: ``(n, D)`` features (numpy, torch or memmap), e.g. penultimate post-activations.
        center: remove the column means first (then the constant mode is gone; see module docs).
        targets: integer class labels ``(n,)`` (one-hot internally) or continuous targets ``(n,)``/``(n, m)``
            → :attr:`Spectrum.target_alignment` Π*(k).
        outputs: the network's outputs ``(n, m)`` on the same points → :attr:`Spectrum.output_alignment`.
        k_max: keep at most this many eigenfunctions (default: every mode above the rank tolerance).
        n_classes: number of classes for integer targets (default max label + 1).
        eigenvectors: also return the feature-space directions u_k (``D × r``).
        route: ``"gram"`` diagonalises K/n (N×N), ``"covariance"`` G (D×D); ``"auto"`` takes the smaller.
        device: where the matrix products run (see :func:`deepgeom.functional.matrix.resolve_device`).

    Returns:
        :class:`Spectrum`.

    Example:
        >>> import numpy as np
        >>> Phi = np.diag([3.0, 2.0, 1.0])        # n = 3 points, orthogonal features
        >>> s = feature_spectrum(Phi)
        >>> np.round(s.eigenvalues, 6).tolist()   # squares over n
        [3.0, 1.333333, 0.333333]
    """
    Phi = check_matrix(Phi, "Phi", min_rows=2)
    n, d = (int(s) for s in Phi.shape)
    if k_max is not None:
        k_max = check_positive_int(k_max, "k_max")
    if route not in ("auto", "gram", "covariance"):
        raise InputError(f"route must be 'auto', 'gram' or 'covariance'; got {route!r}")
    use_gram = (n <= d) if route == "auto" else route == "gram"
    # features beyond 2^±64 are read scaled by 2^-e (exact); eigenfunctions and directions do not see
    # the scale, the eigenvalues are those of the scaled features times 4^e
    Phi, e = matrix.unit_scaled(Phi)
    mean = matrix.column_mean(Phi) if center else None

    if use_gram:
        K = matrix.gram(Phi, center=center, device=device).cpu() / n
        vals, vecs = torch.linalg.eigh(K)
    else:
        C = matrix.covariance(Phi, center=center, device=device).cpu() / n
        vals, vecs = torch.linalg.eigh(C)
    vals, vecs = vals.flip(0), vecs.flip(1)
    all_vals = vals.clamp_min(0.0).numpy()[: min(n, d)].copy()
    if e:
        with np.errstate(over="ignore"):
            true_vals = np.ldexp(all_vals, 2 * e)
        if not np.isfinite(true_vals).all():
            raise InputError(
                f"Phi's values reach 2^{e} (~1e{round(e * math.log10(2))}): its kernel eigenvalues (squares of the "
                "features) exceed float64's range; rescale Phi (eigenfunctions and every ratio are unchanged)")
        if all_vals[0] > 0 and true_vals[0] < np.finfo(np.float64).tiny * 2.0**53:
            raise InputError(
                f"Phi's values are below 2^{e} (~1e{round(e * math.log10(2))}): its kernel eigenvalues (squares of the "
                "features) fall below float64's normal range and lose their digits; rescale Phi (eigenfunctions "
                "and every ratio are unchanged)")
    tol = rank_tolerance(all_vals, n, d)
    rank = int((all_vals > tol).sum())
    r = rank if k_max is None else min(rank, k_max)
    rho = vals[:r]

    if use_gram:
        E = vecs[:, :r] * math.sqrt(n)  # e_k(x_i) = √n v_k,i
        U = _rows_transpose_product(Phi, vecs[:, :r], mean) / torch.sqrt(n * rho) if eigenvectors else None
    else:
        U = vecs[:, :r]
        E = _rows_product(Phi, U, mean) / rho.sqrt()
    # a deterministic sign: the largest-magnitude value of each eigenfunction is positive
    if r:
        idx = E.abs().argmax(0)
        sign = torch.sign(E[idx, torch.arange(r)])
        sign[sign == 0] = 1.0
        E = E * sign
        if U is not None:
            U = U * sign
    E_np = E.numpy()

    n_cls = None
    t_align = o_align = None
    if targets is not None:
        Y, n_cls = as_target_matrix(targets, n, "targets", n_classes)
        t_align = alignment_curve(E_np, Y, center=center)
    if outputs is not None:
        out = outputs.detach().cpu().numpy() if isinstance(outputs, torch.Tensor) else np.asarray(outputs)
        if np.issubdtype(out.dtype, np.integer):
            raise InputError("outputs must be the network's real-valued outputs (logits), not integer labels")
        out_matrix, _ = as_target_matrix(out, n, "outputs")
        o_align = alignment_curve(E_np, out_matrix, center=center)
    if e:
        all_vals = true_vals
        mean = None if mean is None else matrix.mul_pow2(mean, e)
    return Spectrum(
        eigenvalues=all_vals,
        eigenfunctions=E_np,
        eigenvectors=None if (U is None or not eigenvectors) else U.numpy(),
        rank=rank,
        n_samples=n,
        n_features=d,
        centered=bool(center),
        route="gram" if use_gram else "covariance",
        feature_mean=None if mean is None else mean.numpy(),
        target_alignment=t_align,
        output_alignment=o_align,
        n_classes=n_cls,
    )


def _row_blocks(Phi: Any, mean: torch.Tensor | None):
    block = matrix.block_size_for(int(Phi.shape[1]), 8)
    for start, stop, blk in matrix.iter_blocks(Phi, block, axis=0):
        x = matrix.as_tensor(blk).to(torch.float64).cpu()
        yield start, stop, (x - mean if mean is not None else x)


def _rows_product(Phi: Any, U: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """(Φ - μ) U, streamed over row blocks (Φ may be a memmap)."""
    out = torch.empty((int(Phi.shape[0]), U.shape[1]), dtype=torch.float64)
    for start, stop, x in _row_blocks(Phi, mean):
        out[start:stop] = x @ U
    return out


def _rows_transpose_product(Phi: Any, V: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """(Φ - μ)ᵀ V, accumulated over row blocks."""
    out = torch.zeros((int(Phi.shape[1]), V.shape[1]), dtype=torch.float64)
    for start, stop, x in _row_blocks(Phi, mean):
        out += x.T @ V[start:stop]
    return out
