"""deepgeom: the geometry of neural-network representations, layer by layer.

Intrinsic dimension (Ansuini et al. 2019), feature-kernel spectra and neural collapse
(Nam et al. 2024; Papyan et al. 2020) and CKA similarity (Kornblith et al. 2019; Nguyen et al. 2021)
for any PyTorch model.
"""

from .errors import DeepgeomError, InputError, MissingDependencyError, UnknownNameError

__version__ = "0.1.0"

__all__ = ["DeepgeomError", "InputError", "MissingDependencyError", "UnknownNameError", "__version__"]
