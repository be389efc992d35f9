"""A small base for result dataclasses: plain numbers out, and a JSON-ready dict on request."""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import numpy as np


def to_jsonable(value: Any, *, max_array: int | None = None) -> Any:
    """Convert numpy/torch scalars and arrays, dataclasses, tuples and dicts to JSON types.

    Arrays longer than ``max_array`` are dropped (returned as None) so CLI output stays small;
    NaN/Inf become None, since JSON has no spelling for them.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), max_array=max_array) for f in dataclasses.fields(value)}
    # torch is looked up, not imported: a tensor can only exist once torch is loaded, and result
    # objects are also read by torch-free code (the report, the claims)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if max_array is not None and value.size > max_array:
            return None
        return to_jsonable(value.tolist(), max_array=max_array)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, max_array=max_array) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, max_array=max_array) for v in value]
    return value


class ResultMixin:
    """Mixin for frozen result dataclasses: ``to_dict()`` for JSON, arrays optionally left out."""

    def to_dict(self, *, max_array: int | None = None) -> dict[str, Any]:
        return to_jsonable(self, max_array=max_array)
