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
from ._common import load_npy


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
    p.add_argument("--weights", metavar="W.npy", help="(C, D) classifier weights, as nn.Linear.weight (.npy)")
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
    p.set_defaults(func=_run)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
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
    if args.run is None and args.features is not None and Path(args.features).is_dir():
        args.run, args.features = args.features, None  # a run directory given as the positional
    if (args.run is None) == (args.features is None):
        raise InputError("give either FEATURES.npy (with --labels) or --run RUN_DIR, not both or neither")
    if args.run is not None:
        return _run_dir(args)
    return _run_arrays(args)


def _run_arrays(args: argparse.Namespace) -> int:
    import numpy as np

    from ..analysis.kernel_dynamics import feature_report

    if args.labels is None:
        raise InputError("--labels LABELS.npy is required with FEATURES.npy")
    if args.bias is not None and args.weights is None:
        raise InputError("--bias needs --weights")
    X = load_npy(args.features, "features")
    y = np.asarray(load_npy(args.labels, "labels"))
    W = None if args.weights is None else np.asarray(load_npy(args.weights, "weights"))
    b = None if args.bias is None else np.asarray(load_npy(args.bias, "bias"))
    out = None if args.outputs is None else np.asarray(load_npy(args.outputs, "outputs"))
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


def _run_dir(args: argparse.Namespace) -> int:
    from ..analysis.kernel_dynamics import spectra_through_training

    res = spectra_through_training(args.run, center=args.center, max_points=args.max_points)
    out = Path(args.out) if args.out else Path(args.run) / "spectrum"
    files = [str(p) for p in res.save(out, fmt=args.format)]
    if not args.no_figures:
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
