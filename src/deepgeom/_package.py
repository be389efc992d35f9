"""A package module that keeps reassignment of its re-exported names working after a module split."""

from __future__ import annotations

import types
from typing import Any


class Package(types.ModuleType):
    """A package whose ``__init__`` re-exports names from its submodules.

    When the package was one module, ``pkg.name = value`` (``monkeypatch.setattr(pkg, "name", value)``)
    changed what its functions called.  Set as the package's module class, this keeps that true: an
    assignment also rebinds ``name`` in each submodule the package lists for it in ``_USED_IN``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        for module in self.__dict__.get("_USED_IN", {}).get(name, ()):
            setattr(module, name, value)
        super().__setattr__(name, value)
