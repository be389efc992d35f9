"""VGG-style CNN (Simonyan & Zisserman 2015): stages of 3-wide convolutions each closed by max pooling.

``depth`` is the number of conv layers, spread over ``S = min(depth, stages, ⌊log2 min side⌋)``
stages with the extra convs in the later stages, as in VGG (depth 8 over 5 stages gives VGG-11's
1, 1, 2, 2, 2; depth 13 gives VGG-16's 2, 2, 3, 3, 3). Stage ``s`` (0-based) has
``width · 2^min(s, 3)`` channels (VGG: 64, 128, 256, 512, 512 for width 64). After the last stage an
adaptive average pool to ``final_pool`` per side makes any input size work (tiny inputs: mnist1d's
40 samples, digits' 8×8), then ``fc_layers`` hidden fully connected layers of ``fc_width`` units.
1-D convolutions for input (C, L), 2-D for (C, H, W).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import InputError
from ._base import GeomModel, conv_ops, make_classifier, max_halvings

__all__ = ["VGG", "DEFAULTS", "convs_per_stage"]

DEFAULTS: dict = {"batch_norm": False, "stages": 5, "fc_layers": 2, "fc_width": None, "final_pool": 1,
                  "dropout": 0.0}


def convs_per_stage(depth: int, n_stages: int) -> list[int]:
    """Split ``depth`` convs over ``n_stages`` stages as evenly as possible, extras in the later ones."""
    base, extra = divmod(depth, n_stages)
    return [base + (1 if s >= n_stages - extra else 0) for s in range(n_stages)]


class VGG(GeomModel):
    """VGG-style CNN; see the module docstring.

    Module names: ``features.conv{s}_{j}`` (``features.bn{s}_{j}``), ``features.relu{s}_{j}``,
    ``features.pool{s}`` (s, j from 1), then ``avgpool``, ``flatten``, ``classifier.fc{i}``,
    ``classifier.relu{i}``, ``head``. Analysis layers (Ansuini et al. 2019): ``input``, each
    ``features.pool{s}``, each ``classifier.relu{i}``, ``output``. The penultimate feature Φ is the last
    ``classifier.relu{i}`` (``flatten`` when ``fc_layers=0``, then also analysed).
    """

    family = "vgg"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, width: int, depth: int, *,
                 batch_norm: bool, stages: int, fc_layers: int, fc_width: int | None, final_pool: int,
                 dropout: float) -> None:
        super().__init__()
        ops = conv_ops(input_shape)
        n_pool = max_halvings(input_shape[1:])
        if n_pool < 1:
            raise InputError(f"vgg needs every spatial side >= 2 to pool; got input_shape {input_shape}")
        if stages < 1:
            raise InputError(f"vgg option 'stages' must be >= 1; got {stages}")
        n_stages = min(depth, stages, n_pool)
        layers: list[tuple[str, nn.Module]] = []
        c_in = input_shape[0]
        taps = []
        for s, n_conv in enumerate(convs_per_stage(depth, n_stages), start=1):
            c_out = width * 2 ** min(s - 1, 3)
            for j in range(1, n_conv + 1):
                layers.append((f"conv{s}_{j}", ops["conv"](c_in, c_out, 3, padding=1, bias=not batch_norm)))
                if batch_norm:
                    layers.append((f"bn{s}_{j}", ops["bn"](c_out)))
                layers.append((f"relu{s}_{j}", nn.ReLU()))
                c_in = c_out
            layers.append((f"pool{s}", ops["maxpool"](2)))
            taps.append(f"features.pool{s}")
        self.features = nn.Sequential(OrderedDict(layers))
        self.avgpool = ops["avgpool"](final_pool)
        self.flatten = nn.Flatten()
        flat = c_in * final_pool ** (len(input_shape) - 1)
        self.classifier, fc_taps, self.head = make_classifier(
            flat, fc_layers, fc_width or 8 * width, n_classes, dropout)
        fc_taps = [f"classifier.{t}" for t in fc_taps] or ["flatten"]
        self.analysis_layers = ["input", *taps, *fc_taps, "output"]
        self.penultimate = fc_taps[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(self.flatten(self.avgpool(self.features(x)))))
