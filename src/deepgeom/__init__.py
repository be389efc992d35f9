"""deepgeom: the geometry of neural-network representations, layer by layer.

Intrinsic dimension (Ansuini et al. 2019), feature-kernel spectra and neural collapse
(Nam et al. 2024; Papyan et al. 2020) and CKA similarity (Kornblith et al. 2019; Nguyen et al. 2021)
for any PyTorch model. The data flow is the package layout::

    data, models, train  →  capture  →  functional (estimators)  →  analysis (tables)  →  viz, report

The names below are the stable public surface (pinned by ``tests/test_public_api.py``); everything
else is reachable through the subpackages (``deepgeom.data``, ``deepgeom.capture``, ...).

>>> import numpy as np, deepgeom
>>> X = deepgeom.data.hypersphere(2000, 2, 10, seed=0)
>>> round(deepgeom.twonn(X).id)
2
"""

from . import analysis, capture, data, functional, models
from .analysis.id_profile import id_profile
from .analysis.kernel_dynamics import spectra_through_training
from .analysis.predictions import compare_predictions
from .analysis.similarity import best_match, cka_matrix, cka_matrix_from_captures, find_blocks, pc1_fraction
from .capture import Capture, list_layers, load_capture, resolve_layers, stream
from .errors import DeepgeomError, InputError, MissingDependencyError, UnknownNameError
from .functional.cka import MinibatchCKA, cka, linear_cka, rbf_cka, unbiased_hsic
from .functional.collapse import (
    effective_rank,
    neural_collapse,
    participation_ratio,
    power_law_alpha,
    richness,
)
from .functional.intrinsic_dim import (
    gride,
    gride_multiscale,
    levina_bickel,
    pca_id,
    twonn,
    twonn_bootstrap,
    twonn_scale,
)
from .functional.neighbors import knn
from .functional.spectrum import dominant_count, feature_spectrum, regime
from .models import build as build_model
from .train import TrainConfig, load_model, load_run, train

__version__ = "0.1.0"

__all__ = [
    # errors
    "DeepgeomError", "InputError", "MissingDependencyError", "UnknownNameError",
    # subpackages: data → models/train → capture → functional → analysis
    "data", "models", "capture", "functional", "analysis",
    # models and training
    "build_model", "TrainConfig", "train", "load_run", "load_model",
    # capture (``deepgeom.capture(model, data, layers=...)`` itself is callable)
    "Capture", "list_layers", "resolve_layers", "stream", "load_capture",
    # intrinsic dimension (Ansuini et al. 2019)
    "knn", "twonn", "twonn_scale", "twonn_bootstrap", "pca_id", "gride", "gride_multiscale",
    "levina_bickel", "id_profile",
    # similarity (Kornblith et al. 2019; Nguyen et al. 2021)
    "cka", "linear_cka", "rbf_cka", "unbiased_hsic", "MinibatchCKA", "cka_matrix",
    "cka_matrix_from_captures", "find_blocks", "pc1_fraction", "best_match", "compare_predictions",
    # feature-kernel spectra (Nam et al. 2024) and neural collapse (Papyan et al. 2020)
    "feature_spectrum", "dominant_count", "regime", "spectra_through_training", "neural_collapse",
    "effective_rank", "participation_ratio", "power_law_alpha", "richness",
    "__version__",
]
