"""Fully connected network: ``depth`` hidden Linear+ReLU layers of ``width`` units, then a linear head."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ._base import GeomModel

__all__ = ["MLP", "DEFAULTS"]

#: family options and their defaults (none beyond width and depth for now)
DEFAULTS: dict = {"bias": True}


class MLP(GeomModel):
    """Multilayer perceptron on the flattened input.

    ``flatten`` → ``hidden.fc1`` → ``hidden.relu1`` → … → ``hidden.relu{depth}`` → ``head``.
    Analysis layers (Ansuini et al. 2019): ``input``, every ``hidden.relu{i}`` (post-activation),
    ``output``; the penultimate feature Φ is ``hidden.relu{depth}``.
    """

    family = "mlp"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, width: int, depth: int,
                 bias: bool = True) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        layers: list[tuple[str, nn.Module]] = []
        d_in = math.prod(input_shape)
        for i in range(1, depth + 1):
            layers += [(f"fc{i}", nn.Linear(d_in, width, bias=bias)), (f"relu{i}", nn.ReLU())]
            d_in = width
        self.hidden = nn.Sequential(OrderedDict(layers))
        self.head = nn.Linear(d_in, n_classes, bias=bias)
        taps = [f"hidden.relu{i}" for i in range(1, depth + 1)]
        self.analysis_layers = ["input", *taps, "output"]
        self.penultimate = taps[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.flatten(x)))
