"""Model families with width and depth as knobs, each knowing which layers to analyse.

``build(family, input_shape=..., n_classes=..., width=..., depth=...)`` returns a
:class:`~deepgeom.models._base.GeomModel` (a plain ``nn.Module``) carrying ``analysis_layers`` (the
layers Ansuini et al., NeurIPS 2019, analysed: input, each pooling stage / residual block, each hidden
fully connected layer, output), ``penultimate`` (the module whose output is the feature map Φ read by
the last linear layer, Nam et al. 2024), ``head`` (that ``nn.Linear``) and ``config``
(:func:`from_config` rebuilds the model from it).

Weights start from He initialisation (:func:`~deepgeom.models._base.init_weights`), as in torchvision.

Families (1-D convolutions for input (C, L), 2-D for (C, H, W); the MLP flattens any shape):

========  =========================================  ================================================
family    width                                      depth
========  =========================================  ================================================
mlp       hidden units per layer (default 128)       hidden Linear+ReLU layers (default 3)
vgg       channels of the first stage (default 16)   conv layers, spread over ≤ 5 stages (default 8)
resnet    channels of the first stage (default 16)   basic residual blocks over ≤ 3 stages (default 6)
alexnet   base channels (default 16)                 conv layers (default 5)
========  =========================================  ================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._validation import check_positive_int
from ..errors import InputError, UnknownNameError
from . import alexnet, mlp, resnet, vgg
from ._base import (
    PSEUDO_LAYERS,
    GeomModel,
    check_input_shape,
    count_parameters,
    init_weights,
    resolve_options,
)
from .user import build_user, is_user_spec, load_user_model

__all__ = ["GeomModel", "build", "families", "from_config", "relative_depths", "count_parameters",
           "PSEUDO_LAYERS", "is_user_spec", "load_user_model"]

# family -> (class, default width, default depth, option defaults, needs (C, L)/(C, H, W), zero-ok options)
_FAMILIES: dict[str, tuple[type[GeomModel], int, int, dict, bool, tuple[str, ...]]] = {
    "mlp": (mlp.MLP, 128, 3, mlp.DEFAULTS, False, ()),
    "vgg": (vgg.VGG, 16, 8, vgg.DEFAULTS, True, ("fc_layers",)),
    "resnet": (resnet.ResNet, 16, 6, resnet.DEFAULTS, True, ()),
    "alexnet": (alexnet.AlexNet, 16, 5, alexnet.DEFAULTS, True, ("fc_layers",)),
}


def families() -> list[str]:
    """Names of the model families :func:`build` knows, sorted."""
    return sorted(_FAMILIES)


def build(family: str, *, input_shape: Sequence[int], n_classes: int, width: int | None = None,
          depth: int | None = None, seed: int | None = None, **options: Any) -> GeomModel:
    """Build a model of ``family`` for inputs of shape ``input_shape`` and ``n_classes`` outputs.

    Args:
        family: one of :func:`families` (``mlp``, ``vgg``, ``resnet``, ``alexnet``), or your own model
            as ``path/to/file.py:ClassOrFactory`` / ``module:ClassOrFactory`` (see
            :mod:`deepgeom.models.user`: the factory gets whichever of ``input_shape``, ``n_classes``,
            ``width``, ``depth`` it names, plus ``options``).
        input_shape: shape of one example: (C, L) → 1-D convolutions (mnist1d: (1, 40)),
            (C, H, W) → 2-D (digits: (1, 8, 8), fashion-mnist: (1, 28, 28)); the MLP takes any shape.
        n_classes: number of outputs (classes, or regression targets).
        width, depth: the family's size knobs (see the module docstring); None → family default.
        seed: if given, the initial weights are drawn from ``torch.manual_seed(seed)`` inside a forked
            RNG, so the same seed gives the same weights and the global RNG is left untouched; if None,
            the global torch RNG is used as any ``nn.Module`` does.
        **options: family options — vgg: ``batch_norm`` (False), ``stages`` (5), ``fc_layers`` (2),
            ``fc_width`` (8·width), ``final_pool`` (1), ``dropout`` (0.0); resnet: ``batch_norm`` (True),
            ``stages`` (3); alexnet: ``fc_layers`` (2), ``fc_width`` (16·width), ``final_pool`` (1),
            ``dropout`` (0.0); mlp: ``bias`` (True).

    Returns:
        The model, with ``analysis_layers``, ``penultimate``, ``head`` and ``config``.

    Raises:
        UnknownNameError: unknown family. InputError: bad shape, size or option.

    Example:
        >>> m = build("vgg", input_shape=(1, 8, 8), n_classes=10, width=8, depth=4, seed=0)
        >>> m.analysis_layers
        ['input', 'features.pool1', 'features.pool2', 'features.pool3', 'classifier.relu1', 'classifier.relu2', 'output']
    """
    if is_user_spec(family):  # your own class or factory: path/to/file.py:NAME or module:NAME
        return build_user(family, input_shape=input_shape, n_classes=n_classes, width=width, depth=depth,
                          seed=seed, **options)
    if family not in _FAMILIES:
        raise UnknownNameError("model family", family, families(),
                               hint="or your own model as path/to/file.py:ClassOrFactory")
    cls, width_default, depth_default, defaults, spatial, zero_ok = _FAMILIES[family]
    shape = check_input_shape(input_shape, family, spatial=spatial)
    n_classes = check_positive_int(n_classes, "n_classes")
    width = check_positive_int(width_default if width is None else width, "width")
    depth = check_positive_int(depth_default if depth is None else depth, "depth")
    if seed is not None:
        seed = check_positive_int(seed, "seed", minimum=0)
    opts = resolve_options(family, options, defaults, zero_ok)
    if seed is None:
        model = cls(shape, n_classes, width, depth, **opts)
        init_weights(model)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(shape, n_classes, width, depth, **opts)
            init_weights(model)
    model.config = {"family": family, "input_shape": list(shape), "n_classes": n_classes, "width": width,
                    "depth": depth, "seed": seed, "options": opts}
    model.check_layers()
    return model


def from_config(config: dict[str, Any]) -> GeomModel:
    """Rebuild a model from its ``.config`` dict (same architecture; same initial weights if seeded)."""
    try:
        cfg = dict(config)
        return build(cfg.pop("family"), input_shape=cfg.pop("input_shape"), n_classes=cfg.pop("n_classes"),
                     width=cfg.pop("width", None), depth=cfg.pop("depth", None), seed=cfg.pop("seed", None),
                     **cfg.pop("options", {}))
    except (KeyError, TypeError) as exc:
        raise InputError(f"not a deepgeom model config (needs family, input_shape, n_classes): {exc}") from exc


def relative_depths(model_or_layers: nn.Module | Sequence[str]) -> dict[str, float]:
    """Relative depth of each analysis layer: position / (count − 1), so input = 0 and output = 1.

    Ansuini et al. (2019) overlay architectures of different depth by a layer's index divided by the
    number of analysed layers; here the index runs 0 … L−1 over ``analysis_layers`` (input, pooling
    stages / blocks, hidden FC layers, output) and is divided by L − 1, so both ends are pinned at 0
    and 1 and layers are evenly spaced by position (not by parameter count or FLOPs).

    Accepts a model with ``analysis_layers`` or a list of layer names.
    """
    if isinstance(model_or_layers, nn.Module):
        layers = getattr(model_or_layers, "analysis_layers", None)
        if layers is None:
            raise InputError(
                f"{type(model_or_layers).__name__} has no 'analysis_layers'; pass a list of layer names instead")
    else:
        layers = list(model_or_layers)
    if len(layers) < 2 or len(set(layers)) != len(layers):
        raise InputError(f"need at least two distinct layer names for relative depths; got {layers!r}")
    last = len(layers) - 1
    return {name: i / last for i, name in enumerate(layers)}
