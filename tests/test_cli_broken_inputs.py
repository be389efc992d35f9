"""Every CLI subcommand against a table of broken files (issue 15, point 5).

Each case must end with exit status 2 and exactly one line on stderr that names the file, never a
traceback — whatever is wrong with the file: truncated, pickled, garbage, empty, wrong width or
number of rows, wrong dtype, 1-D, a directory, missing, or a capture manifest with keys missing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepgeom.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

MODEL_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
'''


class _Marker:
    """A pickle that creates a file when it is loaded: what a hostile --module FILE.pt can do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    B = tmp_path_factory.mktemp("broken")
    rng = np.random.default_rng(0)
    good = rng.standard_normal((40, 5)).astype(np.float32)
    np.save(B / "good.npy", good)
    np.save(B / "labels.npy", np.arange(40) % 3)
    raw = (B / "good.npy").read_bytes()
    (B / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    np.save(B / "pickled.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (B / "garbage.npy").write_bytes(bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    (B / "empty.npy").write_bytes(b"")
    np.save(B / "strings.npy", np.array([["a", "b"]] * 40))
    np.save(B / "complex.npy", good + 1j)
    np.save(B / "vector.npy", good[:, 0])
    np.save(B / "wide.npy", rng.standard_normal((40, 9)).astype(np.float32))
    np.save(B / "short.npy", rng.standard_normal((7, 5)).astype(np.float32))
    np.save(B / "int64.npy", (good * 10).astype(np.int64))
    (B / "adir.npy").mkdir()
    # the safe model route: a class in a .py file plus its safetensors state dict
    (B / "net.py").write_text(MODEL_SOURCE)
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ns: dict = {}
    exec(MODEL_SOURCE, ns)  # noqa: S102 - our own test source, the same text as net.py
    net = ns["Net"]()
    save_file(net.state_dict(), str(B / "net.safetensors"))
    torch.save(nn.Sequential(nn.Linear(5, 3)), B / "pickled_model.pt")
    with open(B / "evil.pt", "wb") as fh:
        pickle.dump(_Marker(str(B / "evil_ran")), fh)
    src = ["--module", f"{B / 'net.py'}:Net", "--weights", str(B / "net.safetensors")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["capture", *src, "--input", str(B / "good.npy"), "--out", str(B / "cap"), "--no-progress"]) == 0
    man = json.loads((B / "cap" / "manifest.json").read_text())
    layer_file = man["layers"][1]["file"]

    def variant(name, change):
        d = B / name
        shutil.copytree(B / "cap", d)
        change(d)

    def edit_manifest(fn):
        def change(d):
            m = json.loads((d / "manifest.json").read_text())
            fn(m)
            (d / "manifest.json").write_text(json.dumps(m))
        return change

    variant("cap_no_file_key", edit_manifest(lambda m: m["layers"][1].pop("file")))
    variant("cap_no_layers_key", edit_manifest(lambda m: m.pop("layers")))
    variant("cap_no_shape_key", edit_manifest(lambda m: m["layers"][0].pop("shape")))
    variant("cap_garbage_manifest", lambda d: (d / "manifest.json").write_text("{not json"))
    variant("cap_no_manifest", lambda d: (d / "manifest.json").unlink())
    variant("cap_truncated_layer",
            lambda d: (d / layer_file).write_bytes((d / layer_file).read_bytes()[:100]))
    variant("cap_pickled_layer",
            lambda d: np.save(d / layer_file, np.array([None] * 3, dtype=object), allow_pickle=True))
    variant("cap_nan_layer", lambda d: np.save(d / layer_file, np.full((40, 7), np.nan, np.float32)))
    (B / "run_garbage").mkdir()
    (B / "run_garbage" / "config.json").write_text("\x00\x01 not json")
    (B / "study_garbage").mkdir()
    (B / "study_garbage" / "study.json").write_text("[1, 2")
    (B / "study.yaml").write_text("name: [unclosed\n")
    return {p.name: p for p in B.iterdir()} | {"missing.npy": B / "missing.npy", "dir": B}


BROKEN_NPY = ["truncated.npy", "pickled.npy", "garbage.npy", "empty.npy", "strings.npy", "complex.npy",
              "vector.npy", "adir.npy", "missing.npy"]
BROKEN_CAPTURES = ["cap_no_file_key", "cap_no_layers_key", "cap_no_shape_key", "cap_garbage_manifest",
                   "cap_no_manifest", "cap_truncated_layer", "cap_pickled_layer", "cap_nan_layer", "adir.npy",
                   "missing.npy"]


def _cases() -> list[tuple[str, list[str], str]]:
    """(id, argv template with {F} for the broken path and {D} for the directory, broken name)."""
    cases = []
    for bad in BROKEN_NPY:
        for cid, argv in [
            ("id-estimate", ["id", "estimate", "{F}"]),
            ("id-estimate-pca", ["id", "estimate", "{F}", "--method", "pca"]),
            ("cka-A", ["cka", "{F}", "{D}/good.npy"]),
            ("cka-B", ["cka", "{D}/good.npy", "{F}", "--kernel", "rbf"]),
            ("spectrum-features", ["spectrum", "{F}", "--labels", "{D}/labels.npy"]),
            ("spectrum-labels", ["spectrum", "{D}/good.npy", "--labels", "{F}"]),
            ("spectrum-weights", ["spectrum", "{D}/good.npy", "--labels", "{D}/labels.npy", "--weights", "{F}"]),
            ("capture-input", ["capture", "--module", "{D}/net.py:Net", "--input", "{F}", "--out", "{D}/o",
                               "--no-progress"]),
            ("data-info", ["data", "info", "{F}"]),
            ("train-data", ["train", "--data", "{F}", "--epochs", "1", "--no-progress"]),
            ("layers-module", ["layers", "--module", "{F}", "--trust-pickle"]),
            ("layers-torchscript", ["layers", "--torchscript", "{F}"]),
            ("layers-weights", ["layers", "--module", "{D}/net.py:Net", "--weights", "{F}"]),
            ("study-config", ["study", "{F}", "--out", "{D}/st"]),
            ("report-dir", ["report", "{F}"]),
        ]:
            cases.append((f"{cid}[{bad}]", argv, bad))
    for bad in BROKEN_CAPTURES:
        cases.append((f"id-profile[{bad}]", ["id", "profile", "--capture", "{F}", "--out", "{D}/p"], bad))
        cases.append((f"cka-heatmap[{bad}]", ["cka", "heatmap", "--capture-a", "{F}", "--out", "{D}/h"], bad))
        cases.append((f"cka-heatmap-full[{bad}]", ["cka", "heatmap", "--capture-a", "{D}/cap", "--capture-b", "{F}",
                                                   "--full", "--out", "{D}/h"], bad))
    for bad in ["run_garbage", "adir.npy", "good.npy", "missing.npy"]:
        cases.append((f"layers-run[{bad}]", ["layers", "--run", "{F}"], bad))
        cases.append((f"spectrum-run[{bad}]", ["spectrum", "--run", "{F}", "--no-figures"], bad))
        cases.append((f"cka-heatmap-run[{bad}]", ["cka", "heatmap", "--run-a", "{F}", "--out", "{D}/h"], bad))
        cases.append((f"id-profile-run[{bad}]", ["id", "profile", "--run", "{F}", "--out", "{D}/p"], bad))
    for bad in ["study_garbage", "good.npy", "missing.npy"]:
        cases.append((f"report[{bad}]", ["report", "{F}"], bad))
    cases.append(("study-yaml[study.yaml]", ["study", "{F}", "--out", "{D}/st"], "study.yaml"))
    # wrong width / rows / dtype that the loaders accept but the command cannot use
    for cid, argv, bad in [
        ("capture-input-wide", ["capture", "--module", "{D}/net.py:Net", "--input", "{F}", "--out", "{D}/o",
                                "--no-progress"], "wide.npy"),
        ("cka-rows", ["cka", "{D}/good.npy", "{F}"], "short.npy"),
        ("spectrum-labels-rows", ["spectrum", "{D}/good.npy", "--labels", "{F}"], "short.npy"),
        ("spectrum-weights-width", ["spectrum", "{D}/good.npy", "--labels", "{D}/labels.npy", "--weights", "{F}"],
         "wide.npy"),
        ("layers-pickle-untrusted", ["layers", "--module", "{F}"], "pickled_model.pt"),
        ("layers-weights-wrong", ["layers", "--module", "{D}/net.py:Net", "--weights", "{F}"], "good.npy"),
        ("layers-class-missing", ["layers", "--module", "{F}:Nope"], "net.py"),
    ]:
        cases.append((f"{cid}[{bad}]", argv, bad))
    return cases


CASES = _cases()


@pytest.mark.parametrize("argv,bad", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_every_subcommand_turns_a_broken_file_into_status_2_and_one_line(files, argv, bad):
    D = files["dir"]
    path = files.get(bad, D / bad)
    args = [a.replace("{F}", str(path)).replace("{D}", str(D)) for a in argv]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(args)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert rc == 2, (rc, err.getvalue()[-500:])
    assert len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    assert lines[0].startswith(f"deepgeom {args[0]}: error: ")
    # the message says which file, layer or argument is at fault
    named = (path.name, "layer", "labels", "weights", "the inputs", "the two files")
    assert any(w in lines[0] for w in named), lines[0]


def test_a_pickled_module_is_not_loaded_without_trust_pickle(files, capsys):
    D = files["dir"]
    assert main(["layers", "--module", str(D / "evil.pt")]) == 2
    err = capsys.readouterr().err
    assert "--trust-pickle" in err and "runs any code" in err and "safetensors" in err
    assert not (D / "evil_ran").exists()  # nothing in the file ran
    # with the flag the user vouches for the file — and its code does run (why the flag exists)
    assert main(["layers", "--module", str(D / "evil.pt"), "--trust-pickle"]) == 2  # not an nn.Module
    assert (D / "evil_ran").exists()
    os.remove(D / "evil_ran")


def test_the_safe_route_captures_the_same_activations(files, capsys):
    """--module net.py:Net --weights net.safetensors rebuilds the very model whose weights were saved."""
    D = files["dir"]
    from safetensors.torch import load_file

    ns: dict = {}
    exec(MODEL_SOURCE, ns)  # noqa: S102 - our own test source
    net = ns["Net"]()
    net.load_state_dict(load_file(str(D / "net.safetensors")))
    x = torch.from_numpy(np.load(D / "good.npy"))
    with torch.no_grad():
        np.testing.assert_array_equal(np.load(D / "cap" / "output.npy"), net(x).numpy())
        np.testing.assert_array_equal(np.load(D / "cap" / "act.npy"), net.act(net.fc1(x)).numpy())
    assert main(["layers", "--module", f"{D / 'net.py'}:Net", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["input", "fc1", "act", "fc2", "output"]


def test_integer_inputs_are_read_as_float32(files, capsys):
    """An int64 --input is user data like an integer .csv column (deepgeom.data.load_file): read as
    float32, never a traceback; the capture equals the one of the same values saved as float32."""
    D = files["dir"]
    src = ["--module", f"{D / 'net.py'}:Net", "--weights", str(D / "net.safetensors")]
    np.save(D / "int64_as_f32.npy", np.load(D / "int64.npy").astype(np.float32))
    for name in ("int64", "int64_as_f32"):
        assert main(["capture", *src, "--input", str(D / f"{name}.npy"), "--out", str(D / f"cap_{name}"),
                     "--no-progress"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(np.load(D / "cap_int64" / "output.npy"), np.load(D / "cap_int64_as_f32" / "output.npy"))
