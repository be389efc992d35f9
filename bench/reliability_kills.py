"""Kill a study with SIGKILL at random moments, resume it, and compare its tables with an uninterrupted run.

    python bench/reliability_kills.py [--kills K] [--seed S] [--workdir DIR]

A small study (two MLPs on mnist1d, two epochs, ID profiles and minibatch CKA) runs once without
interruption (the reference), then again in a second directory under ``deepgeom study``, killed with
SIGKILL after a random fraction of the reference's time, ``--kills`` times, each time resuming from what
the previous attempt left; a last call runs to the end.  The script prints how many kills landed
while the study was still running, and whether every table is byte-identical to the reference's.
Figures: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
name: kill-test
sweep:
  dataset: mnist1d
  model: mlp
  width: [16, 32]
  depth: 2
data:
  seed: 0
  options:
    mnist1d: {n_train: 600, n_test: 300}
train:
  epochs: 2
  checkpoints: [0, 1, 2]
analyses:
  id_profile: {n_points: 300}
  cka_matrix: {n_points: 300, batch_size: 100}
"""


def study(cfg: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "deepgeom", "study", str(cfg), "--out", str(out), "--quiet",
                             "--threads", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def tables(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "tables").rglob("*")) if p.is_file()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=11)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="deepgeom-kills-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "ref", ignore_errors=True)
    shutil.rmtree(work / "killed", ignore_errors=True)
    cfg = work / "study.yaml"
    cfg.write_text(CONFIG)
    t0 = time.perf_counter()
    p = study(cfg, work / "ref")
    _, err = p.communicate()
    t_ref = time.perf_counter() - t0
    if p.returncode != 0:
        print(err.decode()[-2000:])
        return 1
    print(f"reference run: {t_ref:.1f} s, {len(tables(work / 'ref'))} tables")
    rng = random.Random(args.seed)
    landed = trials = identical = 0
    ref = tables(work / "ref")
    while landed < args.kills:
        p = study(cfg, work / "killed")
        delay = rng.uniform(0.05, 0.5) * t_ref
        try:
            p.wait(timeout=delay)
            # the study finished: check this trial's tables, then start a fresh one
            trials += 1
            identical += int(p.returncode == 0 and tables(work / "killed") == ref)
            print(f"trial {trials} finished (status {p.returncode}), byte-identical: {tables(work / 'killed') == ref}")
            shutil.rmtree(work / "killed")
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            landed += 1
            print(f"SIGKILL {landed} after {delay:.1f} s")
        p.stderr.close()
    p = study(cfg, work / "killed")
    _, err = p.communicate()
    trials += 1
    same = p.returncode == 0 and tables(work / "killed") == ref
    identical += int(same)
    leftovers = [q.name for q in (work / "killed" / "runs").iterdir() if q.name.startswith(".tmp")]
    print(f"{landed} SIGKILLs landed mid-run over {trials} trials; {identical} of {trials} trials ended with "
          f"tables byte-identical to the reference; temporary directories left: {len(leftovers)}")
    return 0 if identical == trials else 1


if __name__ == "__main__":
    raise SystemExit(main())
