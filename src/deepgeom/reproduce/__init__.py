"""Reproductions of the papers' findings with pre-registered claims: ``deepgeom reproduce PAPER``.

See :mod:`deepgeom.reproduce.runner` for the layout of the output directory and
:mod:`deepgeom.claims` for how verdicts are computed.
"""

from .runner import SPEC_DIR, load_spec, papers, reproduce

__all__ = ["reproduce", "papers", "load_spec", "SPEC_DIR"]
