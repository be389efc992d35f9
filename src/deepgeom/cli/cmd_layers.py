"""``deepgeom layers``: list the layer names of a model that ``deepgeom capture --layers`` accepts."""

from __future__ import annotations

import argparse
import json

SOURCE_HELP = ("the model: --family F [--data D --width W --depth K --seed S] (an untrained deepgeom model), "
               "--run DIR [--epoch E] (a run written by deepgeom train), --module FILE.py:CLASS [--weights "
               "W.safetensors] (your model class and its state dict: the safe route), --module FILE.pt "
               "--trust-pickle (a whole pickled nn.Module: loading it runs any code it contains) or "
               "--torchscript FILE.pt")


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """The model-source flags shared by ``layers`` and ``capture``."""
    g = p.add_argument_group("model source (exactly one)", SOURCE_HELP)
    g.add_argument("--family", help="model family for deepgeom.models.build (mlp, vgg, resnet, alexnet)")
    g.add_argument("--run", metavar="DIR", help="training run directory (deepgeom train --out)")
    g.add_argument("--module", metavar="FILE", help="FILE.py:CLASS (built with no arguments; weights from "
                   "--weights), or FILE.pt saved with torch.save(model) — a pickle, refused without --trust-pickle")
    g.add_argument("--weights", metavar="FILE.safetensors", help="state dict for --module FILE.py:CLASS")
    g.add_argument("--trust-pickle", action="store_true", help="allow --module FILE.pt: unpickling runs any code "
                   "the file carries, so only for files you made or trust")
    g.add_argument("--torchscript", metavar="FILE", help="TorchScript file (torch.jit.save)")
    g.add_argument("--epoch", type=int, help="checkpoint epoch of --run (default: the latest)")
    g.add_argument("--data", help="dataset name or data file (default for --family: mnist1d; for --run: the "
                   "run's own dataset)")
    g.add_argument("--width", type=int, help="--family width (default: the family's)")
    g.add_argument("--depth", type=int, help="--family depth (default: the family's)")
    g.add_argument("--seed", type=int, default=0, help="seed for the data split and --family weights (default 0)")


def load_source(args: argparse.Namespace, need_data: bool = True):
    from ..capture._sources import load_model_source

    return load_model_source(family=args.family, data=args.data, width=args.width, depth=args.depth,
                             seed=args.seed, run=args.run, epoch=args.epoch, module=args.module,
                             torchscript=args.torchscript, need_data=need_data, weights=args.weights,
                             trust_pickle=args.trust_pickle)


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
