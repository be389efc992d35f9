"""``deepgeom layers``: list the layer names of a model that ``deepgeom capture --layers`` accepts."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from ._common import add_user_model_flags

SOURCE_HELP = ("the model: --family F [--data D --width W --depth K --seed S] (an untrained deepgeom model), "
               "--run DIR [--epoch E] (a run written by deepgeom train), --model FILE.py:NAME [--model-kwargs "
               "JSON] [--weights FILE] (your own class or factory and its state dict: the safe route; "
               "--module FILE.py:NAME is the same), --text-model DIR (a local Hugging Face or sentence-transformers "
               "directory), --module FILE.pt --trust-pickle (a whole pickled nn.Module: loading it runs any code "
               "it contains) or --torchscript FILE.pt")


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """The model-source flags shared by ``layers`` and ``capture``."""
    g = p.add_argument_group("model source (exactly one)", SOURCE_HELP)
    g.add_argument("--family", help="model family for deepgeom.models.build (mlp, vgg, resnet, alexnet)")
    g.add_argument("--run", metavar="DIR", help="training run directory (deepgeom train --out)")
    add_user_model_flags(g)
    g.add_argument("--torchscript", metavar="FILE", help="TorchScript file (torch.jit.save)")
    g.add_argument("--text-model", metavar="DIR", help="a local Hugging Face or sentence-transformers model "
                   "directory (offline); its inputs are --texts FILE.txt")
    g.add_argument("--epoch", type=int, help="checkpoint epoch of --run (default: the latest)")
    g.add_argument("--data", help="dataset name or data file: .npy, .npz, .csv, .parquet, .pt, .safetensors "
                   "(default for --family: mnist1d; for --run: the run's own dataset)")
    g.add_argument("--labels", metavar="FILE", help="labels for a --data/--input file of features "
                   "(.npy, one-column .csv, .txt)")
    g.add_argument("--label-column", metavar="NAME", help="the labels column of a .csv/.parquet data file "
                   "(default: label, labels, y, target or targets when present)")
    g.add_argument("--width", type=int, help="--family width (default: the family's)")
    g.add_argument("--depth", type=int, help="--family depth (default: the family's)")
    g.add_argument("--seed", type=int, default=0, help="seed for the data split and --family weights (default 0)")


def add_text_arguments(p: argparse.ArgumentParser) -> None:
    """``--texts``/``--max-length``: the inputs of a ``--text-model``."""
    g = p.add_argument_group("text inputs (with --text-model)")
    g.add_argument("--texts", metavar="FILE.txt", help="one text per line, UTF-8 (labels: --labels FILE, one per text)")
    g.add_argument("--max-length", type=int, metavar="T", help="truncate every text to T tokens (default: the "
                   "model's own limit; texts are padded to the longest)")


def model_inputs(args: argparse.Namespace, src) -> tuple:
    """``(x, y)`` for a source: tokenised ``--texts`` for a text model, else a dataset split or ``--input``."""
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..capture import select_inputs, texts_input

    texts = getattr(args, "texts", None)
    if src.tokenizer is not None or texts is not None:
        if texts is None:
            raise InputError("a --text-model needs --texts FILE.txt (one text per line)")
        if getattr(args, "input", None) is not None:
            raise InputError("give --texts or --input, not both")
        return texts_input(src, texts, n=args.n, max_length=args.max_length, labels=args.labels)
    return select_inputs(src, split=args.split, n=args.n, inputs=getattr(args, "input", None),
                         data_options=data_options(args))


def data_options(args: argparse.Namespace) -> dict:
    """``labels=`` / ``label_column=`` for a user data file, from ``--labels`` / ``--label-column``."""
    out = {}
    if getattr(args, "labels", None) is not None:
        out["labels"] = args.labels
    if getattr(args, "label_column", None) is not None:
        out["label_column"] = args.label_column
    return out


def load_source(args: argparse.Namespace, need_data: bool = True):
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..capture import load_model_source

    return load_model_source(family=args.family, data=args.data, width=args.width, depth=args.depth,
                             seed=args.seed, run=args.run, epoch=args.epoch, module=args.module,
                             torchscript=args.torchscript, model=args.model, model_kwargs=args.model_kwargs,
                             weights=args.weights, text_model=args.text_model, trust_pickle=args.trust_pickle,
                             need_data=need_data and getattr(args, "input", None) is None,
                             data_options={} if getattr(args, "input", None) is not None else data_options(args))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "layers",
        help="list a model's layer names (for capture --layers)",
        description="List the layers of a model that capture accepts: 'input', every named sub-module "
        "(torch's named_modules names) and 'output', with module type and parameter count; layers the model "
        "analyses by default (its analysis_layers) are marked with '*'.",
    )
    add_source_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, type, n_params, default}")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..capture import default_layers, list_layers

    src = load_source(args, need_data=False)
    rows = list_layers(src.model, with_types=True)
    defaults = set(default_layers(src.model))
    out = [{"name": n, "type": t, "n_params": k, "default": n in defaults} for n, t, k in rows]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        w = max(len(r["name"]) for r in out)
        for r in out:
            print(f"{'*' if r['default'] else ' '} {r['name']:<{w}}  {r['type']:<24} {r['n_params']:>12,}")
    return 0
