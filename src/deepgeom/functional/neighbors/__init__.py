r"""Exact k nearest neighbours for (N, D) data by blocked matrix products in torch.

One search serves every estimator (TwoNN, MLE, GRIDE, scale analysis): compute a :class:`Neighbors`
once with :func:`knn` and pass it on.  The search is *exact*: the distances it returns are the
Euclidean distances of the input rows to float64 precision, and the neighbours are the true nearest
ones, even when the data are float32 with a large common offset (where :math:`|x|^2+|y|^2-2x\cdot y`
in float32 cancels catastrophically and puts an exact duplicate near 1e-3, not 0).

How (the argument is spelled out in :func:`knn`):

1. **Centre** with the column means (distances do not change; the large-norm cancellation does —
   any shift close to the mean serves, so float32 data are summed in float32).
2. **Candidate search in float32** (or bfloat16 products where the CPU multiplies them natively,
   about twice float32's rate: ``search="auto"``): :math:`\hat d^2 = s_i + s_j - 2\,\tilde x_i\cdot\tilde x_j`
   over row blocks, each symmetric block pair computed once, keeping the :math:`k+m` smallest per
   row (``m`` = ``margin``).  Memory: one B×W strip (in memory) or an R×N slab (memmap), never N×N×D.
3. **Exact refinement**: the few candidate pairs that can still be among the k nearest get their
   distance recomputed in float64 *from differences* :math:`\sqrt{\sum_d (X_{id}-X_{jd})^2}` of the
   original rows (an exact duplicate gives exactly 0.0), then re-sorted.
4. **Proof of the margin**: a rigorous float32 error bound says whether any point outside the
   candidates could be nearer than the k-th exact distance; rows where it could are searched again
   in float64 (with the same refinement), and counted in :attr:`Neighbors.n_fallback`.

Disk memmaps (from ``capture``) are streamed: over row blocks for the mean, over feature blocks for
the products (partial products accumulated per slab) and for the refinement.

In low dimension (D ≤ 8, N ≥ 4,096) the candidates come from a k-d tree instead of products

Modules: :mod:`._result` (:class:`Neighbors`), :mod:`._error_model` (the float32/bf16 error bounds),
:mod:`._search` (blocked candidate search), :mod:`._refine` (exact refinement and the margin proof),
:mod:`._tree` (the k-d tree route), :mod:`._knn` (:func:`knn`, the orchestration) and
:mod:`._duplicates` (:func:`duplicate_groups`, exact duplicate rows by hashing — no distances).
"""

from __future__ import annotations

import sys

from ..._package import Package
from . import _duplicates, _knn

# besides the public names, the internals that tests and benchmarks reach through this package
from ._duplicates import _bits_hash, _row_bits, duplicate_groups  # noqa: F401
from ._error_model import U32, U64, U_BF16, _gamma, _search_error, _unit_scale  # noqa: F401
from ._knn import _check_exact_integers, _pilot, _search_dtype, ensure_neighbors, knn  # noqa: F401
from ._refine import _exact_rows, _pair_dist, _pair_sqdist, _refine  # noqa: F401
from ._result import Neighbors
from ._search import _d2_block, _fast_bf16_cpu, _slab_search, _symmetric_search  # noqa: F401
from ._tree import TREE_MAX_DIM, TREE_MIN_ROWS, _tree_search  # noqa: F401

__all__ = ["Neighbors", "knn", "duplicate_groups", "ensure_neighbors"]

#: names re-exported here whose *use* lives in a submodule: assigning them on this package (as a
#: test does to swap in a weak hash or to count tree searches) rebinds them where they are used
_USED_IN = {"_bits_hash": (_duplicates,), "_tree_search": (_knn,)}

sys.modules[__name__].__class__ = Package
