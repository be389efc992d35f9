"""``deepgeom cka``: CKA between two activation files, or the layer × layer heatmap of models/captures.

Two forms, told apart by the first word::

    deepgeom cka A.npy B.npy [--kernel linear|rbf] [--sigma S] [--debiased] [--batch-size B] [--json]
    deepgeom cka heatmap (--run-a DIR [--run-b DIR] | --capture-a DIR [--capture-b DIR]
                          | --family F [--family-b F] --data D) --out DIR [...]

The command only parses arguments and calls :mod:`deepgeom.functional.cka` /
:mod:`deepgeom.analysis.similarity`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._common import load_npy

HELP = "CKA similarity: two .npy files → one number, or 'heatmap' → all layer pairs of models/captures"

DESCRIPTION = """\
deepgeom cka A.npy B.npy      CKA between two (N, D) activation files with the same N rows (higher
                              dimensional arrays are flattened to (N, -1)). Linear CKA by default;
                              --debiased for the unbiased-HSIC form; --batch-size B for minibatch CKA.
deepgeom cka heatmap ...      the layer × layer CKA matrix of one model (within) or two models (cross),
                              in one pass over the data (minibatch CKA, Nguyen et al. 2021), from
                              trained runs (--run-a/--run-b), model families (--family/--family-b with
                              --data) or capture directories (--capture-a/--capture-b). Writes
                              OUT/cka_matrix.csv, OUT/cka_heatmap.png/.svg, OUT/result.json and
                              OUT/blocks.json (within) or OUT/best_match.csv (cross).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cka", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="A.npy B.npy | heatmap",
                   help="two .npy activation files, or the word 'heatmap'")
    g = p.add_argument_group("CKA")
    g.add_argument("--kernel", choices=("linear", "rbf"), default="linear", help="kernel (default linear)")
    g.add_argument("--sigma", type=float, default=0.8,
                   help="RBF bandwidth as a fraction of the median distance (default 0.8)")
    g.add_argument("--debiased", action="store_true", help="unbiased HSIC (Song et al. 2012); needs N >= 4")
    g.add_argument("--batch-size", type=int, default=None,
                   help="minibatch CKA over batches of B rows (files: default off = full data; heatmap: "
                   "default 256)")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    h = p.add_argument_group("heatmap sources (exactly one of --run-a, --capture-a, --family)")
    h.add_argument("--run-a", metavar="DIR", help="training run directory of model A (deepgeom train --out)")
    h.add_argument("--run-b", metavar="DIR", help="training run of model B (default: within model A)")
    h.add_argument("--epoch", type=int, help="checkpoint epoch of --run-a (default latest)")
    h.add_argument("--epoch-b", type=int, help="checkpoint epoch of --run-b (default latest)")
    h.add_argument("--capture-a", metavar="DIR", help="capture directory of model A (deepgeom capture --out)")
    h.add_argument("--capture-b", metavar="DIR", help="capture directory of model B (same examples, same order)")
    h.add_argument("--family", help="model family for model A (untrained, deepgeom.models.build)")
    h.add_argument("--family-b", help="model family for model B")
    h.add_argument("--width", type=int, help="--family width")
    h.add_argument("--depth", type=int, help="--family depth")
    h.add_argument("--width-b", type=int, help="--family-b width")
    h.add_argument("--depth-b", type=int, help="--family-b depth")
    h.add_argument("--seed", type=int, default=0, help="seed of --family weights and the data split (default 0)")
    h.add_argument("--seed-b", type=int, default=1, help="seed of --family-b weights (default 1)")
    h.add_argument("--data", help="dataset name or file (default: model A's run dataset; needed with --family)")
    h.add_argument("--split", choices=("train", "test"), default="test", help="dataset split (default test)")
    h.add_argument("--n", type=int, help="first N examples of the split (default all)")
    h.add_argument("--layers-a", help="comma-separated layers/globs of model A (default: analysis layers)")
    h.add_argument("--layers-b", help="comma-separated layers/globs of model B")
    h.add_argument("--full", action="store_true", help="full-data CKA from N×N Grams instead of minibatch")
    h.add_argument("--remove-pc1", action="store_true",
                   help="project each layer's first principal component out (also writes pc1_fraction.csv)")
    h.add_argument("--threshold", type=float, default=0.9, help="block threshold for find_blocks (default 0.9)")
    h.add_argument("--out", metavar="DIR", help="output directory (heatmap)")
    h.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _load_npy(path: str) -> Any:
    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise InputError(f"expected a .npy file of activations (N, D); got {p.name}")
    a = load_npy(p, "activations")
    if a.ndim == 1:
        raise InputError(f"{p.name} is 1-D (shape {a.shape}): activations must be (N, D), one row per example")
    return a.reshape(a.shape[0], -1) if a.ndim > 2 else a


