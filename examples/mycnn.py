"""Your own models for deepgeom: a class and a factory, used as ``--model examples/mycnn.py:NAME`` on the
command line and as ``model: mycnn.py:NAME`` in a study config (see examples/user_study.yaml).

deepgeom passes each whichever of ``input_shape``, ``n_classes``, ``width`` and ``depth`` its signature
names (so a study can sweep width and depth), plus ``--model-kwargs`` / the study's ``models:`` options.
"""

from torch import nn


class SmallCNN(nn.Module):
    """Conv → ReLU → 2×2 average pool → Linear → ReLU → Linear, for (C, H, W) images such as digits
    (flat rows, e.g. from a CSV, are reshaped to ``input_shape``)."""

    def __init__(self, width: int = 8, n_classes: int = 10, input_shape=(1, 8, 8)):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * width, 32)
        self.relu2 = nn.ReLU()
        self.out = nn.Linear(32, n_classes)

    def forward(self, x):
        if x.ndim == 2:
            x = x.reshape(-1, *self.input_shape)
        return self.out(self.relu2(self.fc(self.flat(self.pool(self.relu(self.conv(x)))))))


def make_mlp(width: int = 32, depth: int = 2, input_shape=(64,), n_classes: int = 10) -> nn.Module:
    """An MLP factory: ``depth`` hidden Linear+ReLU layers of ``width`` units on flattened inputs."""
    d = 1
    for s in input_shape:
        d *= int(s)
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, n_classes))
    return nn.Sequential(*layers)
