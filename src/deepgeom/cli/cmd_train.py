"""``deepgeom train``: train a model family on an offline dataset, with checkpoints and per-epoch accuracy."""

from __future__ import annotations

import argparse
import ast
import json

from .._defaults import TRAIN_DEFAULTS
from ..errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model family (mlp, vgg, resnet, alexnet) on a dataset, saving checkpoints",
        description="Train a deepgeom model family on a dataset with true or partly shuffled labels. "
        "Writes OUT/config.json, OUT/history.csv (train/test loss and accuracy per epoch, epoch 0 = "
        "untrained) and OUT/checkpoints/epoch_XXXX.safetensors at the chosen epochs; prints a summary. "
        "Same seed, same result (deterministic on CPU).",
    )
    p.add_argument("--family", default="mlp", help="model family: mlp, vgg, resnet, alexnet (default mlp)")
    p.add_argument("--data", default="mnist1d",
                   help="dataset name (see `deepgeom data list`), e.g. mnist1d, digits, fashion-mnist "
                   "(default mnist1d)")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset option, e.g. --data-option n_train=1000 (repeatable)")
    p.add_argument("--width", type=int, default=None, help="width: hidden units (mlp) or base channels")
    p.add_argument("--depth", type=int, default=None,
                   help="depth: hidden layers (mlp), conv layers (vgg, alexnet) or residual blocks (resnet)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option, e.g. -o batch_norm=True -o fc_layers=1 (repeatable)")
    d = TRAIN_DEFAULTS  # the same defaults as a study config's train: section
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help=f"passes over the training set (default {d['epochs']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"minibatch size (default {d['batch_size']})")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d["optimizer"],
                   help=f"optimiser; sgd uses --momentum (default {d['optimizer']})")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"learning rate (default {d['lr']:g})")
    p.add_argument("--momentum", type=float, default=d["momentum"],
                   help=f"SGD momentum (default {d['momentum']:g})")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help=f"weight decay (default {d['weight_decay']:g})")
    p.add_argument("--loss", choices=("ce", "mse"), default=d["loss"],
                   help=f"ce (cross-entropy) or mse (squared error to one-hot targets); default {d['loss']}")
    p.add_argument("--seed", type=int, default=0, help="seed for data split, weights, batches (default 0)")
    p.add_argument("--shuffle-fraction", type=float, default=0.0,
                   help="share of training labels to shuffle, in [0, 1] (default 0; 1 = random labels)")
    p.add_argument("--checkpoints", default=None, metavar="E1,E2,...",
                   help="epochs to save, comma-separated, e.g. 0,1,5,10 (0 always added; default 0 and last)")
    p.add_argument("--stop-at-train-acc", type=float, default=None, metavar="ACC",
                   help="train until the training accuracy reaches ACC (checked at each evaluated epoch; "
                        "--epochs is then the limit); default: train all epochs")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory to write (default: none, nothing is saved)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_run)


def _parse_options(items: list[str], flag: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} must look like KEY=VALUE; got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def _parse_epochs(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise InputError(f"--checkpoints must be comma-separated epoch numbers like 0,1,5,10; got {text!r}") from exc


def _run(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..train import TrainConfig, train

    config = TrainConfig(
        dataset=args.data, dataset_options=_parse_options(args.data_option, "--data-option"),
        family=args.family, width=args.width, depth=args.depth,
        model_options=_parse_options(args.option, "--option"), optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, shuffle_fraction=args.shuffle_fraction, checkpoint_epochs=_parse_epochs(args.checkpoints),
        loss=args.loss, device=args.device, stop_at_train_acc=args.stop_at_train_acc,
    )
    result = train(config, args.out, progress=not args.no_progress)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
        return 0

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    print(f"trained {summary['family']} ({summary['n_parameters']:,} parameters) on {summary['dataset']} "
          f"for {summary['epochs']} epochs in {summary['seconds']:.1f} s"
          + (f", {100 * config.shuffle_fraction:g}% of training labels shuffled" if config.shuffle_fraction else "")
          + (f" (stopped: training accuracy reached {config.stop_at_train_acc:g})"
             if config.stop_at_train_acc is not None and summary["epochs"] < config.epochs else ""))
    print(f"train accuracy {pct(summary['train_acc'])} (loss {num(summary['train_loss'])}), "
          f"test accuracy {pct(summary['test_acc'])} (loss {num(summary['test_loss'])})")
    if result.out_dir is not None:
        print(f"run saved to {result.out_dir} (checkpoints at epochs {summary['checkpoint_epochs']})")
    else:
        print("nothing saved (no --out DIR given)")
    return 0
