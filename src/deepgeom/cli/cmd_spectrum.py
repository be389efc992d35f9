"""``deepgeom spectrum``: feature-kernel spectrum, MF/EF regime and neural collapse (Nam et al. 2024).

Two forms:

* ``deepgeom spectrum FEATURES.npy --labels LABELS.npy [--weights W.npy] [--bias b.npy] [--json]`` —
  one feature matrix (e.g. penultimate activations from ``deepgeom capture``);
* ``deepgeom spectrum --run RUN_DIR [--out DIR]`` — every checkpoint of a ``deepgeom train`` run:
  writes ``spectrum_{summary,eigenvalues,alignment}.csv`` (or Parquet) and the figures.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._common import add_user_model_flags, load_npy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "spectrum",
        help="feature-kernel spectrum, dominant eigenfunctions, MF/EF regime and neural collapse",
        description="Eigen-decompose the feature kernel of penultimate features (Nam et al. 2024): the number "
        "of dominant eigenfunctions and its rule's numbers, the MF/EF call against the class count, Π of the "
        "targets and outputs, NC1-NC4 (Papyan et al. 2020), RankMe, power-law alpha, richness. Give a "
        "FEATURES.npy with --labels, or --run RUN_DIR for every checkpoint of a training run.",
    )
    p.add_argument("features", nargs="?", default=None, metavar="FEATURES.npy",
                   help="(N, D) feature matrix (.npy), e.g. a layer captured by `deepgeom capture` "
                   "(a directory here is read as --run)")
    p.add_argument("--labels", metavar="LABELS.npy", help="(N,) integer class labels (.npy)")
    p.add_argument("--weights", metavar="W.npy", help="(C, D) classifier weights, as nn.Linear.weight (.npy); "
                   "with --model: the model's weights file (.safetensors or a state_dict .pt)")
    p.add_argument("--bias", metavar="b.npy", help="(C,) classifier bias (.npy)")
    p.add_argument("--outputs", metavar="OUT.npy", help="(N, C) network outputs (default: features·Wᵀ + b)")
    p.add_argument("--run", metavar="RUN_DIR", help="a `deepgeom train --out` run directory: analyse every checkpoint")
    p.add_argument("--out", metavar="DIR", help="with --run: where tables and figures go (default RUN_DIR/spectrum)")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="table format with --run (default csv)")
    p.add_argument("--max-points", type=int, default=None,
                   help="with --run: analyse a seeded random subset of this many training points")
    p.add_argument("--no-figures", action="store_true", help="with --run: write the tables only")
    p.add_argument("--center", action="store_true",
                   help="centre the features (default: uncentred kernel, the constant mode counts like a bias)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    m = p.add_argument_group("a model on labelled data (instead of FEATURES.npy or --run)")
    add_user_model_flags(m, weights=False)  # features: the penultimate layer (input of the last Linear) unless --layer
    m.add_argument("--data", help="labelled data: a dataset name or file (.npy/.npz/.csv/.parquet; labels "
                   "from the file, --labels FILE or --label-column NAME)")
    m.add_argument("--label-column", metavar="NAME", help="the labels column of a .csv/.parquet --data file")
    m.add_argument("--layer", help="the feature layer (default: the model's penultimate)")
    m.add_argument("--split", choices=("train", "test"), default=None,
                   help="dataset split (default test; all examples for a data file without a test split)")
    m.add_argument("--n", type=int, help="use the first N examples (default all)")
    p.set_defaults(func=_run)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    import numpy as np

    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def _run(args: argparse.Namespace) -> int:
    if args.model is not None or args.module is not None:
        if args.run is not None or args.features is not None:
            raise InputError("give FEATURES.npy, --run RUN_DIR or --model/--module with --data, one of them")
        return _run_model(args)
    if args.run is None and args.features is not None and Path(args.features).is_dir():
        args.run, args.features = args.features, None  # a run directory given as the positional
    if (args.run is None) == (args.features is None):
        raise InputError("give either FEATURES.npy (with --labels) or --run RUN_DIR, not both or neither")
    if args.run is not None:
        return _run_dir(args)
    return _run_arrays(args)


def _run_arrays(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    import numpy as np

    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..analysis.kernel_dynamics import feature_report

    if args.labels is None:
        raise InputError("--labels LABELS.npy is required with FEATURES.npy")
    if args.bias is not None and args.weights is None:
        raise InputError("--bias needs --weights")
    X = load_npy(args.features, "features", ndim=2)
    y = np.asarray(load_npy(args.labels, "labels", ndim=1))
    W = None if args.weights is None else np.asarray(load_npy(args.weights, "weights", ndim=2))
    b = None if args.bias is None else np.asarray(load_npy(args.bias, "bias", ndim=1))
    out = None if args.outputs is None else np.asarray(load_npy(args.outputs, "outputs", ndim=2))
    row = _plain(feature_report(X, y, weights=W, bias=b, outputs=out, center=args.center))
    row["features"] = str(args.features)
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{args.features}: N={row['n_samples']} D={row['n_features']} rank={row['rank']} "
              f"({'centred' if args.center else 'uncentred'} kernel)")
        print(f"dominant eigenfunctions: {row['dominant']} (rule {row['rule']}: largest gap at k={row['gap_k']}, "
              f"{row['gap_decades']:.3g} decades; effective dim {row['effective_dim']:.3g})")
        print(f"classes: {row['n_classes']} -> regime {row['regime']}")
        for key in ("nc1", "nc2", "nc3", "nc4", "effective_rank", "participation_ratio", "alpha", "richness",
                    "k90_targets", "k99_targets"):
            if row.get(key) is not None:
                print(f"  {key}: {row[key]:.6g}" if isinstance(row[key], float) else f"  {key}: {row[key]}")
    return 0


def _run_model(args: argparse.Namespace) -> int:
    """Features of a model's penultimate (or --layer) on labelled data, then the same report as a file."""
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..analysis.kernel_dynamics import feature_report
    from ..capture import capture, load_model_source, select_inputs

    if args.data is None:
        raise InputError("--model/--module need --data (labelled examples)")
    opts = {k: v for k, v in (("labels", args.labels), ("label_column", args.label_column)) if v is not None}
    src = load_model_source(data=args.data, model=args.model, model_kwargs=args.model_kwargs,
                            weights=args.weights, module=args.module, data_options=opts,
                            trust_pickle=args.trust_pickle)
    x, y = select_inputs(src, split=args.split, n=args.n)
    if y is None:
        raise InputError(f"{args.data} has no labels: give --labels FILE or --label-column NAME")
    layer = args.layer or getattr(src.model, "penultimate", None)
    if not layer:
        raise InputError("the model has no penultimate layer deepgeom can find (no final nn.Linear after a "
                         "leaf module): name the feature layer with --layer")
    cap = capture(src.model, x, [layer], progress=False)
    head = getattr(src.model, "head", None) if args.layer is None else None
    W = None if head is None else head.weight.detach().cpu().numpy()
    b = None if head is None or head.bias is None else head.bias.detach().cpu().numpy()
    row = _plain(feature_report(cap[layer], y.numpy(), weights=W, bias=b, center=args.center))
    row.update(features=f"{args.model or args.module}:{layer}")
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{row['features']}: N={row['n_samples']} D={row['n_features']} rank={row['rank']}; dominant "
              f"eigenfunctions {row['dominant']} (rule {row['rule']}), {row['n_classes']} classes -> regime "
              f"{row['regime']}; NC1 {row.get('nc1')}")
    return 0


def _run_dir(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..analysis.kernel_dynamics import spectra_through_training

    res = spectra_through_training(args.run, center=args.center, max_points=args.max_points)
    out = Path(args.out) if args.out else Path(args.run) / "spectrum"
    files = [str(p) for p in res.save(out, fmt=args.format)]
    if not args.no_figures:
        # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
        from ..viz.spectrum import save_spectrum_figures

        files += [str(p) for p in save_spectrum_figures(res, out)]
    rows = [_plain(r) for r in res.summary.to_dict(orient="records")]
    if args.json:
        print(json.dumps({"run": str(args.run), "task": res.task, "n_classes": res.n_classes,
                          "centered": res.centered, "epochs": rows, "files": files}))
    else:
        cols = ["epoch", "dominant", "rule", "regime", "accuracy", "test_acc", "nc1", "basis_overlap"]
        show = res.summary[[c for c in cols if c in res.summary.columns]]
        print(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"wrote {len(files)} files to {out}")
    return 0
