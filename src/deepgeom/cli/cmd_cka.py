"""``deepgeom cka``: CKA between two activation files, or the layer × layer heatmap of models/captures.

Two subcommands::

    deepgeom cka pair A.npy B.npy [--kernel {linear,rbf}] [--sigma S] [--debiased] [--batch-size B] [--json]
    deepgeom cka heatmap (--run-a DIR | --capture-a DIR | --family F | --model FILE.py:NAME |
                          --module FILE.pt --trust-pickle)
                         [... -b for model B] [--data D] --out DIR [...]

``deepgeom cka A.npy B.npy`` (no ``pair``) is the same as the first.

The command only parses arguments and calls :mod:`deepgeom.functional.cka` /
:mod:`deepgeom.analysis.similarity`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_text
from ..errors import InputError
from ._common import add_user_model_flags, load_npy
from .cmd_layers import data_options

HELP = "CKA similarity: 'pair' (two .npy files → one number) or 'heatmap' (all layer pairs of models/captures)"

DESCRIPTION = """\
deepgeom cka pair A.npy B.npy CKA between two (N, D) activation files with the same N rows (higher
                              dimensional arrays are flattened to (N, -1)). Linear CKA by default;
                              --debiased for the unbiased-HSIC form; --batch-size B for minibatch CKA.
                              'pair' may be left out: deepgeom cka A.npy B.npy is the same.
deepgeom cka heatmap ...      the layer × layer CKA matrix of one model (within) or two models (cross),
                              in one pass over the data (minibatch CKA, Nguyen et al. 2021), from
                              trained runs (--run-a/--run-b), model families (--family/--family-b with
                              --data), pickled modules (--module/--module-b, with --trust-pickle),
                              your own model classes (--model/--model-b) or capture directories
                              (--capture-a/--capture-b).
                              Writes OUT/cka_matrix.csv, OUT/cka_heatmap.png/.svg, OUT/result.json and
                              OUT/blocks.json (within) or OUT/best_match.csv (cross).
