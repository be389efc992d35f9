"""The command line starts without the numerical stack: ``deepgeom --help``, every subcommand's ``--help``
and ``deepgeom data list`` import no torch/scipy/pandas/numpy (the heavy imports happen inside the command
that needs them). Guarded by what ``sys.modules`` holds, not by a timing (speed goals live in bench/)."""

import json
import subprocess
import sys

from deepgeom.cli import build_parser

HEAVY = ("torch", "numpy", "scipy", "pandas", "matplotlib", "sklearn", "safetensors", "transformers",
         "sentence_transformers", "yaml", "tqdm", "mnist1d", "pyarrow")

_PROBE = """
import contextlib, io, json, sys
import deepgeom.cli as cli
parser = cli.build_parser()
sub = next(a for a in parser._actions if a.dest == "command")
argvs = [["--help"], ["data", "list"], ["data", "list", "--json"]]
for name, p in sub.choices.items():
    argvs.append([name, "--help"])
    for a in p._actions:
        if getattr(a, "choices", None) and isinstance(a.choices, dict):  # nested subcommands
            argvs += [[name, s, "--help"] for s in a.choices]
for argv in argvs:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(argv)
        except SystemExit:
            pass
print(json.dumps({"argvs": argvs, "modules": sorted({m.split('.')[0] for m in sys.modules})}))
"""


def test_cli_help_and_data_list_load_no_heavy_module():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = sorted(set(res["modules"]) & set(HEAVY))
    assert loaded == [], f"`import deepgeom.cli` + --help/data list imported {loaded}"
    # the probe really walked the nested subcommands (id estimate/profile, cka pair/heatmap, data list/info)
    assert ["id", "estimate", "--help"] in res["argvs"] and ["data", "info", "--help"] in res["argvs"]


def test_import_deepgeom_is_lazy_but_complete():
    probe = ("import sys, deepgeom; a = {m.split('.')[0] for m in sys.modules}; "
             "deepgeom.twonn; deepgeom.train; b = {m.split('.')[0] for m in sys.modules}; "
             "print(int('torch' in a), int('torch' in b), int(callable(deepgeom.train)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "1", "1"]


def test_train_is_callable_whichever_object_the_name_holds():
    import deepgeom
    import deepgeom.train as train_module  # binds the module to deepgeom.train on first import

    assert callable(train_module) and callable(deepgeom.train)
    assert train_module.train.__doc__ and "TrainConfig" in dir(train_module)


def test_data_list_catalogue_matches_the_live_registry():
    from deepgeom.cli.cmd_data import catalogue
    from deepgeom.data import available, describe

    live = json.loads(json.dumps([describe(n) for n in available()], ensure_ascii=False))
    assert catalogue() == live, ("src/deepgeom/cli/datasets.json is stale: regenerate it with "
                                 "python -c 'from deepgeom.cli.cmd_data import write_catalogue; write_catalogue()'")


def test_every_subcommand_help_is_built_without_error():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert name in p.format_usage()
