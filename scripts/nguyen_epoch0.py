"""Exploratory, NOT pre-registered: does the block detector find blocks in the untrained networks (epoch 0)
of a nguyen2021 reproduction, and after training? Same test images and detector settings as the study
analysis. Usage: python scripts/nguyen_epoch0.py OUT/nguyen2021 [threads]  → OUT/nguyen2021/epoch0_blocks.csv
(the predict study is skipped: its networks repeat grid architectures)."""
import json, sys
from pathlib import Path
import numpy as np, pandas as pd, torch
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
from deepgeom.data import load
from deepgeom.train import load_model
from deepgeom.capture import capture
from deepgeom.analysis.similarity import cka_matrix_from_captures
from deepgeom.analysis.blocks import find_blocks

root = Path(sys.argv[1])
rows = []
cache = {}
for study in sorted(p for p in root.iterdir() if (p / "runs").is_dir() and not p.name.startswith("predict")):
    for run in sorted((study / "runs").iterdir()):
        if not (run / "DONE.json").is_file() or not (run / "config.json").is_file():
            continue
        cfg = json.loads((run / "config.json").read_text())
        tr = cfg["train"]
        opts = tr["dataset_options"]
        key = json.dumps(opts, sort_keys=True)
        if key not in cache:
            cache[key] = load("fashion-mnist", seed=0, **opts).x_test
        x = cache[key]
        for epoch in (0, tr["epochs"]):
            m = load_model(run, epoch=epoch).eval()
            cap = capture(m, x, None, batch_size=256, progress=False)
            r = cka_matrix_from_captures(cap, batch_size=256, remove_pc1=True)
            plain = cka_matrix_from_captures(cap, batch_size=256)
            b = find_blocks(plain, pc1_fraction=r.pc1_fraction_a)
            c = find_blocks(plain, pc1_fraction=False)
            hidden = [n for n in plain.layers_a if n not in ("input", "output")]
            pc1 = [r.pc1_fraction_a[n] for n in hidden]
            rows.append({"study": study.name, "run": run.name, "width": tr["width"], "depth": tr["depth"],
                         "seed": tr["seed"], "n_train": opts.get("n_train"), "epoch": epoch,
                         "coverage": sum(x.size for x in b) / len(hidden),
                         "cka_only_coverage": sum(x.size for x in c) / len(hidden),
                         "pc1_min": min(pc1), "pc1_max": max(pc1), "pc1_mean": float(np.mean(pc1))})
            print(rows[-1], flush=True)
pd.DataFrame(rows).to_csv(root / "epoch0_blocks.csv", index=False)
