"""The public surface is a promise to users' scripts: pin it, and check every public callable is documented."""

import importlib
import inspect
import subprocess
import sys

import pytest

import deepgeom
from deepgeom.cli import build_parser

PUBLIC = {
    "DeepgeomError", "InputError", "MissingDependencyError", "UnknownNameError",
    "data", "models", "capture", "functional", "analysis",
    "build_model", "TrainConfig", "train", "load_run", "load_model",
    "Capture", "list_layers", "resolve_layers", "stream", "load_capture",
    "knn", "twonn", "twonn_scale", "twonn_bootstrap", "pca_id", "gride", "gride_multiscale",
    "levina_bickel", "id_profile",
    "cka", "linear_cka", "rbf_cka", "unbiased_hsic", "MinibatchCKA", "cka_matrix",
    "cka_matrix_from_captures", "find_blocks", "pc1_fraction", "best_match", "compare_predictions",
    "feature_spectrum", "dominant_count", "regime", "spectra_through_training", "neural_collapse",
    "effective_rank", "participation_ratio", "power_law_alpha", "richness",
    "__version__",
}

MODULES = [
    "deepgeom.data", "deepgeom.models", "deepgeom.train", "deepgeom.capture",
    "deepgeom.functional.matrix", "deepgeom.functional.neighbors", "deepgeom.functional.intrinsic_dim",
    "deepgeom.functional.cka", "deepgeom.functional.spectrum", "deepgeom.functional.collapse",
    "deepgeom.analysis.id_profile", "deepgeom.analysis.similarity", "deepgeom.analysis.predictions",
    "deepgeom.analysis.kernel_dynamics", "deepgeom.viz.id", "deepgeom.viz.similarity",
    "deepgeom.viz.spectrum", "deepgeom.studies", "deepgeom.studies.executors", "deepgeom.studies.store",
    "deepgeom.studies.resources", "deepgeom.report",
]

SUBCOMMANDS = {"data", "layers", "train", "capture", "id", "cka", "spectrum", "study", "report", "demo"}


def test_top_level_surface_is_pinned():
    assert set(deepgeom.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(deepgeom, name), name


def test_capture_is_both_the_package_and_the_function():
    import deepgeom.capture as dc

    assert callable(deepgeom.capture) and dc is deepgeom.capture
    assert deepgeom.capture.stream is deepgeom.stream


@pytest.mark.parametrize("modname", MODULES)
def test_every_public_callable_has_a_docstring(modname):
    mod = importlib.import_module(modname)
    assert mod.__doc__, f"{modname} has no module docstring"
    names = getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")])
    undocumented = [
        n for n in names
        if (inspect.isfunction(getattr(mod, n)) or inspect.isclass(getattr(mod, n)))
        and not (getattr(mod, n).__doc__ or "").strip()
    ]
    assert not undocumented, f"{modname}: no docstring on {undocumented}"


def test_cli_has_every_subcommand_with_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert SUBCOMMANDS <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.format_help().strip(), name


def test_cli_help_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "deepgeom", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout
