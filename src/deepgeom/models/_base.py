"""Shared plumbing for the model families: the base class, option checks, 1-D/2-D layer choice.

Every model built by :func:`deepgeom.models.build` is a :class:`GeomModel`: an ordinary
``nn.Module`` that also carries

- ``analysis_layers`` -- the layers the intrinsic-dimension paper analysed (Ansuini et al., NeurIPS
  2019: input, the output of each pooling stage / residual block, each hidden fully connected layer after
  its activation, output), in forward order. Each is a real ``named_modules()`` name, except the
  pseudo-layers ``"input"`` and ``"output"``, so a forward hook on that module sees the representation;
- ``penultimate`` -- the module whose output is the penultimate feature map Φ (Nam et al. 2024): what
  the final linear layer ``head`` reads;
- ``head`` -- the final ``nn.Linear``;
- ``config`` -- a JSON-ready dict from which :func:`deepgeom.models.from_config` rebuilds the model.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..errors import InputError

__all__ = [
    "GeomModel", "PSEUDO_LAYERS", "check_input_shape", "conv_ops", "count_parameters", "make_classifier",
    "max_halvings", "resolve_options",
]

PSEUDO_LAYERS = ("input", "output")


class GeomModel(nn.Module):
    """Base class of deepgeom's model families (see the module docstring for the attributes)."""

    family: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.analysis_layers: list[str] = []
        self.penultimate: str = ""
        self.config: dict[str, Any] = {}

    def extra_repr(self) -> str:  # shown by print(model)
        return f"family={self.family!r}, analysis_layers={len(self.analysis_layers)}"

    def check_layers(self) -> None:
        """Check the contract: analysis layers are real module names in order, head is the last Linear."""
        names = dict(self.named_modules())
        missing = [n for n in self.analysis_layers if n not in PSEUDO_LAYERS and n not in names]
        if missing:  # a bug in a family, never user input
            raise RuntimeError(f"{type(self).__name__}: analysis layers {missing} are not modules")
        if self.analysis_layers[0] != "input" or self.analysis_layers[-1] != "output":
            raise RuntimeError("analysis_layers must start with 'input' and end with 'output'")
        if self.penultimate not in self.analysis_layers:
            raise RuntimeError(f"penultimate {self.penultimate!r} is not among the analysis layers")
        if not isinstance(getattr(self, "head", None), nn.Linear):
            raise RuntimeError("head must be an nn.Linear")


def check_input_shape(input_shape: Any, family: str, *, spatial: bool) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints; conv families need (C, L) or (C, H, W)."""
    try:
        shape = tuple(int(s) for s in input_shape)
        ok = all(int(s) == s for s in input_shape)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input_shape must be a sequence of positive ints; got {input_shape!r}") from exc
    if not ok or not shape or any(s < 1 for s in shape):
        raise InputError(f"input_shape must be a non-empty sequence of positive ints; got {input_shape!r}")
    if spatial and len(shape) not in (2, 3):
        raise InputError(
            f"family {family!r} needs input_shape (C, L) for 1-D signals or (C, H, W) for images; "
            f"got {shape}" + (f" (for a 1-D signal use (1, {shape[0]}))" if len(shape) == 1 else "")
        )
    return shape


def max_halvings(spatial: Sequence[int]) -> int:
    """How many 2× poolings the smallest spatial side allows before it reaches 1: ⌊log2 min(side)⌋."""
    return int(math.floor(math.log2(min(spatial))))


def conv_ops(input_shape: tuple[int, ...]) -> dict[str, type[nn.Module]]:
    """The 1-D or 2-D layer classes for an input of shape (C, L) or (C, H, W)."""
    if len(input_shape) == 2:
        return {"conv": nn.Conv1d, "bn": nn.BatchNorm1d, "maxpool": nn.MaxPool1d, "avgpool": nn.AdaptiveAvgPool1d}
    return {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "maxpool": nn.MaxPool2d, "avgpool": nn.AdaptiveAvgPool2d}


def _check_option(family: str, key: str, value: Any, default: Any, minimum: int = 0) -> Any:
    """Type/range check of one option against the type of its default."""
    where = f"{family} option {key!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false; got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
            raise InputError(f"{where} must be an integer >= {minimum}; got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < 1.0):
            raise InputError(f"{where} must be a number in [0, 1); got {value!r}")
        return float(value)
    return value


def resolve_options(family: str, options: Mapping[str, Any], defaults: Mapping[str, Any],
                    zero_ok: tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults overridden by ``options``; an unknown option name or a bad value raises InputError.

    Integer options must be >= 1 (>= 0 for names in ``zero_ok``); float options lie in [0, 1);
    a default of ``None`` means "derived from width/depth" and accepts None or an int >= 1.
    """
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(
            f"unknown option(s) {unknown} for model family {family!r}; known: {sorted(defaults) or 'none'}"
        )
    out = dict(defaults)
    for key, value in options.items():
        default = defaults[key]
        if default is None:
            if value is not None:
                value = _check_option(family, key, value, 1, minimum=1)
        else:
            value = _check_option(family, key, value, default, minimum=0 if key in zero_ok else 1)
        out[key] = value
    return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_classifier(in_features: int, n_hidden: int, hidden_width: int, n_out: int,
                    dropout: float = 0.0) -> tuple[nn.Sequential, list[str], nn.Linear]:
    """Hidden FC layers ``fc{i}`` → ``relu{i}`` (dropout first, as in AlexNet/VGG), plus a head.

    Returns the hidden block, the names (relative to it) of its ReLU taps, and the head.
    """
    layers: list[tuple[str, nn.Module]] = []
    taps = []
    width = in_features
    for i in range(1, n_hidden + 1):
        if dropout > 0:
            layers.append((f"drop{i}", nn.Dropout(dropout)))
        layers.append((f"fc{i}", nn.Linear(width, hidden_width)))
        layers.append((f"relu{i}", nn.ReLU()))
        taps.append(f"relu{i}")
        width = hidden_width
    return nn.Sequential(OrderedDict(layers)), taps, nn.Linear(width, n_out)


def init_weights(model: GeomModel) -> None:
    """He initialisation (He et al. 2015) for ReLU networks, as torchvision's VGG and ResNet do.

    Convolutions: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``; hidden ``nn.Linear``
    layers: ``kaiming_normal_(mode="fan_in", nonlinearity="relu")``; biases 0; batch norm weight 1,
    bias 0; the ``head`` keeps PyTorch's default init. PyTorch's default (uniform with variance
    1/(3·fan_in)) shrinks the signal by ~3× per ReLU layer, so an 8-conv VGG without batch norm
    starts with vanishing activations and does not leave chance accuracy in a few epochs.
    """
    for m in model.modules():
        if m is model.head:
            continue
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            continue
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
