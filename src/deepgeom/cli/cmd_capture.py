"""``deepgeom capture``: write one ``.npy`` per layer plus ``manifest.json`` for a model on a dataset."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from .cmd_layers import add_source_arguments, add_text_arguments, load_source, model_inputs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "capture",
        help="capture layer activations to .npy files plus a JSON manifest",
        description="Run a model on the first N examples of a dataset split and write each chosen layer, "
        "flattened to (N, D), as OUT/<layer>.npy, plus OUT/manifest.json (layer name, file, shape, dtype, "
        "relative depth) and OUT/labels.npy. Layers above the memory budget are written to disk batch by "
        "batch, so layers larger than RAM work.",
    )
    add_source_arguments(p)
    add_text_arguments(p)
    p.add_argument("--input", metavar="FILE", help="examples to run instead of a dataset split: a data file "
                   "(.npy, .npz, .csv, .parquet, ...), every row in order; --labels/--label-column give labels")
    p.add_argument("--layers", help="comma-separated names, glob patterns or module types, e.g. "
                   "'input,features.*,ReLU,output' (default: the model's analysis layers, else all leaves)")
    p.add_argument("--split", choices=("train", "test"), default=None,
                   help="dataset split (default test; all examples for a data file without a test split)")
    p.add_argument("--n", type=int, help="use the first N examples (default: all)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--memory-budget", default="1GB", help="RAM for in-memory layers, e.g. 2GB, 512MiB "
                   "(default 1GB); larger layers stream straight into OUT")
    p.add_argument("--batch-size", type=int, default=256, help="examples per forward pass (default 256)")
    p.add_argument("--reduce", choices=("mean", "tokens", "cls", "flatten"), default=None,
                   help="how a layer output with a token axis (B, T, H) becomes rows: mean over the real "
                   "tokens, one row per token, the first (CLS) token, or flattened (padding included); "
                   "required for such layers, other outputs are flattened")
    p.add_argument("--dtype", choices=("float32", "float16", "float64"), default="float32",
                   help="storage dtype (default float32)")
    p.add_argument("--device", default="cpu", help="torch device for the forward pass (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..capture import capture, parse_layer_list

    src = load_source(args)
    x, y = model_inputs(args, src)
    model = src.model.to(args.device)
    data = (x, y) if y is not None else x
    try:
        cap = capture(model, data, parse_layer_list(args.layers), batch_size=args.batch_size, device=args.device,
                      memory_budget=args.memory_budget, spill_dir=args.out, reduce=args.reduce, dtype=args.dtype,
                      progress=not args.no_progress)
    except RuntimeError as exc:  # the model's forward pass refused these inputs (shape, dtype)

        hint = ""
        if getattr(x, "dtype", None) is not None and not str(x.dtype).replace("torch.", "").startswith(
                ("float", "bfloat")):
            hint = f"; the inputs are {x.dtype}: a model with float weights needs float inputs (e.g. x.astype(np.float32))"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shape = f" of shape {tuple(x.shape)}" if hasattr(x, "shape") else ""
        raise InputError(f"the model failed on the inputs{shape}: {msg}{hint}") from exc
    cap.meta.update({k: v for k, v in src.info.items() if v is not None})
    split = args.split
    if split is None and src.dataset is not None:  # what select_inputs chose
        split = "test" if int(src.dataset.x_test.shape[0]) > 0 else "train"
    cap.meta.update({"split": None if (args.input or args.texts) else split, "input_file": args.input,
                     "texts_file": args.texts})
    out = cap.save(args.out)
    manifest = json.loads((out / "manifest.json").read_text())
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        w = max(len(e["name"]) for e in manifest["layers"])
        for e in manifest["layers"]:
            shape = "×".join(map(str, e["shape"]))
            print(f"{e['name']:<{w}}  {shape:>16}  depth {e['relative_depth']:.3f}  {e['file']}")
        print(f"{len(manifest['layers'])} layers, n={manifest['n']} → {out}")
    return 0
