"""Exceptions raised by deepgeom.

One root, :class:`DeepgeomError`; bad input raises :class:`InputError`, which is also a
``ValueError`` so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations

__all__ = ["DeepgeomError", "InputError", "UnknownNameError", "MissingDependencyError"]


class DeepgeomError(Exception):
    """Root of every error deepgeom raises on purpose."""


class InputError(DeepgeomError, ValueError):
    """The caller passed data or arguments that cannot give a trustworthy number."""


class UnknownNameError(InputError):
    """A name (dataset, layer, model family, method) that does not exist; lists those that do."""

    def __init__(self, kind: str, name: object, choices: list[str] | tuple[str, ...], hint: str = ""):
        self.kind, self.name, self.choices = kind, name, list(choices)
        shown = ", ".join(map(str, self.choices[:40])) + (" ..." if len(self.choices) > 40 else "")
        msg = f"unknown {kind} {name!r}; known: {shown}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


class MissingDependencyError(DeepgeomError, ImportError):
    """An optional dependency is not installed; the message gives the pip line that fixes it."""
