"""Intrinsic-dimension estimators: TwoNN (+ scale analysis and bootstrap), PC-ID, GRIDE, Levina–Bickel.

Every neighbour-based estimator accepts ``X`` or precomputed ``neighbors=`` (one
:func:`deepgeom.functional.neighbors.knn` search can serve them all) and handles exact duplicate rows
the same way (see :mod:`._common`).
"""

from ._common import DuplicateInfo, find_duplicates, is_constant, take_rows
from .gride import GrideMultiscaleResult, GrideResult, gride, gride_multiscale
from .mle import LevinaBickelResult, levina_bickel
from .pca import PCAIDResult, pca_id
from .scale import TwoNNBootstrapResult, TwoNNScaleResult, twonn_bootstrap, twonn_scale
from .twonn import TwoNNResult, twonn

__all__ = [
    "DuplicateInfo",
    "find_duplicates",
    "is_constant",
    "take_rows",
    "TwoNNResult",
    "twonn",
    "TwoNNScaleResult",
    "TwoNNBootstrapResult",
    "twonn_scale",
    "twonn_bootstrap",
    "PCAIDResult",
    "pca_id",
    "GrideResult",
    "GrideMultiscaleResult",
    "gride",
    "gride_multiscale",
    "LevinaBickelResult",
    "levina_bickel",
]
