"""ResNet-style CNN (He et al. 2016) of basic residual blocks, CIFAR layout (Nguyen et al. 2021).

A stem (3-wide conv, batch norm, ReLU) then ``depth`` basic blocks spread over
``S = min(depth, stages, 1 + ⌊log2 min side⌋)`` stages (extras in the later stages); stage ``s``
(0-based) has ``width · 2^s`` channels and, for ``s > 0``, its first block halves the spatial size with
a stride-2 conv and a 1-wide projection shortcut (the CIFAR ResNets with 16/32/64 × width channels).
Global average pooling, then the linear ``head``. The tiny inputs used here (8×8 digits, length-40
mnist1d) get no stem max-pool. 1-D convolutions for input (C, L), 2-D for (C, H, W).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import InputError
from ._base import GeomModel, conv_ops, max_halvings
from .vgg import convs_per_stage

__all__ = ["ResNet", "BasicBlock", "DEFAULTS"]

DEFAULTS: dict = {"batch_norm": True, "stages": 3}


class BasicBlock(nn.Module):
    """y = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)); the block's own output is the analysed point."""

    def __init__(self, ops: dict, c_in: int, c_out: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        norm = (lambda c: ops["bn"](c)) if batch_norm else (lambda c: nn.Identity())
        self.conv1 = ops["conv"](c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = norm(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = ops["conv"](c_out, c_out, 3, padding=1, bias=not batch_norm)
        self.bn2 = norm(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(OrderedDict(
                conv=ops["conv"](c_in, c_out, 1, stride=stride, bias=not batch_norm), bn=norm(c_out)))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(GeomModel):
    """ResNet-style CNN; see the module docstring.

    Module names: ``stem`` (``stem.conv``, ``stem.bn``, ``stem.relu``), ``blocks.{b}`` (b from 0, each a
    :class:`BasicBlock`), ``avgpool``, ``flatten``, ``head``. Analysis layers (Ansuini et al. 2019 used
    the stem's pooling output, each block's output, the global average pool and the output):
    ``input``, ``stem``, every ``blocks.{b}``, ``flatten`` (= penultimate Φ), ``output``.
    """

    family = "resnet"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, width: int, depth: int, *,
                 batch_norm: bool, stages: int) -> None:
        super().__init__()
        ops = conv_ops(input_shape)
        if stages < 1:
            raise InputError(f"resnet option 'stages' must be >= 1; got {stages}")
        n_stages = min(depth, stages, 1 + max_halvings(input_shape[1:]))
        stem = [("conv", ops["conv"](input_shape[0], width, 3, padding=1, bias=not batch_norm))]
        if batch_norm:
            stem.append(("bn", ops["bn"](width)))
        stem.append(("relu", nn.ReLU()))
        self.stem = nn.Sequential(OrderedDict(stem))
        blocks = []
        c_in = width
        for s, n_blocks in enumerate(convs_per_stage(depth, n_stages)):
            c_out = width * 2**s
            for b in range(n_blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(ops, c_in, c_out, stride, batch_norm))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = ops["avgpool"](1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(c_in, n_classes)
        self.analysis_layers = ["input", "stem", *[f"blocks.{b}" for b in range(len(blocks))], "flatten",
                                "output"]
        self.penultimate = "flatten"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.avgpool(self.blocks(self.stem(x)))))
