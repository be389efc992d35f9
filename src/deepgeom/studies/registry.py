"""The analysis registry: a name → function table, so the runner knows nothing about any one analysis.

An analysis is a plain function ``func(ctx) -> DataFrame | dict[str, DataFrame]`` registered with
:func:`register_analysis`. ``scope="run"`` analyses are called once per trained run
(``ctx.run`` is that run); ``scope="study"`` analyses are called once for the whole sweep
(``ctx.runs`` holds every run, for comparisons across models). A returned DataFrame lands in the
table named by ``table`` (default: the analysis name); a dict names several tables. The runner adds
the run's sweep coordinates as columns, caches the result under a key that hashes the run and the
parameters, and aggregates every unit's rows into ``tables/<table>.csv`` / ``.parquet``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..errors import InputError, UnknownNameError

__all__ = ["Analysis", "register_analysis", "get_analysis", "analyses", "unregister_analysis"]

_REGISTRY: dict[str, Analysis] = {}


@dataclasses.dataclass(frozen=True)
class Analysis:
    """A registered analysis: its function, scope, default parameters and default table name."""

    name: str
    func: Callable[[Any], Any]
    scope: str = "run"
    defaults: dict = dataclasses.field(default_factory=dict)
    table: str | None = None
    description: str = ""
    version: int = 1  # bump to invalidate cached results when the analysis changes meaning
    check: Callable[[dict], None] | None = None  # validates resolved params at config load

    def resolve_params(self, params: dict | None) -> dict:
        """Defaults overlaid with ``params``; an unknown parameter raises, listing the known ones, and
        the analysis' own ``check`` (if any) rejects bad values before anything runs."""
        params = dict(params or {})
        for k in params:
            if k not in self.defaults:
                raise UnknownNameError(f"parameter of analysis {self.name!r}", k, list(self.defaults))
        resolved = {**self.defaults, **params}
        if self.check is not None:
            self.check(resolved)
        return resolved


def register_analysis(
    name: str,
    func: Callable[[Any], Any] | None = None,
    *,
    scope: str = "run",
    defaults: dict | None = None,
    table: str | None = None,
    description: str = "",
    version: int = 1,
    replace: bool = False,
    check: Callable[[dict], None] | None = None,
):
    """Register ``func`` under ``name`` (usable as a decorator when ``func`` is omitted).

    ``scope`` is ``"run"`` (called per trained run) or ``"study"`` (called once with all runs);
    ``defaults`` lists every parameter the analysis accepts — a config naming another one is rejected;
    ``check(params)`` may raise :class:`~deepgeom.errors.InputError` for bad values at config load.
    Registering a taken name raises unless ``replace=True``.
    """
    if scope not in ("run", "study"):
        raise InputError(f"scope must be 'run' or 'study'; got {scope!r}")

    def deco(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if name in _REGISTRY and not replace:
            raise InputError(f"analysis {name!r} is already registered (pass replace=True to override)")
        _REGISTRY[name] = Analysis(
            name=name,
            func=f,
            scope=scope,
            defaults=dict(defaults or {}),
            table=table,
            description=description or (f.__doc__ or "").strip().split("\n")[0],
            version=version,
            check=check,
        )
        return f

    return deco(func) if func is not None else deco


def unregister_analysis(name: str) -> None:
    """Remove a registered analysis (tests register throw-away ones)."""
    _REGISTRY.pop(name, None)


_ENTRY_POINTS_LOADED = False


def _ensure_builtins() -> None:
    """The analyses installed packages publish under the ``deepgeom.analyses`` entry-point group (each
    entry point names a module or function; loading it registers), loaded at the first lookup so that a
    broken plug-in fails the study that asks for an analysis, not ``import deepgeom.studies``.  The
    built-in analyses are registered when the package is imported (``studies/__init__.py``)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True

    for ep in entry_points(group="deepgeom.analyses"):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must say which one
            raise InputError(f"loading the deepgeom.analyses entry point {ep.name!r} ({ep.value}) failed: "
                             f"{type(exc).__name__}: {exc}") from exc


def get_analysis(name: str) -> Analysis:
    """The registered analysis called ``name``; unknown names list the registered ones."""
    _ensure_builtins()
    if name not in _REGISTRY:
        raise UnknownNameError("analysis", name, sorted(_REGISTRY))
    return _REGISTRY[name]


def analyses() -> dict[str, Analysis]:
    """All registered analyses by name (built-ins included)."""
    _ensure_builtins()
    return dict(_REGISTRY)
