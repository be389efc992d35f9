"""The CKA heatmap result type, kept free of torch so that reports and figures can rebuild it from
tables without importing the numerical core."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from .._results import ResultMixin, to_jsonable

__all__ = ["CKAResult"]


@dataclasses.dataclass(frozen=True)
class CKAResult(ResultMixin):
    """An L_a × L_b CKA heatmap.

    Attributes:
        matrix: DataFrame, index = layers of A, columns = layers of B (A again when within one model).
        layers_a, layers_b: layer names in forward order.
        depth_a, depth_b: relative depth of each layer in [0, 1] (position in ``analysis_layers``
            when the model declares them, else rank among the selected layers).
        n: examples that entered the estimate.
        kernel: ``"linear"`` or ``"rbf"``; sigma: RBF bandwidth fraction (None for linear).
        minibatch: True → Nguyen et al.'s minibatch CKA (unbiased HSIC₁ summed over batches);
            False → full-data CKA from N×N Grams (biased, or unbiased when ``debiased``).
        debiased: unbiased HSIC (always True for minibatch).
        batch_size: rows per batch (minibatch), else None.
        within: True when both axes are the same model.
        pc1_removed: each layer's first principal component was projected out before the kernels.
        pc1_fraction_a, pc1_fraction_b: ``{layer: λ₁/Σλ}`` when computed (``remove_pc1=True``).
    """

    matrix: pd.DataFrame
    layers_a: list[str]
    layers_b: list[str]
    depth_a: list[float]
    depth_b: list[float]
    n: int
    kernel: str = "linear"
    sigma: float | None = None
    minibatch: bool = True
    debiased: bool = True
    batch_size: int | None = None
    within: bool = False
    pc1_removed: bool = False
    pc1_fraction_a: dict[str, float] | None = None
    pc1_fraction_b: dict[str, float] | None = None

    @property
    def values(self) -> np.ndarray:
        """The matrix as a float64 array (rows = layers of A)."""
        return self.matrix.to_numpy(dtype=np.float64)

    def to_dict(self, *, max_array: int | None = None) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "matrix"}
        d["matrix"] = self.values
        return to_jsonable(d, max_array=max_array)


# ------------------------------------------------------------------------------------ small helpers
