"""The statistic registry, name → ``fn(tables, **params) -> Estimate``: filled by :mod:`.statistics`
(imported with the package), read by :func:`.verdict.parse_claims` to check a claim's statistic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["STATISTICS", "register_statistic"]

STATISTICS: dict[str, Callable[..., Any]] = {}


def register_statistic(name: str) -> Callable:
    """Decorator: register ``fn(tables, **params) -> Estimate`` under ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        STATISTICS[name] = fn
        return fn

    return deco
