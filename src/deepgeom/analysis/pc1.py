r"""First principal components of layers (Nguyen, Raghu, Kornblith, ICLR 2021, §4).

The paper's explanation of the block structure: inside a block the layers share a *dominant* first
principal component, and projecting it out removes the block. This module measures that component:

* :func:`pc1_fraction` — variance fraction λ₁/Σλ of the first PC of an (N, D) array (exact).
* :func:`pc1_fractions` — the same for every layer of a model, streamed over the data.
* :func:`pc1_scores` — each layer's projection onto its own first PC, one score per example; the CKA of
  two rank-1 representations is the squared correlation of their scores (:func:`pc1_cka`).
* :class:`StreamingPC1` — the streamed estimator behind these and ``cka_matrix(..., remove_pc1=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import check_matrix
from ..capture import resolve_layers, stream
from ..errors import InputError
from ..functional.matrix import as_tensor, covariance, gram, max_abs_exponent, mul_pow2, unit_scaled
from ._layers import first_order, flat_rows, relative_depth

__all__ = ["StreamingPC1", "pc1_fraction", "pc1_fractions", "pc1_scores", "pc1_cka", "remove_pc1_full",
           "PC1_MAX_DIM", "top_eigenpair"]

#: Widest layer whose first PC comes from its exact D×D float64 scatter matrix (8·D² bytes, N·D² flops
#: to accumulate); wider layers use randomized subspace iteration, 6 more passes of N·D·8 flops and
#: D×8 memory, exact to ~1e-9 when the PC is dominant. Measurements: BENCHMARKS.md.
PC1_MAX_DIM = 2048


def top_eigenpair(C: torch.Tensor, *, seed: int = 0) -> tuple[float, torch.Tensor]:
    """Largest eigenvalue and its unit eigenvector of a symmetric float64 matrix.

    Up to 256 rows, the full ``eigh``; beyond, implicitly restarted Lanczos (ARPACK via
    ``scipy.sparse.linalg.eigsh``, ``k=1``, tolerance 0 = machine precision, a seeded start vector):
    O(D²) per iteration instead of the full decomposition's ~D³ — only one eigenpair is needed, and the
    full decomposition dominated the PC1-removed heatmap of a wide network (BENCHMARKS.md).
    """
    d = C.shape[0]
    if d <= 256:
        evals, evecs = torch.linalg.eigh(C)
        return float(evals[-1]), evecs[:, -1]
    from scipy.sparse.linalg import eigsh  # heavy: scipy.sparse is only needed for wide layers

    v0 = np.random.default_rng(seed).standard_normal(d)
    vals, vecs = eigsh(C.numpy(), k=1, which="LA", tol=0, v0=v0)
    return float(vals[0]), torch.from_numpy(np.ascontiguousarray(vecs[:, 0]))


class StreamingPC1:
    """Each layer's first principal direction and its variance fraction, from streamed passes.

    Pass 1 accumulates, per layer, the column sums and — for D ≤ ``max_dim`` — the D×D scatter matrix,
    both about a pilot shift (the first batch's mean, so a large common offset does not cancel in
    float64); its top eigenvector is exact. Wider layers (D > ``max_dim``) use randomized block
    subspace iteration (Halko, Martinsson & Tropp 2011) instead: ``iterations`` more passes, each
    computing :math:`\tilde X^\top(\tilde X V)` for a D×``rank`` block V, then a Rayleigh–Ritz step —
    D×rank memory. ``project(x)`` removes the direction from centred rows of a batch.
    """

    def __init__(self, names: list[str], max_dim: int, iterations: int = 6, rank: int = 8, seed: int = 0):
        self.names, self.max_dim, self.iterations, self.rank, self.seed = names, max_dim, iterations, rank, seed
        self.n = 0
        self.shift: dict[str, torch.Tensor] = {}
        self.sum: dict[str, torch.Tensor] = {}
        self.sq: dict[str, torch.Tensor] = {}
        self.direction: dict[str, torch.Tensor] = {}
        self.fraction: dict[str, float] = {}
        self.mean: dict[str, torch.Tensor] = {}
        self._V: dict[str, torch.Tensor] = {}
        self._acc: dict[str, list] = {}
        #: per layer, the power of two its rows are divided by (fixed by the first batch): activations
        #: beyond 2^±64 would overflow or underflow the scatter matrix; direction and fraction do not
        #: see the scale, and projected rows keep one common scale per layer (all CKA needs)
        self.exponent: dict[str, int] = {}

    def _rows(self, name: str, batch: Mapping[str, Any]) -> torch.Tensor:
        x = flat_rows(batch[name]).to(torch.float64)
        if name not in self.exponent:
            e = max_abs_exponent(x)
            self.exponent[name] = e if abs(e) > 64 else 0
        return mul_pow2(x, -self.exponent[name]) if self.exponent[name] else x

    @property
    def iterative(self) -> list[str]:
        """Layers too wide for a D×D scatter matrix (found by subspace iteration)."""
        return [n for n in self.names if n in self.sum and n not in self.sq]

    def update(self, batch: Mapping[str, Any]) -> None:
        """Pass 1: column sums (and scatter matrices of the narrow layers) about the pilot shift."""
        for name in self.names:
            x = self._rows(name, batch)
            if name not in self.shift:
                self.shift[name] = x.mean(0)
                self.sum[name] = torch.zeros(x.shape[1], dtype=torch.float64)
                if x.shape[1] <= self.max_dim:
                    self.sq[name] = torch.zeros((x.shape[1], x.shape[1]), dtype=torch.float64)
            xs = x - self.shift[name]
            self.sum[name] += xs.sum(0)
            if name in self.sq:
                self.sq[name] += xs.T @ xs
        self.n += int(flat_rows(batch[self.names[0]]).shape[0])

    def finish(self) -> None:
        """After pass 1: exact PCs of the narrow layers; random starting blocks for the wide ones."""
        gen = torch.Generator().manual_seed(self.seed)
        for name in self.names:
            ms = self.sum[name] / self.n
            self.mean[name] = self.shift[name] + ms
            if name not in self.sq:
                k = min(self.rank, ms.shape[0])
                self._V[name] = torch.linalg.qr(torch.randn(ms.shape[0], k, generator=gen, dtype=torch.float64))[0]
                continue
            C = self.sq[name] - self.n * torch.outer(ms, ms)
            if not bool(torch.isfinite(C).all()):
                raise InputError(f"layer {name!r} has NaN or Inf activations: its first principal component "
                                 "is undefined")
            top, v = top_eigenpair(C, seed=self.seed)
            total = float(torch.diagonal(C).clamp_min(0).sum())  # the trace: the sum of all eigenvalues
            self.direction[name] = v
            self.fraction[name] = top / total if total > 0 else float("nan")
            del self.sq[name]
            self.sq[name] = torch.empty(0)  # keep the marker "exact" without holding D×D

    def iter_update(self, batch: Mapping[str, Any]) -> None:
        """One batch of a subspace-iteration pass: accumulate X̃ᵀ(X̃V), (X̃V)ᵀ(X̃V) and Σ‖x̃‖²."""
        for name in self.iterative:
            xc = self._rows(name, batch) - self.mean[name]
            Z = xc @ self._V[name]
            acc = self._acc.setdefault(name, [0.0, 0.0, 0.0])
            acc[0] = acc[0] + xc.T @ Z
            acc[1] = acc[1] + Z.T @ Z
            acc[2] = acc[2] + float((xc * xc).sum())

    def iter_finish(self, last: bool) -> None:
        """End of a pass: next orthonormal block, or (last pass) the Rayleigh–Ritz top pair."""
        for name in self.iterative:
            W, G, total = self._acc.pop(name)
            if not (bool(torch.isfinite(W).all()) and math.isfinite(total)):
                raise InputError(f"layer {name!r} has NaN or Inf activations: its first principal component "
                                 "is undefined")
            if last:
                evals, U = torch.linalg.eigh(G)
                v = self._V[name] @ U[:, -1]
                self.direction[name] = v / torch.linalg.norm(v)
                self.fraction[name] = float(evals[-1]) / total if total > 0 else float("nan")
            else:
                self._V[name] = torch.linalg.qr(W)[0]

    def fit(self, first_pass: Iterator[Mapping[str, Any]], replay: Any) -> None:
        """Pass 1 over ``first_pass``, then the subspace-iteration passes over ``replay()`` if needed."""
        for batch in first_pass:
            self.update(batch)
        if self.n == 0:
            raise InputError("data holds no examples")
        self.finish()
        if self.iterative:
            for it in range(self.iterations):
                for batch in replay():
                    self.iter_update(batch)
                self.iter_finish(last=it == self.iterations - 1)

    def center(self, name: str, x: Any) -> torch.Tensor:
        """Centred float64 rows of a batch of layer ``name`` (in the layer's power-of-two units)."""
        return self._rows(name, {name: x}) - self.mean[name]

    def project(self, name: str, x: Any) -> torch.Tensor:
        """Centred rows of a batch of layer ``name`` without the first principal direction (in the
        layer's power-of-two units, :attr:`exponent`)."""
        x = self.center(name, x)
        v = self.direction[name]
        return x - torch.outer(x @ v, v)


def remove_pc1_full(X: Any) -> torch.Tensor:
    Xc = as_tensor(np.asarray(X) if isinstance(X, np.ndarray) else X).to(torch.float64)
    Xc = Xc.reshape(Xc.shape[0], -1)
    e = max_abs_exponent(Xc)
    if abs(e) > 64:  # the direction does not see the scale, CKA neither: read scaled (exact)
        Xc = mul_pow2(Xc, -e)
    Xc = Xc - Xc.mean(0)
    v = top_direction(Xc)
    return Xc - torch.outer(Xc @ v, v)


def top_direction(Xc: torch.Tensor) -> torch.Tensor:
    n, d = Xc.shape
    if d <= n:
        _, vecs = torch.linalg.eigh(Xc.T @ Xc)
        return vecs[:, -1]
    _, vecs = torch.linalg.eigh(Xc @ Xc.T)
    v = Xc.T @ vecs[:, -1]
    return v / torch.linalg.norm(v)


def pc1_fraction(X: Any) -> float:
    r"""Fraction of variance carried by the first principal component, :math:`\lambda_1 / \sum_k \lambda_k`,
    of the column-centred (N, D) data (eigenvalues of the D×D covariance or, when D > N, of the N×N Gram
    matrix — the same nonzero spectrum). Nguyen et al. (2021) show block-structure layers share a
    dominant PC (fraction close to 1).

    Raises:
        InputError: NaN/Inf, fewer than 2 rows, or no variance at all.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(500, 3)) * [10.0, 1.0, 1.0]
        >>> 0.95 < pc1_fraction(X) < 1.0
        True
    """
    X = check_matrix(X, "X", min_rows=2)
    n, d = X.shape
    X, _ = unit_scaled(X)  # a ratio of eigenvalues: data beyond 2^±64 are read scaled (exact)
    if d <= n:
        ev = torch.linalg.eigvalsh(covariance(X, center=True))
    else:
        ev = torch.linalg.eigvalsh(gram(X, center=True))
    total = float(ev.clamp_min(0).sum())
    if not total > 0:
        raise InputError("X has no variance (all features constant): the first-PC fraction is undefined")
    return float(ev[-1]) / total


def pc1_fractions(model: nn.Module, data: Any, layers: Any = None, *, batch_size: int = 256,
                  device: str | torch.device = "cpu", reduce: str = "flatten", pc1_max_dim: int = PC1_MAX_DIM,
                  progress: bool = False) -> pd.DataFrame:
    """:func:`pc1_fraction` of every selected layer, streamed: one pass with a float64 scatter matrix per
    layer of D ≤ ``pc1_max_dim`` (exact), plus 6 passes of randomized subspace iteration (block of 8)
    for wider layers (:class:`StreamingPC1`). Returns a DataFrame with ``layer``, ``relative_depth``, ``pc1_fraction``."""
    names = resolve_layers(model, layers)
    pcs = StreamingPC1(names, pc1_max_dim)
    order: list[str] = []

    def passes(show: bool = False):
        for b in stream(model, data, names, batch_size=batch_size, device=device, reduce=reduce, progress=show):
            if not order:
                order.extend(first_order(b, names))
            yield b

    pcs.fit(passes(progress), passes)
    return pd.DataFrame({"layer": order, "relative_depth": relative_depth(model, order),
                         "pc1_fraction": [pcs.fraction[n] for n in order]})


def pc1_scores(model: nn.Module | Mapping[str, Any], data: Any = None, layers: Any = None, *,
               batch_size: int = 256, device: str | torch.device = "cpu", reduce: str = "flatten",
               pc1_max_dim: int = PC1_MAX_DIM) -> pd.DataFrame:
    r"""Each layer's first-PC score of every example, :math:`s_\ell = (X_\ell - \bar x_\ell)\,v_\ell`
    (:math:`v_\ell` the layer's first principal direction, from :class:`StreamingPC1`), streamed: the
    passes of :func:`pc1_fractions` plus one more for the scores. ``model`` may also be a capture (a
    mapping ``layer → (N, D)`` array, e.g. :func:`deepgeom.capture.capture`'s result; ``data`` unused),
    read in row blocks. Rows are the examples in data order, columns the layers in forward order. A
    score's sign and unit are arbitrary (PC directions have no sign; very large or small layers are read
    in power-of-two units): use it through correlations (:func:`pc1_cka`), which see neither.
    """
    if isinstance(model, Mapping):
        names = list(model) if layers is None else [n for n in model if n in set(layers)]
        if not names:
            raise InputError("pc1_scores: no layer selected from the capture")
        arrays = {n: model[n] for n in names}
        n_rows = int(arrays[names[0]].shape[0])

        def passes():
            for start in range(0, n_rows, batch_size):
                yield {n: as_tensor(np.asarray(a[start:start + batch_size])) for n, a in arrays.items()}

        order = names
    else:
        names = resolve_layers(model, layers)
        order = []

        def passes():
            for b in stream(model, data, names, batch_size=batch_size, device=device, reduce=reduce,
                            progress=False):
                if not order:
                    order.extend(first_order(b, names))
                yield b

    pcs = StreamingPC1(names, pc1_max_dim)
    pcs.fit(passes(), passes)
    cols: dict[str, list[torch.Tensor]] = {n: [] for n in order}
    for b in passes():
        for n in order:
            cols[n].append(pcs.center(n, b[n]) @ pcs.direction[n])
    return pd.DataFrame({n: torch.cat(v).numpy() for n, v in cols.items()})


def pc1_cka(scores: pd.DataFrame) -> pd.DataFrame:
    r"""Linear CKA between the layers' first-PC projections (Nguyen et al. 2021, Fig. 5: the block's
    layers share their first PC). For rank-one centred representations :math:`s_a, s_b` (one score per
    example), :math:`\mathrm{CKA} = (s_a^\top s_b)^2 / (\lVert s_a\rVert^2 \lVert s_b\rVert^2)`, the squared
    Pearson correlation of the scores — independent of their signs and units. Layers × layers DataFrame.
    """
    if not isinstance(scores, pd.DataFrame) or scores.shape[0] < 3:
        raise InputError("pc1_cka needs a DataFrame of first-PC scores (examples × layers) with at least 3 rows")
    S = scores.to_numpy(dtype=np.float64)
    S = S - S.mean(0)
    norms = np.sqrt((S * S).sum(0))
    if (norms == 0).any():
        bad = [c for c, z in zip(scores.columns, norms == 0, strict=True) if z]
        raise InputError(f"first-PC scores without variance for layer(s) {bad}")
    C = (S.T @ S) / np.outer(norms, norms)
    return pd.DataFrame(C * C, index=scores.columns, columns=scores.columns)