Run deepgeom cka pair --help or deepgeom cka heatmap --help for each form's flags.
"""

ACTIONS = ("pair", "heatmap")


def normalize_argv(rest: list[str]) -> list[str]:
    """``cka A.npy B.npy ...`` means ``cka pair A.npy B.npy ...``; the old mixed form with ``heatmap``
    after some flags (``cka --run-a R heatmap --out O``) still works, with a deprecation message."""
    if not rest or rest[0] in ("-h", "--help") or rest[0] in ACTIONS:
        return rest
    if "heatmap" in rest:
        print("deepgeom cka: warning: 'heatmap' after other flags is deprecated; write "
              "deepgeom cka heatmap [flags]", file=sys.stderr)
        i = rest.index("heatmap")
        return ["heatmap", *rest[:i], *rest[i + 1:]]
    return ["pair", *rest]


def _cka_flags(g: argparse._ArgumentGroup, *, heatmap: bool) -> None:
    g.add_argument("--kernel", choices=("linear", "rbf"), default="linear", help="kernel (default linear)")
    g.add_argument("--sigma", type=float, default=0.8,
                   help="RBF bandwidth as a fraction of the median distance (default 0.8)")
    g.add_argument("--debiased", action="store_true", help="unbiased HSIC (Song et al. 2012); needs N >= 4")
    g.add_argument("--batch-size", type=int, default=256 if heatmap else None,
                   help="minibatch CKA over batches of B rows (default 256)" if heatmap else
                   "minibatch CKA over batches of B rows (default: off, full data)")
    g.add_argument("--json", action="store_true", help="print the result as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cka", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cka_command", metavar="ACTION", required=True)
    pair = sub.add_parser("pair", help="CKA between two (N, D) .npy activation files",
                          description="CKA between two (N, D) activation files with the same N rows "
                          "(Kornblith et al. 2019). Also reachable as deepgeom cka A.npy B.npy.")
    pair.add_argument("inputs", nargs=2, metavar="X.npy", help="two .npy activation files, A then B")
    _cka_flags(pair.add_argument_group("CKA"), heatmap=False)
    pair.set_defaults(func=_run)

    h = sub.add_parser("heatmap", help="layer × layer CKA of one or two models (or captures), with blocks",
                       description=DESCRIPTION.split("\n", 4)[-1].split("Run deepgeom")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _cka_flags(h.add_argument_group("CKA"), heatmap=True)
    g = h.add_argument_group("model A (exactly one of --run-a, --capture-a, --family, --module, --model)")
    g.add_argument("--run-a", metavar="DIR", help="training run directory of model A (deepgeom train --out)")
    g.add_argument("--epoch", type=int, help="checkpoint epoch of --run-a (default latest)")
    g.add_argument("--capture-a", metavar="DIR", help="capture directory of model A (deepgeom capture --out)")
    g.add_argument("--family", help="model family for model A (untrained, deepgeom.models.build)")
    g.add_argument("--width", type=int, help="--family width")
    g.add_argument("--depth", type=int, help="--family depth")
    g.add_argument("--seed", type=int, default=0, help="seed of --family weights and the data split (default 0)")
    add_user_model_flags(g)
    b = h.add_argument_group("model B (optional; default: the within-model heatmap of A)")
    b.add_argument("--run-b", metavar="DIR", help="training run of model B")
    b.add_argument("--epoch-b", type=int, help="checkpoint epoch of --run-b (default latest)")
    b.add_argument("--capture-b", metavar="DIR", help="capture directory of model B (same examples, same order)")
    b.add_argument("--family-b", help="model family for model B")
    b.add_argument("--width-b", type=int, help="--family-b width")
    b.add_argument("--depth-b", type=int, help="--family-b depth")
    b.add_argument("--seed-b", type=int, default=1, help="seed of --family-b weights (default 1)")
    add_user_model_flags(b, "-b")
    d = h.add_argument_group("data and output")
    d.add_argument("--data", help="dataset name or file (.npy/.npz/.csv/.parquet; default: model A's run "
                   "dataset; needed with --family, --module, --model)")
    d.add_argument("--labels", metavar="FILE", help="labels for a --data file of features (.npy, .csv, .txt)")
    d.add_argument("--label-column", metavar="NAME", help="the labels column of a .csv/.parquet --data file")
    d.add_argument("--split", choices=("train", "test"), default=None,
                   help="dataset split (default test; all examples for a data file without a test split)")
    d.add_argument("--n", type=int, help="first N examples of the split (default all)")
    d.add_argument("--layers-a", help="comma-separated layers/globs of model A (default: analysis layers)")
    d.add_argument("--layers-b", help="comma-separated layers/globs of model B")
    d.add_argument("--full", action="store_true", help="full-data CKA from N×N Grams instead of minibatch")
    d.add_argument("--remove-pc1", action="store_true",
                   help="project each layer's first principal component out (also writes pc1_fraction.csv)")
    d.add_argument("--threshold", type=float, default=0.9,
                   help="minimum pairwise CKA inside a block (find_blocks; default 0.9)")
    d.add_argument("--pc1-threshold", type=float, default=0.5,
                   help="minimum first-PC variance fraction of every block layer, applied with --remove-pc1 "
                        "(which measures it; default 0.5)")
    d.add_argument("--out", required=True, metavar="DIR", help="output directory")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    h.set_defaults(func=_heatmap)


def _load_npy(path: str) -> Any:
    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise InputError(f"expected a .npy file of activations (N, D); got {p.name}")
    a = load_npy(p, "activations")
    if a.ndim == 1:
        raise InputError(f"{p.name} is 1-D (shape {a.shape}): activations must be (N, D), one row per example")
    return a.reshape(a.shape[0], -1) if a.ndim > 2 else a


def _run(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..analysis.streaming import MinibatchCKA
    from ..functional.cka import cka

    X, Y = _load_npy(args.inputs[0]), _load_npy(args.inputs[1])
    if X.shape[0] != Y.shape[0]:
        raise InputError(f"the two files must hold the same examples (rows); got {X.shape[0]} and {Y.shape[0]}")
    out: dict = {"kernel": args.kernel, "n": int(X.shape[0]), "d_a": int(X.shape[1]), "d_b": int(Y.shape[1])}
    if args.kernel == "rbf":
        out["sigma"] = args.sigma
    if args.batch_size is not None:
        if args.batch_size < 4:
            raise InputError(f"--batch-size must be >= 4 (unbiased HSIC); got {args.batch_size}")
        m = MinibatchCKA(kernel=args.kernel, sigma=args.sigma)
        n_used = X.shape[0] - (X.shape[0] % args.batch_size if X.shape[0] % args.batch_size < 4 else 0)
        for s in range(0, n_used, args.batch_size):
            m.update([X[s:s + args.batch_size]], [Y[s:s + args.batch_size]])
        value = float(m.compute()[0, 0])
        out.update({"debiased": True, "minibatch": True, "batch_size": args.batch_size, "n": int(m.n_examples)})
    else:
        value = cka(X, Y, kernel=args.kernel, sigma=args.sigma, debiased=args.debiased)
        out.update({"debiased": bool(args.debiased), "minibatch": False})
    out = {"cka": value, **out}
    if args.json:
        print(json.dumps(out))
    else:
        kind = ("minibatch " if out["minibatch"] else "") + ("debiased " if out["debiased"] else "") + args.kernel
        print(f"CKA ({kind}) = {value:.6f}   n = {out['n']}, D = {out['d_a']} vs {out['d_b']}")
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..analysis.similarity import best_match, cka_matrix, find_blocks
    from ..capture import load_model_source, parse_layer_list, select_inputs
    from ..viz import save_figure
    from ..viz.similarity import plot_cka_heatmap, plot_pc1_fraction

    sources = [s for s in (args.run_a, args.capture_a, args.family, args.module, args.model) if s]
    if len(sources) != 1:
        raise InputError("cka heatmap needs exactly one of --run-a DIR, --capture-a DIR, --family NAME, "
                         "--module FILE.pt or --model FILE.py:NAME")
    batch_size = args.batch_size
    common = dict(kernel=args.kernel, sigma=args.sigma, minibatch=not args.full, debiased=args.debiased,
                  remove_pc1=args.remove_pc1, batch_size=batch_size)
    la, lb = parse_layer_list(args.layers_a), parse_layer_list(args.layers_b)
    if args.capture_a:
        if args.run_b or args.family_b or args.module_b or args.model_b:
            raise InputError("--capture-a pairs with --capture-b (not a model)")
        result = cka_matrix(args.capture_a, args.capture_b, layers_a=la, layers_b=lb, **common)
    else:
        if args.capture_b:
            raise InputError("--capture-b pairs with --capture-a (not a model)")
        src_a = load_model_source(family=args.family, data=args.data, width=args.width, depth=args.depth,
                                  seed=args.seed, run=args.run_a, epoch=args.epoch, module=args.module,
                                  model=args.model, model_kwargs=args.model_kwargs, weights=args.weights,
                                  data_options=data_options(args), trust_pickle=args.trust_pickle)
        x, y = select_inputs(src_a, split=args.split, n=args.n)
        model_b = None
        if args.run_b or args.family_b or args.module_b or args.model_b:
            src_b = load_model_source(family=args.family_b, data=args.data or src_a.info.get("data"),
                                      width=args.width_b, depth=args.depth_b, seed=args.seed_b, run=args.run_b,
                                      epoch=args.epoch_b, module=args.module_b, model=args.model_b,
                                      model_kwargs=args.model_kwargs_b, weights=args.weights_b,
                                      need_data=False, trust_pickle=args.trust_pickle)
            model_b = src_b.model
        result = cka_matrix(src_a.model, model_b, x, layers_a=la, layers_b=lb, progress=not args.no_progress,
                            **common)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "cka_matrix.csv", result.matrix.to_csv)
    files = [str(p) for p in save_figure(plot_cka_heatmap(result, threshold=args.threshold), out / "cka_heatmap")]
    summary = result.to_dict()
    summary["files"] = files + [str(out / "cka_matrix.csv")]
    if result.within:
        pc1 = result.pc1_fraction_a or False  # measured only with --remove-pc1
        blocks = [b.to_dict() for b in find_blocks(result, threshold=args.threshold, pc1_fraction=pc1,
                                                   pc1_threshold=args.pc1_threshold)]
        atomic_write_text(out / "blocks.json", json.dumps({
            "threshold": args.threshold, "pc1_threshold": args.pc1_threshold if pc1 else None,
            "rule": "cka_and_pc1" if pc1 else "cka_only", "blocks": blocks}, indent=2))
        summary["blocks"] = blocks
        summary["files"].append(str(out / "blocks.json"))
    else:
        bm = best_match(result)
        atomic_write(out / "best_match.csv", lambda tmp: bm.to_csv(tmp, index=False))
        summary["files"].append(str(out / "best_match.csv"))
    if result.pc1_removed and result.pc1_fraction_a is not None:
        # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
        import pandas as pd

        pc1 = pd.DataFrame({"layer": result.layers_a, "relative_depth": result.depth_a,
                            "pc1_fraction": [result.pc1_fraction_a[n] for n in result.layers_a]})
        atomic_write(out / "pc1_fraction.csv", lambda tmp: pc1.to_csv(tmp, index=False))
        summary["files"] += [str(p) for p in save_figure(plot_pc1_fraction(result), out / "pc1_fraction")]
    atomic_write_text(out / "result.json", json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary))
    else:
        print(result.matrix.round(3).to_string())
        if result.within:
            spans = ", ".join(f"{b['layers'][0]}…{b['layers'][-1]} ({len(b['layers'])})" for b in summary["blocks"])
            rule = f"CKA ≥ {args.threshold}" + (f", PC1 ≥ {args.pc1_threshold}" if result.pc1_fraction_a else
                                                 "; PC1 not measured: add --remove-pc1")
            print(f"blocks ({rule}): {spans or 'none'}")
        print(f"wrote {out}")
    return 0
