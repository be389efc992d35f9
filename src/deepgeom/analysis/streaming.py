"""Stateful accumulators over the functional core: each keeps running sufficient statistics across
batches (``update``) and finishes them (``compute``) with the pure functions of
:mod:`deepgeom.functional` — the maths exists once, and a streaming analysis only holds state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validation import check_fraction
from ..errors import InputError, UnknownNameError
from ..functional.cka import KERNELS
from ..functional.minibatch_cka import (
    MinibatchHSIC,
    minibatch_cka_compute,
    minibatch_hsic_merge,
    minibatch_hsic_sums,
    minibatch_hsic_update,
)

__all__ = ["MinibatchCKA"]


class MinibatchCKA:
    r"""Streaming minibatch CKA (Nguyen, Raghu, Kornblith 2021) for all pairs of two layer lists.

    Each :meth:`update` takes one minibatch: a list of per-layer activations ``xs`` (each (B, D_a),
    any widths) and optionally ``ys`` for a second model on *the same* B examples. It adds
    :math:`\mathrm{HSIC}_1(K_a, L_b)` for every pair, and the self terms, to running float64 sums
    (:func:`~deepgeom.functional.minibatch_cka.minibatch_hsic_update`); :meth:`compute` returns the ratio of sums

    .. math:: \mathrm{CKA}_{\mathrm{mb}}(a, b) = \frac{\sum_i \mathrm{HSIC}_1(K_{a,i}, L_{b,i})}
              {\sqrt{\sum_i \mathrm{HSIC}_1(K_{a,i}, K_{a,i})\ \sum_i \mathrm{HSIC}_1(L_{b,i}, L_{b,i})}}.

    Memory is the running (A×B) sums plus one batch of U-centred kernels (A + B)·B² floats.
    Columns are centred per batch before the Gram product (exactly the same estimate; it removes the
    offset that makes float32 HSIC₁ negative for ReLU features).

    Args:
        kernel: ``"linear"`` or ``"rbf"`` (bandwidth ``sigma`` × the batch's median distance).
        compute_dtype: dtype of the Gram products (HSIC terms and sums are float64). ``"auto"``
            (default) follows the activations: float32 products for float32 activations in batches
            of ≥ 32 rows, float64 otherwise and always for the RBF kernel's distances
            (:func:`deepgeom.functional.matrix.product_dtype`). The columns are centred first
            (float32 data in two float32 passes, otherwise with float64 means), so the offset
            problem does not return in float32.
        device: where the products run (``"auto"`` → CUDA when present).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0); X = rng.normal(size=(512, 8)); Y = X @ rng.normal(size=(8, 5))
        >>> m = MinibatchCKA()
        >>> for s in range(0, 512, 128):
        ...     m.update([X[s:s + 128]], [Y[s:s + 128]])
        >>> m.compute().shape
        (1, 1)
    """

    def __init__(self, *, kernel: str = "linear", sigma: float = 0.8,
                 compute_dtype: torch.dtype | str = "auto", device: str | torch.device | None = None):
        if kernel not in KERNELS:
            raise UnknownNameError("CKA kernel", kernel, list(KERNELS))
        self.kernel, self.sigma = kernel, float(sigma)
        if kernel == "rbf":
            check_fraction(self.sigma, "sigma", low=0.0, high=float("inf"), open_low=True)
        self.compute_dtype, self.device = compute_dtype, device
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._sums: MinibatchHSIC | None = None
        self.n_batches = 0
        self.n_examples = 0
        self._buffers: dict[str, torch.Tensor] = {}  # kernel stacks reused from batch to batch

    def update(self, xs: Sequence[Any], ys: Sequence[Any] | None = None) -> None:
        """Add one minibatch: per-layer activations ``xs`` (and ``ys`` of a second model), same B ≥ 4 rows."""
        batch = minibatch_hsic_update(xs, ys, kernel=self.kernel, sigma=self.sigma,
                                      compute_dtype=self.compute_dtype, device=self.device, buffers=self._buffers)
        self._sums = batch if self._sums is None else minibatch_hsic_merge(self._sums, batch)
        self.n_batches += 1
        self.n_examples += batch.n_examples

    def _seen(self) -> MinibatchHSIC:
        if self._sums is None:
            raise InputError("MinibatchCKA.compute() before any update(): no batches seen")
        return self._sums

    def hsic_sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The running sums (Σ HSIC₁(K_a, L_b), Σ HSIC₁(K_a, K_a), Σ HSIC₁(L_b, L_b)) as float64 arrays
        (±inf where activations beyond ~1e77 make a sum exceed float64; :meth:`compute` is unaffected)."""
        return minibatch_hsic_sums(self._seen())

    def compute(self) -> np.ndarray:
        """The (A, B) minibatch CKA matrix (float64 array); for a layer with Σ HSIC₁(K, K) ≤ 0 — no
        variance in any batch (e.g. a dead ReLU layer) — its row/column is NaN and a warning names it."""
        return minibatch_cka_compute(self._seen())
