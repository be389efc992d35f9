"""Checks of scalar parameters (no array library beyond numpy): importable by torch-free code such as
the report and the claims."""

from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = ["check_fraction", "check_positive_int"]


def check_fraction(value: float, name: str, *, low: float = 0.0, high: float = 1.0,
                   open_low: bool = False, open_high: bool = False) -> float:
    """A number in [low, high] (ends open if asked); raises naming the parameter and echoing the value."""
    v = float(value)
    ok_low = v > low if open_low else v >= low
    ok_high = v < high if open_high else v <= high
    if not (ok_low and ok_high) or np.isnan(v):
        lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
        raise InputError(f"{name} must be in {lo}{low}, {high}{hi}; got {value!r}")
    return v


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if int(value) != value or int(value) < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)
