r"""Feature-kernel spectra: eigenvalues and eigenfunctions of the forward feature map, Π(k), MF/EF.

Nam, Mingard, Lee, Hayou & Louis, *Visualising Feature Learning in Deep Neural Networks by
Diagonalizing the Forward Feature Map* (arXiv 2410.04264, 2024). A classifier is a feature map
:math:`\Phi` (penultimate post-activations, ``D`` features) followed by a linear head. On the ``n``
training points, last-layer gradient descent acts through the feature kernel
:math:`K(x, x') = \Phi(x)\cdot\Phi(x')`; diagonalise

.. math::

    G = \tfrac1n \Phi^\top\Phi = \sum_k \rho_k\, u_k u_k^\top, \qquad
    e_k(x) = \frac{u_k^\top \Phi(x)}{\sqrt{\rho_k}}, \qquad
    \tfrac1n \sum_i e_j(x_i)\, e_k(x_i) = \delta_{jk}.

The nonzero :math:`\rho_k` are also the eigenvalues of the Gram matrix :math:`K/n` (N×N), whose unit
eigenvectors :math:`v_k` give :math:`e_k(x_i) = \sqrt n\, v_{k,i}`; :func:`feature_spectrum` works on
whichever side is smaller, through :mod:`deepgeom.functional.matrix` (float64 accumulation).

The kernel is **uncentred by default**: the mean feature vector is a mode like any other, as the
head's bias is (for ReLU features it is usually the largest, ``ρ_1``). ``center=True`` removes it.

Π(k) (the paper's cumulative quality Π*(k) for the targets and utility Π(k) for the network's own
outputs) is the share of a target matrix :math:`Y` (one column per class or output) that lies in the
span of the top-``k`` eigenfunctions:

.. math::

    \Pi_Y(k) = \frac{\sum_{j \le k} \lVert \tfrac1{\sqrt n} e_j^\top Y \rVert^2}{\lVert Y \rVert_F^2}.

For an uncentred spectrum ``Y`` is used as given (one-hot targets keep their constant part, which
the constant mode captures); for a centred spectrum ``Y``'s columns are centred too, since centred
eigenfunctions have zero mean and cannot express a constant. Π reaches 1 at the last mode exactly
when ``Y`` lies in the span of the (centred) features, e.g. when their rank is ``n`` (or ``n-1``).

Modules: :mod:`._decomposition` (:class:`Spectrum`, :func:`feature_spectrum`, Π(k)) and
:mod:`._dominance` (:func:`dominant_count`, :func:`regime`, their subsample check).
"""

from __future__ import annotations

from ._decomposition import Spectrum, alignment_curve, as_target_matrix, feature_spectrum, rank_tolerance
from ._dominance import DominantCount, dominant_count, dominant_count_subsamples, effective_dimension, regime

__all__ = [
    "Spectrum",
    "DominantCount",
    "feature_spectrum",
    "alignment_curve",
    "as_target_matrix",
    "dominant_count",
    "regime",
    "dominant_count_subsamples",
    "rank_tolerance",
    "effective_dimension",
]
