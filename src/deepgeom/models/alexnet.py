"""AlexNet-style CNN (Krizhevsky et al. 2012): a few wide convolutions with pooling, then FC layers.

``depth`` conv layers (AlexNet: 5) with channel multiples of ``width`` following AlexNet's
64, 192, 384, 256, 256 for width 64: ×1, ×3, ×6 for the middle ones, ×4 for the last two. The first
conv is 5 wide (AlexNet's 11-wide stride-4 conv is for 224-pixel images), the rest 3 wide. Max pooling
follows the first, the second and the last conv, as in AlexNet (kept to the last ones when the input
is too small for three halvings). Then adaptive average pooling to ``final_pool`` per side and
``fc_layers`` hidden fully connected layers of ``fc_width`` units (AlexNet: 2 × 4096, dropout 0.5;
defaults here 2 × 16·width, no dropout). 1-D convolutions for input (C, L), 2-D for (C, H, W).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import InputError
from ._base import GeomModel, conv_ops, make_classifier, max_halvings

__all__ = ["AlexNet", "DEFAULTS", "channel_multiples"]

DEFAULTS: dict = {"fc_layers": 2, "fc_width": None, "final_pool": 1, "dropout": 0.0}


def channel_multiples(depth: int) -> list[int]:
    """AlexNet's channel pattern, 1, 3, 6, …, 6, 4, 4, cut or stretched to ``depth`` convs."""
    out = []
    for i in range(depth):
        if i == 0:
            out.append(1)
        elif i >= max(2, depth - 2):
            out.append(4)
        elif i == 1:
            out.append(3)
        else:
            out.append(6)
    return out


class AlexNet(GeomModel):
    """AlexNet-style CNN; see the module docstring.

    Module names: ``features.conv{i}``, ``features.relu{i}`` (i from 1), ``features.pool{p}`` (p from 1),
    ``avgpool``, ``flatten``, ``classifier.fc{k}``, ``classifier.relu{k}``, ``head``. Analysis layers
    (Ansuini et al. 2019): ``input``, each ``features.pool{p}``, each ``classifier.relu{k}``, ``output``;
    the penultimate Φ is the last ``classifier.relu{k}`` (``flatten`` when ``fc_layers=0``).
    """

    family = "alexnet"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, width: int, depth: int, *,
                 fc_layers: int, fc_width: int | None, final_pool: int, dropout: float) -> None:
        super().__init__()
        ops = conv_ops(input_shape)
        n_pool = max_halvings(input_shape[1:])
        if n_pool < 1:
            raise InputError(f"alexnet needs every spatial side >= 2 to pool; got input_shape {input_shape}")
        pool_after = sorted({0, min(1, depth - 1), depth - 1})[-n_pool:]
        layers: list[tuple[str, nn.Module]] = []
        taps = []
        c_in = input_shape[0]
        for i, mult in enumerate(channel_multiples(depth)):
            k = 5 if i == 0 else 3
            layers += [(f"conv{i + 1}", ops["conv"](c_in, width * mult, k, padding=k // 2)),
                       (f"relu{i + 1}", nn.ReLU())]
            c_in = width * mult
            if i in pool_after:
                layers.append((f"pool{len(taps) + 1}", ops["maxpool"](2)))
                taps.append(f"features.pool{len(taps) + 1}")
        self.features = nn.Sequential(OrderedDict(layers))
        self.avgpool = ops["avgpool"](final_pool)
        self.flatten = nn.Flatten()
        flat = c_in * final_pool ** (len(input_shape) - 1)
        self.classifier, fc_taps, self.head = make_classifier(
            flat, fc_layers, fc_width or 16 * width, n_classes, dropout)
        fc_taps = [f"classifier.{t}" for t in fc_taps] or ["flatten"]
        self.analysis_layers = ["input", *taps, *fc_taps, "output"]
        self.penultimate = fc_taps[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(self.flatten(self.avgpool(self.features(x)))))
