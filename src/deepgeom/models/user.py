"""Your own model class or factory, named by a spec string, wherever deepgeom takes a model.

A spec is ``path/to/file.py:NAME`` (a Python file, imported without being installed) or
``package.module:NAME`` (an importable module); ``NAME`` is an ``nn.Module`` subclass or a function
returning one. The same spec works as ``--model`` on the command line, as ``model:`` in a study
config and as ``family`` in :func:`deepgeom.models.build` / :class:`deepgeom.train.TrainConfig`.

When deepgeom builds the model for training (:func:`build_user`), it passes the keyword arguments the
factory's signature names among ``input_shape``, ``n_classes``, ``width`` and ``depth`` (so width/depth
sweeps work for factories that take them), plus the user's own options. A model without
``analysis_layers`` gets input + every leaf module + output; one without ``head`` / ``penultimate``
gets its last ``nn.Linear`` as ``head`` and the leaf module that runs before it as ``penultimate``
(what the spectrum and collapse analyses read, Nam et al. 2024; Papyan et al. 2020).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from .._defaults import INPUT, OUTPUT, SWEEP_AXES
from ..errors import InputError

__all__ = ["import_file", "is_user_spec", "parse_model_spec", "resolve_spec", "import_object", "load_user_model",
           "build_user", "factory_parameters", "parse_kwargs", "load_weights"]

_FILE_CACHE: dict[tuple[str, float], Any] = {}


def is_user_spec(name: Any) -> bool:
    """True for ``file.py:NAME`` / ``module:NAME`` specs (a family name has neither ``:`` nor ``.py``)."""
    return isinstance(name, str) and (":" in name or name.endswith(".py"))


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``"dir/m.py:Net"`` → ``("dir/m.py", "Net")``; ``"pkg.mod:make"`` → ``("pkg.mod", "make")``."""
    if not isinstance(spec, str) or ":" not in spec:
        raise InputError(f"a model spec looks like path/to/file.py:ClassOrFactory or module:ClassOrFactory; "
                         f"got {spec!r}")
    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        raise InputError(f"a model spec looks like path/to/file.py:ClassOrFactory or module:ClassOrFactory; "
                         f"got {spec!r}")
    return where, name


def resolve_spec(spec: str, base: str | Path | None = None) -> str:
    """The spec with a relative ``.py`` path made absolute (against ``base`` when the file is there,
    else the working directory), so it still loads when the working directory changes."""
    where, name = parse_model_spec(spec)
    if not where.endswith(".py"):
        return spec
    p = Path(where).expanduser()
    if not p.is_absolute():
        if base is not None and (Path(base) / p).is_file():
            p = Path(base) / p
        p = p.resolve()
    return f"{p}:{name}"


def import_file(path: Path) -> Any:
    """Import a Python file as a module without installing it (once per modification time); its
    directory is on ``sys.path`` while it runs, so it may import its neighbours."""
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    key = (str(path.resolve()), path.stat().st_mtime)
    if key in _FILE_CACHE:
        return _FILE_CACHE[key]
    modname = f"deepgeom_user_{path.stem}_{hashlib.sha1(key[0].encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {str(path)!r} as Python code")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code can fail in any way; say where
        sys.modules.pop(modname, None)
        raise InputError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    _FILE_CACHE[key] = module
    return module


def import_object(spec: str) -> Any:
    """The class or factory a spec names (the file or module is imported once per modification)."""
    where, name = parse_model_spec(spec)
    if where.endswith(".py"):
        module = import_file(Path(where).expanduser())
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise InputError(f"cannot import module {where!r} for model spec {spec!r}: {exc} (give a file "
                             "path ending in .py, or a module on PYTHONPATH)") from exc
    if not hasattr(module, name):
        public = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v))
        raise InputError(f"{where} has no {name!r}; it defines: {', '.join(public) or '(nothing callable)'}")
    obj = getattr(module, name)
    if not callable(obj):
        raise InputError(f"{spec}: {name} is a {type(obj).__name__}, not a class or factory")
    return obj


