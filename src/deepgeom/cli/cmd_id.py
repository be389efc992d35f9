"""``deepgeom id``: intrinsic dimension of one array (``estimate``) or of every layer (``profile``)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..errors import InputError
from ._common import load_npy
from .cmd_layers import add_source_arguments, add_text_arguments, load_source, model_inputs

#: One name per estimator, the same in the API (``id_profile(estimators=...)``), the CLI, the tables'
#: column prefixes (``twonn_mle_id``, ...) and the docs.
METHODS = ("twonn", "twonn_mle", "levina_bickel", "gride", "pca")
#: Old spellings that keep working, with a deprecation message: ``mle`` always meant TwoNN's
#: maximum-likelihood form, never Levina–Bickel.
DEPRECATED_METHODS = {"mle": "twonn_mle"}


def _method(name: str) -> str:
    """argparse ``type=``: map a deprecated estimator name to its current one (with a message)."""
    new = DEPRECATED_METHODS.get(name)
    if new is None:
        return name
    print(f"deepgeom id: warning: --method {name} is deprecated, use --method {new} (TwoNN maximum "
          f"likelihood, Facco et al. 2017; Levina-Bickel is --method levina_bickel)", file=sys.stderr)
    return new


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "id",
        help="intrinsic dimension (TwoNN, TwoNN-MLE, Levina-Bickel, GRIDE, PC-ID) of an array or of each layer",
        description="Intrinsic-dimension estimates (Facco et al. 2017; Ansuini et al. 2019). 'estimate' reads "
        "one (N, D) .npy file; 'profile' estimates every layer of a capture or a model and writes a table "
        "and a figure.",
    )
    sub = p.add_subparsers(dest="id_command", metavar="ACTION", required=True)

    e = sub.add_parser("estimate", help="ID of the rows of one (N, D) .npy file",
                       description="Estimate the intrinsic dimension of the rows of FILE.npy. Methods: twonn "
                       "(least-squares TwoNN of the papers), twonn_mle (TwoNN maximum likelihood, (N-1)/sum log mu; "
                       "the old name 'mle' still works), "
                       "gride (Denti et al. 2022, --n1/--n2), levina_bickel (k range --k1..--k2), pca (PC-ID: "
                       "components for --threshold of the variance). Exact duplicate rows are dropped with a "
                       "count, or refused with --duplicates error.")
    e.add_argument("file", metavar="FILE.npy", help="(N, D) array, one point per row (memory-mapped)")
    e.add_argument("--method", type=_method, choices=METHODS, default="twonn", help="estimator (default twonn)")
    e.add_argument("--fraction", type=float, default=0.9, help="TwoNN: share of smallest mu fitted (default 0.9)")
    e.add_argument("--threshold", type=float, default=0.9, help="pca: explained-variance share (default 0.9)")
    e.add_argument("--standardize", action="store_true", help="pca: scale features to unit variance first")
    e.add_argument("--n1", type=int, default=1, help="gride: first neighbour rank (default 1)")
    e.add_argument("--n2", type=int, default=2, help="gride: second neighbour rank (default 2)")
    e.add_argument("--k1", type=int, default=10, help="levina_bickel: smallest k (default 10)")
    e.add_argument("--k2", type=int, default=20, help="levina_bickel: largest k (default 20)")
    e.add_argument("--duplicates", choices=("drop", "error"), default="drop",
                   help="exact duplicate rows: drop all but one copy (default) or fail")
    e.add_argument("--device", default=None, help="cpu, cuda or auto (default cpu)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_estimate)

    pr = sub.add_parser("profile", help="ID of every layer against relative depth: table + figure",
                        description="ID profile (Ansuini et al. 2019): TwoNN and PC-ID of each layer. Source: "
                        "--capture DIR (written by deepgeom capture), or a model (--family/--run/--model/--module) run "
                        "on the first --n examples of its dataset split. Writes OUT/profile.csv, "
                        "OUT/profile.parquet and OUT/id_profile.png/.svg.")
    pr.add_argument("--capture", metavar="DIR", help="capture directory (deepgeom capture --out)")
    add_source_arguments(pr)
    add_text_arguments(pr)
    pr.add_argument("--reduce", choices=("mean", "tokens", "cls", "flatten"), default=None,
                    help="how a layer output with a token axis becomes rows (see deepgeom capture --help)")
    pr.add_argument("--layers", help="comma-separated layers (default: the model's analysis layers / all captured)")
    pr.add_argument("--input", metavar="FILE", help="examples to run instead of a dataset split: a data file "
                    "(.npy, .npz, .csv, .parquet, ...), every row in order")
    pr.add_argument("--split", choices=("train", "test"), default=None,
                    help="dataset split (default test; all examples for a data file without a test split)")
    pr.add_argument("--n", type=int, help="use the first N examples (default: the first 2000, or all if fewer)")
    pr.add_argument("--estimators", default="twonn,pca",
                    help="comma-separated, any of " + ", ".join(METHODS) + " (default twonn,pca)")
    pr.add_argument("--fraction", type=float, default=0.9, help="TwoNN fit fraction (default 0.9)")
    pr.add_argument("--threshold", type=float, default=0.9, help="PC-ID variance share (default 0.9)")
    pr.add_argument("--batch-size", type=int, default=256, help="examples per forward pass (default 256)")
    pr.add_argument("--out", required=True, metavar="DIR", help="output directory")
    pr.add_argument("--json", action="store_true", help="print the table as JSON records")
    pr.set_defaults(func=_profile)


def _estimate(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..functional import intrinsic_dim as idm

    X = load_npy(args.file, "data", ndim=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.method in ("twonn", "twonn_mle"):
            r = idm.twonn(X, fraction=args.fraction, method="lsq" if args.method == "twonn" else "mle",
                          duplicates=args.duplicates, device=args.device)
            out = dict(id=r.id, method=args.method, n=r.n, error=r.error, n_points=r.n_points,
                       n_duplicates=r.n_duplicates, n_discarded=r.n_discarded, discard_reason=r.discard_reason,
                       fraction=r.fraction, scale=r.scale, likely_underestimate=r.likely_underestimate)
        elif args.method == "gride":
            r = idm.gride(X, n1=args.n1, n2=args.n2, duplicates=args.duplicates, device=args.device)
            out = dict(id=r.id, method="gride", n=r.n, error=r.error, n_points=r.n_points,
                       n_duplicates=r.n_duplicates, n_discarded=r.n_points - r.n, n1=r.n1, n2=r.n2,
                       scale=r.scale, likely_underestimate=r.likely_underestimate)
        elif args.method == "levina_bickel":
            r = idm.levina_bickel(X, k1=args.k1, k2=args.k2, duplicates=args.duplicates, device=args.device)
            out = dict(id=r.id, method="levina_bickel", n=r.n, error=r.error, n_points=r.n_points,
                       n_duplicates=r.n_duplicates, n_discarded=r.n_points - r.n, k1=r.k1, k2=r.k2,
                       likely_underestimate=r.likely_underestimate)
        else:
            r = idm.pca_id(X, threshold=args.threshold, standardize=args.standardize, device=args.device)
            out = dict(id=r.id, method="pca", n=r.n, error=None, n_points=r.n, n_discarded=0, d=r.d,
                       threshold=r.threshold, standardize=r.standardize,
                       participation_ratio=r.participation_ratio, ansuini_index=r.ansuini_index)
    out["file"] = str(args.file)
    out["warnings"] = [str(w.message) for w in caught]
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from .._results import to_jsonable

    if args.json:
        print(json.dumps(to_jsonable(out)))
    else:
        err = f" ± {out['error']:.3g}" if out.get("error") is not None else ""
        print(f"{args.method} ID = {out['id']:.4g}{err}  (n = {out['n']} of {out['n_points']} rows)")
        for w in out["warnings"]:
            print(f"warning: {w}")
    return 0


def _profile(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..analysis.id_profile import id_profile, save_table
    from ..capture import parse_layer_list
    from ..viz.id import plot_id_profile

    estimators = [_method(s.strip()) for s in args.estimators.split(",") if s.strip()]
    layers = parse_layer_list(args.layers)
    model_given = any(getattr(args, k) is not None
                      for k in ("family", "run", "module", "torchscript", "model", "text_model"))
    if args.capture is not None:
        if model_given:
            raise InputError("give either --capture DIR or a model source (--family/--run/--module), not both")
        df = id_profile(args.capture, layers=layers, estimators=estimators, fraction=args.fraction,
                        threshold=args.threshold)
        title = f"ID profile: {args.capture}"
    else:
        src = load_source(args)
        x, _ = model_inputs(args, src)
        if args.n is None and not isinstance(x, dict):
            x = x[:2000]  # the ID papers' sample size; TwoNN needs no more
        df = id_profile(src.model, x, layers=layers, estimators=estimators, fraction=args.fraction,
                        threshold=args.threshold, batch_size=args.batch_size, reduce=args.reduce)
        title = "ID profile: " + ", ".join(f"{k}={v}" for k, v in src.info.items()
                                           if k in ("family", "run", "epoch", "model", "text_model", "data", "file") and v is not None)
    out = Path(args.out)
    csv = save_table(df, out / "profile.csv")
    pq = save_table(df, out / "profile.parquet")
    plot_id_profile(df, path=out / "id_profile.png", title=title)
    if args.json:
        print(df.to_json(orient="records"))
    else:
        cols = [c for c in ("layer", "relative_depth", "D", "n_duplicates", "twonn_id", "twonn_err", "pca_id")
                if c in df]
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(f"wrote {csv}, {pq}, {out / 'id_profile.png'} (+ .svg)")
    return 0