def _run(args: argparse.Namespace) -> int:
    if args.inputs[0] == "heatmap":
        if len(args.inputs) > 1:
            raise InputError(f"'cka heatmap' takes no positional arguments; got {args.inputs[1:]}")
        return _heatmap(args)
    if len(args.inputs) != 2:
        raise InputError(f"give two .npy files (A.npy B.npy) or 'heatmap'; got {len(args.inputs)} argument(s)")
    from ..functional.cka import MinibatchCKA, cka

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
    from ..analysis.similarity import best_match, cka_matrix, find_blocks
    from ..capture._sources import load_model_source, parse_layer_list, select_inputs
    from ..viz._common import save_figure
    from ..viz.similarity import plot_cka_heatmap, plot_pc1_fraction

    if not args.out:
        raise InputError("cka heatmap needs --out DIR")
    sources = [s for s in (args.run_a, args.capture_a, args.family) if s]
    if len(sources) != 1:
        raise InputError("cka heatmap needs exactly one of --run-a DIR, --capture-a DIR or --family NAME")
    batch_size = args.batch_size or 256
    common = dict(kernel=args.kernel, sigma=args.sigma, minibatch=not args.full, debiased=args.debiased,
                  remove_pc1=args.remove_pc1, batch_size=batch_size)
    la, lb = parse_layer_list(args.layers_a), parse_layer_list(args.layers_b)
    if args.capture_a:
        if args.run_b or args.family_b:
            raise InputError("--capture-a pairs with --capture-b (not a model)")
        result = cka_matrix(args.capture_a, args.capture_b, layers_a=la, layers_b=lb, **common)
    else:
        if args.capture_b:
            raise InputError("--capture-b pairs with --capture-a (not a model)")
        src_a = load_model_source(family=args.family, data=args.data, width=args.width, depth=args.depth,
                                  seed=args.seed, run=args.run_a, epoch=args.epoch)
        x, y = select_inputs(src_a, split=args.split, n=args.n)
        model_b = None
        if args.run_b or args.family_b:
            src_b = load_model_source(family=args.family_b, data=args.data or src_a.info.get("data"),
                                      width=args.width_b, depth=args.depth_b, seed=args.seed_b, run=args.run_b,
                                      epoch=args.epoch_b, need_data=False)
            model_b = src_b.model
        result = cka_matrix(src_a.model, model_b, x, layers_a=la, layers_b=lb, progress=not args.no_progress,
                            **common)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.matrix.to_csv(out / "cka_matrix.csv")
    files = [str(p) for p in save_figure(plot_cka_heatmap(result, threshold=args.threshold), out / "cka_heatmap")]
    summary = result.to_dict()
    summary["files"] = files + [str(out / "cka_matrix.csv")]
    if result.within:
        blocks = [b.to_dict() for b in find_blocks(result, threshold=args.threshold)]
        (out / "blocks.json").write_text(json.dumps({"threshold": args.threshold, "blocks": blocks}, indent=2))
        summary["blocks"] = blocks
        summary["files"].append(str(out / "blocks.json"))
    else:
        bm = best_match(result)
        bm.to_csv(out / "best_match.csv", index=False)
        summary["files"].append(str(out / "best_match.csv"))
    if result.pc1_removed and result.pc1_fraction_a is not None:
        import pandas as pd

        pd.DataFrame({"layer": result.layers_a, "relative_depth": result.depth_a,
                      "pc1_fraction": [result.pc1_fraction_a[n] for n in result.layers_a]}
                     ).to_csv(out / "pc1_fraction.csv", index=False)
        summary["files"] += [str(p) for p in save_figure(plot_pc1_fraction(result), out / "pc1_fraction")]
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary))
    else:
        print(result.matrix.round(3).to_string())
        if result.within:
            spans = ", ".join(f"{b['layers'][0]}…{b['layers'][-1]} ({len(b['layers'])})" for b in summary["blocks"])
            print(f"blocks (CKA ≥ {args.threshold}): {spans or 'none'}")
        print(f"wrote {out}")
    return 0