def factory_parameters(obj: Any) -> tuple[set[str], bool]:
    """The keyword names ``obj(...)`` accepts and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def parse_kwargs(text: str | dict | None, flag: str = "--model-kwargs") -> dict[str, Any]:
    """``--model-kwargs`` as a dict: a JSON object string (or a dict already)."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        out = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{flag} must be a JSON object such as '{{\"width\": 32}}'; got {text!r} ({exc})") from exc
    if not isinstance(out, dict):
        raise InputError(f"{flag} must be a JSON object (key: value); got {text!r}")
    return out


def _call(obj: Any, kwargs: dict[str, Any], spec: str) -> nn.Module:
    try:
        model = obj(**kwargs)
    except TypeError as exc:
        names, _ = factory_parameters(obj)
        raise InputError(f"{spec}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: {exc}; "
                         f"it takes: {', '.join(sorted(names)) or '(no keyword arguments)'}") from exc
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's constructor can fail in any way; say which
        raise InputError(f"building {spec} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """Load a state dict into ``model``: ``.safetensors``, or a ``.pt``/``.pth`` state dict (read with
    ``weights_only=True``; a ``{"state_dict": ...}`` wrapper is unwrapped). Key or shape mismatches
    raise :class:`InputError` listing them."""
    p = Path(weights).expanduser()
    if not p.is_file():
        raise InputError(f"weights file {str(p)!r} does not exist")
    try:
        if p.suffix.lower() == ".safetensors":
            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - readers raise many types for bad files
        raise InputError(f"cannot read weights {str(p)!r}: {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{str(p)!r} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"weights {str(p)!r} do not fit the model: {exc}") from exc
    return model


def _annotate(model: nn.Module) -> nn.Module:
    """Give a user model the attributes the study analyses read, where it lacks them."""
    leaves = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    if not getattr(model, "analysis_layers", None):
        model.analysis_layers = [INPUT, *leaves, OUTPUT]
    if getattr(model, "head", None) is None:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if linear:
            head_name = linear[-1]
            # a plain attribute, not a registered child: registering it would add the head to the
            # module tree a second time (nn.Sequential would even run it twice)
            object.__setattr__(model, "head", model.get_submodule(head_name))
            if getattr(model, "penultimate", None) is None and head_name in leaves:
                i = leaves.index(head_name)
                if i > 0:
                    model.penultimate = leaves[i - 1]
    return model


def load_user_model(spec: str, kwargs: str | dict | None = None, weights: str | Path | None = None) -> nn.Module:
    """Build the model a spec names with ``kwargs`` (a dict or a JSON object string) and, optionally,
    load ``weights``; returned in eval mode with ``analysis_layers``/``head``/``penultimate`` filled in
    where it lacks them."""
    model = _call(import_object(spec), parse_kwargs(kwargs), spec)
    if weights is not None:
        load_weights(model, weights)
    return _annotate(model).eval()


def build_user(spec: str, *, input_shape: Any, n_classes: int, width: int | None, depth: int | None,
               seed: int | None, **options: Any) -> nn.Module:
    """Build a user model for training: the factory gets ``options`` plus whichever of ``input_shape``,
    ``n_classes``, ``width``, ``depth`` its signature names (None values are not passed). A width or
    depth the factory cannot take raises, so a sweep over it is never silently ignored."""
    obj = import_object(spec)
    names, var_kw = factory_parameters(obj)
    kwargs = dict(options)
    offered = {"input_shape": tuple(input_shape), "n_classes": int(n_classes), "width": width, "depth": depth}
    for key, value in offered.items():
        if value is None or key in kwargs:
            continue
        if key in names or var_kw:
            kwargs[key] = value
        elif key in ("width", "depth") and value is not None and _explicit(key, value):
            raise InputError(f"{spec} takes no {key!r} argument, so a {key} cannot be applied; "
                             f"remove {key} from the sweep or add a {key} parameter to it")
    if seed is None:
        model = _call(obj, kwargs, spec)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = _call(obj, kwargs, spec)
    model = _annotate(model)
    model.config = {"family": spec, "input_shape": [int(s) for s in input_shape], "n_classes": int(n_classes),
                    "width": width, "depth": depth, "seed": seed, "options": dict(options)}
    return model


def _explicit(key: str, value: Any) -> bool:
    """A width/depth counts as asked for unless it is the study sweep's own default (64 / 3)."""
    return value != SWEEP_AXES.get(key)
