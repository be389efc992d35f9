"""Small helpers shared by the analyses that stream layers: rows of a batch, layer order, depth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..capture import layer_depths
from ..functional.matrix import as_tensor

__all__ = ["flat_rows", "first_order", "relative_depth"]


def flat_rows(x: Any) -> torch.Tensor:
    """A batch as an (N, D) tensor: every example's features flattened."""
    t = as_tensor(x)
    return t.reshape(t.shape[0], -1) if t.ndim != 2 else t


def first_order(batch: Mapping[str, Any], names: list[str]) -> list[str]:
    """The requested layers in the order the stream yields them (forward order)."""
    return [n for n in batch if n in names]


def relative_depth(model: Any, names: list[str]) -> list[float]:
    """The capture's relative-depth rule, as a list in the order of ``names``."""
    return list(layer_depths(model, names).values())
