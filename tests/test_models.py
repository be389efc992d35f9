"""Model families: shapes, analysis layers that hooks really see, parameter counts against closed forms,
relative depth, seeding, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from deepgeom.errors import InputError, UnknownNameError
from deepgeom.models import GeomModel, build, count_parameters, families, from_config, relative_depths

SHAPES = {"mnist1d": (1, 40), "digits": (1, 8, 8), "fashion-mnist": (1, 28, 28)}
SMALL = {"mlp": dict(width=16, depth=3), "vgg": dict(width=4, depth=5), "resnet": dict(width=4, depth=4),
         "alexnet": dict(width=4, depth=5)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: one thread is faster than two on a busy shared machine, and gives the same numbers
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_families_listed():
    assert families() == ["alexnet", "mlp", "resnet", "vgg"]


@pytest.mark.parametrize("data", list(SHAPES))
@pytest.mark.parametrize("family", ["mlp", "vgg", "resnet", "alexnet"])
def test_build_forward_hooks_and_penultimate(family, data):
    shape = SHAPES[data]
    model = build(family, input_shape=shape, n_classes=7, seed=0, **SMALL[family])
    assert isinstance(model, GeomModel) and isinstance(model.head, nn.Linear)
    assert model.head.out_features == 7
    if family != "mlp":  # 1-D convolutions for (C, L), 2-D for (C, H, W)
        convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        want = nn.Conv1d if len(shape) == 2 else nn.Conv2d
        assert convs and all(isinstance(c, want) for c in convs)

    names = dict(model.named_modules())
    layers = model.analysis_layers
    assert layers[0] == "input" and layers[-1] == "output"
    inner = layers[1:-1]
    assert len(inner) >= 2 and len(set(layers)) == len(layers)
    assert all(n in names for n in inner)
    assert model.penultimate == layers[-2]

    fired: list[str] = []
    seen: dict[str, torch.Tensor] = {}

    def tap(name):
        def hook(_m, _i, out):  # returns None: observe, never replace the output
            fired.append(name)
            seen[name] = out
        return hook

    handles = [names[n].register_forward_hook(tap(n)) for n in inner]
    head_in: list[torch.Tensor] = []
    handles.append(model.head.register_forward_hook(lambda _m, inp, _o: head_in.append(inp[0]) and None))
    try:
        model.eval()
        x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    assert y.shape == (3, 7) and torch.isfinite(y).all()
    # every analysis layer fires exactly once, in the declared forward order
    assert fired == inner
    # the penultimate module's output is exactly what the head reads: Φ
    phi = seen[model.penultimate].reshape(3, -1)
    assert torch.equal(phi, head_in[0])
    assert torch.allclose(model.head(phi), y, rtol=0, atol=1e-6)
    # post-activation taps (ReLU, max pools of ReLU outputs, residual blocks ending in ReLU) are >= 0
    assert all((seen[n] >= 0).all() for n in inner)


def test_vgg_stages_follow_input_size():
    # depth 8 over 5 stages → VGG-11's 1,1,2,2,2 convs; digits 8×8 allows only 3 halvings
    m = build("vgg", input_shape=(1, 40), n_classes=10, width=4, depth=8)
    convs = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv1d)]
    per_stage = [sum(n.startswith(f"features.conv{s}_") for n in convs) for s in range(1, 6)]
    assert per_stage == [1, 1, 2, 2, 2]
    m = build("vgg", input_shape=(1, 8, 8), n_classes=10, width=4, depth=8)
    assert [n for n in m.analysis_layers if "pool" in n] == ["features.pool1", "features.pool2", "features.pool3"]
    m = build("vgg", input_shape=(1, 8, 8), n_classes=10, width=4, depth=13, fc_layers=0, batch_norm=True)
    assert m.penultimate == "flatten" and m.analysis_layers[-2] == "flatten"
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in m.modules()) == 13


def mlp_count(d_in: int, width: int, depth: int, n_out: int) -> int:
    """Closed form: (d_in+1)·w + (depth−1)·(w+1)·w + (w+1)·n_out."""
    return (d_in + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * n_out


@given(width=st.integers(1, 40), depth=st.integers(1, 5), length=st.integers(1, 30), n_out=st.integers(1, 12))
def test_mlp_parameter_count_closed_form(width, depth, length, n_out):
    m = build("mlp", input_shape=(2, length), n_classes=n_out, width=width, depth=depth)
    assert count_parameters(m) == mlp_count(2 * length, width, depth, n_out)
    assert m.analysis_layers == ["input", *[f"hidden.relu{i}" for i in range(1, depth + 1)], "output"]


@pytest.mark.parametrize("shape,k", [((1, 40), 3), ((3, 8, 8), 9)])
@pytest.mark.parametrize("width", [2, 5])
def test_vgg_parameter_count_closed_form(shape, k, width):
    # depth 2 → two stages of one conv each (w, 2w channels), no FC layers, head on 2w features
    c = shape[0]
    m = build("vgg", input_shape=shape, n_classes=10, width=width, depth=2, fc_layers=0)
    want = (k * c * width + width) + (k * width * 2 * width + 2 * width) + (2 * width + 1) * 10
    assert count_parameters(m) == want
    # with batch norm: conv biases go, BN adds 2 per channel
    m = build("vgg", input_shape=shape, n_classes=10, width=width, depth=2, fc_layers=0, batch_norm=True)
    assert count_parameters(m) == k * c * width + k * width * 2 * width + 2 * (width + 2 * width) + (2 * width + 1) * 10


@pytest.mark.parametrize("shape,k", [((1, 40), 3), ((1, 8, 8), 9)])
def test_resnet_depth_adds_blocks_of_known_size(shape, k):
    # 3 stages of 1 block → 2 blocks each: one identity-shortcut block per stage with c = w, 2w, 4w,
    # each two k-wide convs (no bias) and two batch norms: 2·k·c² + 4·c parameters
    w = 3
    small = build("resnet", input_shape=shape, n_classes=10, width=w, depth=3)
    big = build("resnet", input_shape=shape, n_classes=10, width=w, depth=6)
    added = sum(2 * k * c * c + 4 * c for c in (w, 2 * w, 4 * w))
    assert count_parameters(big) - count_parameters(small) == added
    assert len(big.analysis_layers) - len(small.analysis_layers) == 3
    # the whole of the small one: stem + 1 block per stage (+ projection shortcuts at stages 2, 3) + head
    stem = k * w + 2 * w
    blocks = (2 * k * w * w + 4 * w) + sum(
        k * cin * cout + k * cout * cout + 4 * cout + cin * cout + 2 * cout for cin, cout in ((w, 2 * w), (2 * w, 4 * w)))
    assert count_parameters(small) == stem + blocks + (4 * w + 1) * 10


@pytest.mark.parametrize("width", [1, 4])
def test_alexnet_parameter_count_closed_form(width):
    c = [width * m for m in (1, 3, 6, 4, 4)]
    m = build("alexnet", input_shape=(1, 8, 8), n_classes=10, width=width, depth=5, fc_layers=0)
    want = 25 * c[0] + c[0] + sum(9 * a * b + b for a, b in zip(c, c[1:], strict=False)) + (c[-1] + 1) * 10
    assert count_parameters(m) == want
    # pools after conv 1, 2 and 5 as in AlexNet
    assert [n for n in m.analysis_layers if "pool" in n] == ["features.pool1", "features.pool2", "features.pool3"]
    names = [n for n, _ in m.features.named_children()]
    assert names.index("pool1") == names.index("relu1") + 1 and names.index("pool3") == len(names) - 1


@pytest.mark.parametrize("family", ["vgg", "resnet", "alexnet"])
def test_wider_conv_nets_grow_about_quadratically(family):
    # conv weights scale as width²: doubling width multiplies the count by nearly 4 (biases/heads are linear)
    a = count_parameters(build(family, input_shape=(1, 8, 8), n_classes=10, width=8, depth=4))
    b = count_parameters(build(family, input_shape=(1, 8, 8), n_classes=10, width=16, depth=4))
    assert 3.3 < b / a < 4.0


def test_relative_depths():
    m = build("resnet", input_shape=(1, 8, 8), n_classes=10, width=2, depth=3)
    rd = relative_depths(m)
    assert list(rd) == m.analysis_layers
    vals = list(rd.values())
    L = len(vals)
    assert vals[0] == 0.0 and vals[-1] == 1.0
    assert all(math.isclose(v, i / (L - 1)) for i, v in enumerate(vals))
    assert relative_depths(["input", "a", "output"]) == {"input": 0.0, "a": 0.5, "output": 1.0}
    with pytest.raises(InputError, match="analysis_layers"):
        relative_depths(nn.Linear(2, 2))
    with pytest.raises(InputError, match="two distinct"):
        relative_depths(["a", "a"])


def test_seed_gives_same_weights_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build("vgg", input_shape=(1, 8, 8), n_classes=10, width=4, depth=3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build("vgg", input_shape=(1, 8, 8), n_classes=10, width=4, depth=3, seed=5)
    c = build("vgg", input_shape=(1, 8, 8), n_classes=10, width=4, depth=3, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    r = from_config(a.config)
    assert r.config == a.config and all(torch.equal(sa[k], v) for k, v in r.state_dict().items())


def test_he_initialisation_keeps_signal_through_depth():
    # He init (fan_in, ReLU) keeps E[h²] roughly constant through ReLU layers: the last hidden layer's
    # mean square stays within a factor 3 of the first's over 8 layers (PyTorch's default shrinks ~3×/layer)
    m = build("mlp", input_shape=(256,), n_classes=10, width=256, depth=8, seed=0)
    acts = []
    hooks = [m.hidden.get_submodule(f"relu{i}").register_forward_hook(lambda _m, _i, o: acts.append(o))
             for i in (1, 8)]
    with torch.no_grad():
        m(torch.randn(512, 256, generator=torch.Generator().manual_seed(0)))
    for h in hooks:
        h.remove()
    ratio = float(acts[1].pow(2).mean() / acts[0].pow(2).mean())
    assert 1 / 3 < ratio < 3


def test_bad_input_errors():
    with pytest.raises(UnknownNameError, match="unknown model family 'transformer'; known: alexnet, mlp, resnet, vgg"):
        build("transformer", input_shape=(1, 40), n_classes=10)
    with pytest.raises(InputError, match=r"\(C, L\).*use \(1, 40\)"):
        build("vgg", input_shape=(40,), n_classes=10)
    with pytest.raises(InputError, match="spatial side >= 2"):
        build("vgg", input_shape=(3, 1), n_classes=10)
    with pytest.raises(InputError, match="positive ints"):
        build("mlp", input_shape=(1, 0), n_classes=10)
    with pytest.raises(InputError, match="width"):
        build("mlp", input_shape=(1, 40), n_classes=10, width=0)
    with pytest.raises(InputError, match="depth"):
        build("resnet", input_shape=(1, 40), n_classes=10, depth=-1)
    with pytest.raises(InputError, match="n_classes"):
        build("mlp", input_shape=(1, 40), n_classes=0)
    with pytest.raises(InputError, match=r"unknown option\(s\) \['batchnorm'\].*batch_norm"):
        build("vgg", input_shape=(1, 40), n_classes=10, batchnorm=True)
    with pytest.raises(InputError, match="batch_norm.*true or false"):
        build("resnet", input_shape=(1, 40), n_classes=10, batch_norm="yes")
    with pytest.raises(InputError, match="dropout"):
        build("alexnet", input_shape=(1, 40), n_classes=10, dropout=1.5)
    with pytest.raises(InputError, match="final_pool"):
        build("vgg", input_shape=(1, 40), n_classes=10, final_pool=0)
    with pytest.raises(InputError, match="not a deepgeom model config"):
        from_config({"width": 3})
    assert issubclass(InputError, ValueError)
