"""Per-unit resources of a study: torch threads, and the CPUs / GPUs / device a unit asks for.

The ``resources`` section of a study config sets them for every unit and may override them per kind
of unit (``train`` or an analysis name)::

    resources:
      threads: 1            # torch CPU threads inside each unit (default 1), under every executor
      cpus: 1               # CPUs a unit reserves on a Ray node (default: threads)
      gpus: 0               # GPUs a unit reserves on a Ray node (default 0; fractions allowed)
      device: cpu           # where trainings run: cpu (default) or cuda
      train: {gpus: 1, device: cuda}      # trainings on a GPU node
      cka_across: {threads: 4, cpus: 4}   # one analysis with more threads

The thread count is part of the config, not of the executor, so a unit does the same arithmetic under
``serial``, ``local`` and ``ray``. None of these settings enters a unit's key: they decide where and how
fast a unit runs, not what it computes (on ``cpu``; a CUDA run agrees to rounding, not bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import InputError, UnknownNameError

__all__ = ["RESOURCE_KEYS", "check_resources", "unit_resources"]

#: The settings and their defaults (``cpus`` None = the unit's thread count).
RESOURCE_KEYS: dict[str, Any] = {"threads": 1, "cpus": None, "gpus": 0, "device": "cpu"}
_DEVICES = ("cpu", "cuda")


def _check_values(d: Mapping, where: str) -> dict:
    out = {}
    for k, v in d.items():
        if k == "threads":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{where}.threads must be an integer >= 1; got {v!r}")
        elif k in ("cpus", "gpus"):
            if v is None and k == "cpus":
                pass
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{where}.{k} must be a number >= 0; got {v!r}")
        elif k == "device":
            if v not in _DEVICES:
                raise InputError(f"{where}.device must be one of {list(_DEVICES)}; got {v!r}")
        out[k] = v
    return out


def check_resources(raw: Any, unit_kinds: list[str]) -> dict:
    """Validate a config's ``resources`` section. ``unit_kinds`` are the names an override may use
    (``train`` and the study's analyses). Returns ``{"default": {...}, "<kind>": {...}}``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InputError(f"resources must be a mapping (key: value); got {type(raw).__name__} {raw!r}")
    default, overrides = {}, {}
    for k, v in raw.items():
        if k in RESOURCE_KEYS:
            default[k] = v
        elif k in unit_kinds:
            if not isinstance(v, Mapping):
                raise InputError(f"resources.{k} must be a mapping of {list(RESOURCE_KEYS)}; got {v!r}")
            for kk in v:
                if kk not in RESOURCE_KEYS:
                    raise UnknownNameError(f"key in resources.{k}", kk, list(RESOURCE_KEYS))
            overrides[k] = _check_values(v, f"resources.{k}")
        else:
            raise UnknownNameError("key in resources", k, [*RESOURCE_KEYS, *unit_kinds],
                                   "a setting, or 'train' / an analysis of this study to override it for")
    return {"default": {**RESOURCE_KEYS, **_check_values(default, "resources")}, **overrides}


def unit_resources(resources: Mapping | None, kind: str) -> dict:
    """The resolved ``threads, cpus, gpus, device`` of a unit of ``kind`` (``train`` or an analysis)."""
    resources = resources or {"default": dict(RESOURCE_KEYS)}
    r = {**RESOURCE_KEYS, **resources.get("default", {}), **resources.get(kind, {})}
    if r["cpus"] is None:
        r["cpus"] = r["threads"]
    return r
