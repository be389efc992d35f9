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

import importlib as _importlib

from ._version import __version__
from .errors import DeepgeomError, InputError, MissingDependencyError, UnknownNameError

# Every public name below is imported on first use (PEP 562), not at ``import deepgeom``: the CLI
# (``deepgeom --help``) and ``import deepgeom.errors`` must not pay for torch, scipy and pandas.
# ``train`` names the package, which is callable (``deepgeom.train(config, out_dir)``), as ``capture`` is:
# one object whatever was imported first
_SUBPACKAGES = ("data", "models", "capture", "functional", "analysis", "train")
_LAZY: dict[str, tuple[str, str]] = {
    **{n: (".analysis.id_profile", n) for n in ("id_profile",)},
    **{n: (".analysis.kernel_dynamics", n) for n in ("spectra_through_training",)},
    **{n: (".analysis.predictions", n) for n in ("compare_predictions",)},
    **{n: (".analysis.similarity", n) for n in ("best_match", "cka_matrix", "cka_matrix_from_captures",
                                                "find_blocks", "pc1_fraction")},
    **{n: (".capture", n) for n in ("Capture", "list_layers", "load_capture", "resolve_layers", "stream")},
    **{n: (".functional.cka", n) for n in ("cka", "linear_cka", "rbf_cka", "unbiased_hsic")},
    "MinibatchCKA": (".analysis.streaming", "MinibatchCKA"),
    **{n: (".functional.collapse", n) for n in ("effective_rank", "neural_collapse", "participation_ratio",
                                                "power_law_alpha", "richness")},
    **{n: (".functional.intrinsic_dim", n) for n in ("gride", "gride_multiscale", "levina_bickel", "pca_id",
                                                     "twonn", "twonn_bootstrap", "twonn_scale")},
    **{n: (".functional.neighbors", n) for n in ("knn",)},
    **{n: (".functional.spectrum", n) for n in ("dominant_count", "feature_spectrum", "regime")},
    "build_model": (".models", "build"),
    **{n: (".train", n) for n in ("TrainConfig", "load_model", "load_run")},
}


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return _importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(_importlib.import_module(module, __name__), attr)
        # bound here, so the next lookup skips this function
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
