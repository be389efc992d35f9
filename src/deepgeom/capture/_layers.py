"""Layer discovery and selection for any ``torch.nn.Module``.

The names a user can ask for are ``"input"`` (the model's input), every name of
``model.named_modules()`` in definition order, and ``"output"`` (the model's return value) — the same
names torch itself uses, so ``model.get_submodule(name)`` finds each one. Selection accepts exact names,
``fnmatch`` glob patterns (``"features.*"``, ``"*.relu"``) and module types (``nn.ReLU`` or ``"ReLU"``),
in the spirit of torchvision's ``get_graph_node_names`` / ``create_feature_extractor`` pair: one function
lists, the other takes the listed names.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .._defaults import INPUT, OUTPUT
from ..errors import InputError, UnknownNameError

__all__ = ["INPUT", "OUTPUT", "list_layers", "resolve_layers", "LayerSpec"]

_PSEUDO = (INPUT, OUTPUT)
_GLOB_CHARS = set("*?[")

#: What ``layers=`` accepts: one name/pattern/type, or a sequence of them, or None for the default.
LayerSpec = str | type | Sequence[str | type] | None


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return model


def _module_names(model: nn.Module) -> list[str]:
    """Every named sub-module (the root, named ``""``, is left out: it is ``"output"``)."""
    return [name for name, _ in model.named_modules() if name != ""]


def list_layers(model: nn.Module, *, with_types: bool = False) -> list[str] | list[tuple[str, str, int]]:
    """The layer names :func:`capture` accepts for ``model``, in definition order.

    ``"input"`` first, then every ``model.named_modules()`` name (nested modules as dotted paths, e.g.
    ``"features.0"``, ``"encoder.layer.3"``), then ``"output"``. Container modules are listed too:
    capturing a container gives its output (a residual block's sum, a transformer layer's hidden state).

    Args:
        model: any ``torch.nn.Module``.
        with_types: return ``(name, type_name, n_params)`` tuples instead of names; ``n_params`` counts
            the module's own and its children's parameters (0 for the pseudo-layers).

    Example:
        >>> from torch import nn
        >>> list_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
        ['input', '0', '1', 'output']
    """
    model = _check_model(model)
    if not with_types:
        return [INPUT, *_module_names(model), OUTPUT]
    rows: list[tuple[str, str, int]] = [(INPUT, "Input", 0)]
    for name, mod in model.named_modules():
        if name:
            rows.append((name, type(mod).__name__, sum(p.numel() for p in mod.parameters())))
    rows.append((OUTPUT, type(model).__name__, sum(p.numel() for p in model.parameters())))
    return rows


def default_layers(model: nn.Module) -> list[str]:
    """``model.analysis_layers`` when the model declares them, else input + every leaf module + output
    (only input + output for a TorchScript model)."""
    if isinstance(model, torch.jit.ScriptModule):  # hooks on scripted sub-modules never fire
        return [INPUT, OUTPUT]
    declared = getattr(model, "analysis_layers", None)
    if declared:
        return resolve_layers(model, list(declared))
    leaves = [name for name, mod in model.named_modules() if name and not any(True for _ in mod.children())]
    return [INPUT, *leaves, OUTPUT]


def _type_name_matches(mod: nn.Module, type_name: str) -> bool:
    return any(cls.__name__ == type_name or f"{cls.__module__}.{cls.__qualname__}" == type_name
               for cls in type(mod).__mro__)


def _unknown(name: object, available: list[str], model: nn.Module) -> UnknownNameError:
    close = difflib.get_close_matches(str(name), available, n=8, cutoff=0.5)
    ordered = close + [a for a in available if a not in close]
    hint = ("layers are 'input', 'output', names from model.named_modules(), glob patterns such as "
            "'features.*', or module types such as 'ReLU'; see deepgeom.capture.list_layers(model)")
    return UnknownNameError("layer", name, ordered, hint=hint)


def resolve_layers(model: nn.Module, layers: LayerSpec = None) -> list[str]:
    """Turn a layer selection into concrete layer names, in ``list_layers`` (definition) order.

    Args:
        model: any ``torch.nn.Module``.
        layers: ``None`` → ``model.analysis_layers`` if the model has that attribute, else ``"input"``,
            every leaf module and ``"output"``. Otherwise one item or a sequence of items, each

            * an exact name from :func:`list_layers` (``"features.3"``, ``"input"``, ``"output"``);
            * an ``fnmatch`` glob (``"features.*"``, ``"*.relu"``, ``"encoder.layer.?"``) — it must match
              at least one name;
            * a module class (``nn.ReLU``; subclasses match) or a class name string (``"ReLU"``, or
              the dotted ``"torch.nn.modules.activation.ReLU"``); a string is read as a type only when
              it is not a layer name.

            Duplicates are dropped. The result is in definition order; :func:`capture` re-orders by the
            order in which layers actually run in the forward pass.

    Raises:
        UnknownNameError: for an item that matches nothing; the message lists the available names,
            the closest matches first.
    """
    model = _check_model(model)
    if layers is None:
        return default_layers(model)
    if isinstance(layers, (str, type)):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise InputError(f"layers must be a name, a pattern, a module type or a list of them; got {layers!r}")
    items = list(layers)
    if not items:
        raise InputError("layers is empty; pass None for the default layers or see list_layers(model)")
    available = list_layers(model)
    modules = dict(model.named_modules())
    chosen: set[str] = set()
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, nn.Module):
                raise InputError(f"layer type {item!r} is not a torch.nn.Module subclass")
            hits = {n for n in available if n not in _PSEUDO and isinstance(modules[n], item)}
        elif isinstance(item, str):
            if item in available:
                hits = {item}
            elif _GLOB_CHARS & set(item):
                hits = {n for n in available if fnmatch.fnmatchcase(n, item)}
            else:
                hits = {n for n in available if n not in _PSEUDO and _type_name_matches(modules[n], item)}
        else:
            raise InputError(f"each layer must be a name, pattern or module type; got {item!r}")
        if not hits:
            raise _unknown(item if not isinstance(item, type) else item.__name__, available, model)
        chosen |= hits
    return [n for n in available if n in chosen]


def module_for(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (not for the pseudo-layers)."""
    modules = dict(model.named_modules())  # (get_submodule is not supported on TorchScript modules)
    if name in (INPUT, OUTPUT) or name not in modules:
        raise _unknown(name, list_layers(model), model)
    return modules[name]


def parameter_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (None for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def parameter_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (None if it has none)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None
