"""The functional core: pure maths on (N, D) arrays, numpy or torch in, numbers and dataclasses out.

``matrix`` (blocked Gram/covariance) and ``neighbors`` (exact k-NN) are the two hot paths every
estimator shares; ``intrinsic_dim``, ``cka``, ``spectrum`` and ``collapse`` are built on them.

Like torchmetrics' ``functional`` namespace, every pure estimator is reachable from here
(``deepgeom.functional.twonn``, ``deepgeom.functional.linear_cka``, ...); the submodules hold the
rest.  Stateful accumulators over these functions live beside the analyses that use them
(:class:`deepgeom.analysis.streaming.MinibatchCKA`).  The generic ``cka(X, Y, kernel=...)`` stays in
:mod:`.cka` (``deepgeom.functional.cka`` names that module).

>>> import numpy as np
>>> from deepgeom import functional as F
>>> X = np.random.default_rng(0).normal(size=(200, 3))
>>> round(F.linear_cka(X, 2 * X), 12), F.knn(X, 2).distances.shape
(1.0, (200, 2))
"""

from .cka import (
    gram_linear,
    gram_rbf,
    hsic,
    kernel_cka,
    linear_cka,
    rbf_cka,
    u_center,
    unbiased_hsic,
    unbiased_hsic_pairs,
)
from .collapse import (
    CollapseMetrics,
    PowerLawFit,
    class_kernel_distance,
    class_means,
    effective_rank,
    neural_collapse,
    participation_ratio,
    power_law_alpha,
    richness,
    simplex_etf,
)
from .intrinsic_dim import (
    GrideMultiscaleResult,
    GrideResult,
    LevinaBickelResult,
    PCAIDResult,
    TwoNNBootstrapResult,
    TwoNNResult,
    TwoNNScaleResult,
    find_duplicates,
    gride,
    gride_multiscale,
    levina_bickel,
    pca_id,
    twonn,
    twonn_bootstrap,
    twonn_scale,
)
from .matrix import covariance, gram
from .minibatch_cka import MinibatchHSIC, minibatch_cka_compute, minibatch_hsic_merge, minibatch_hsic_update
from .neighbors import Neighbors, duplicate_groups, knn
from .spectrum import DominantCount, Spectrum, dominant_count, effective_dimension, feature_spectrum, regime

__all__ = [
    # neighbours and products
    "knn", "Neighbors", "duplicate_groups", "gram", "covariance",
    # intrinsic dimension
    "twonn", "twonn_scale", "twonn_bootstrap", "gride", "gride_multiscale", "levina_bickel", "pca_id",
    "find_duplicates", "TwoNNResult", "TwoNNScaleResult", "TwoNNBootstrapResult", "GrideResult",
    "GrideMultiscaleResult", "LevinaBickelResult", "PCAIDResult",
    # similarity
    "linear_cka", "rbf_cka", "kernel_cka", "hsic", "unbiased_hsic", "unbiased_hsic_pairs", "u_center",
    "gram_linear", "gram_rbf", "MinibatchHSIC", "minibatch_hsic_update", "minibatch_hsic_merge",
    "minibatch_cka_compute",
    # spectra and collapse
    "feature_spectrum", "dominant_count", "regime", "effective_dimension", "Spectrum", "DominantCount",
    "neural_collapse", "class_means", "effective_rank", "participation_ratio", "power_law_alpha",
    "richness", "simplex_etf", "class_kernel_distance", "CollapseMetrics", "PowerLawFit",
]
