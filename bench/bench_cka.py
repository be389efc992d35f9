"""All-pairs CKA heatmap of two models: deepgeom vs torch-cka vs ckatorch, same models, same data, same run.

    python bench/bench_cka.py            # N = 5,120 (heatmap) + the 2 models × 20+ layers × 10,000 case
    python bench/bench_cka.py --quick    # N = 2,048, scale case at 4,000
    python bench/bench_cka.py --only relu-deep --methods deepgeom,torch-cka   # one case, some methods

Models: an MLP (width 256) and a 1-D CNN (32 channels on length-40 inputs, D = 1,280 per layer),
every activation output plus the logits, on mnist1d-shaped Gaussian inputs: 23 × 21 layers (22 and
20 hidden) and 13 × 9 layers (12 and 8 hidden); minibatch CKA with batch 256 (Nguyen et al. 2021),
one pass in a fixed order.

* deepgeom: ``cka_matrix(model_a, model_b, x, batch_size=256)`` — one pass, U-centred kernels per
  batch, all pairs from one matrix product, float64 HSIC terms and sums; its default
  ``compute_dtype="auto"`` runs the Gram products of these float32 activations in float32 after
  centring. "deepgeom-f64" forces float64 products: the reference every ``max |Δ|`` is taken against.
* forward only: the two models run over the same batches and nothing else — the floor every method
  pays, so ``torch-cka / forward only`` bounds the ratio any method that runs the models can reach;
  ``cka_ratio`` is the ratio of what each method adds to it (the CKA work alone).
* torch-cka 0.21: ``CKA(...).compare(loader)`` with an unshuffled loader and the layers listed (its
  defaults would hook every module and zip a shuffled loader with itself). It computes HSIC₁ in
  float32 on uncentred Grams, pair by pair (three n×n×n products per pair per batch).
* ckatorch 1.0.3: its ``CKA`` class cannot take (B, D) layer outputs (``torch.bmm`` needs 3-D) and
  overwrites its matrix every batch (only the last batch of each epoch counts), so the anchor is its
  own minibatch function ``ckatorch.core.cka_batch`` on every layer pair, with all activations held as
  (n_batches, B, D) stacks (captured with forward hooks in the same single pass).

Each method runs in a fresh single-threaded subprocess (fair peak memory: anonymous RSS above the
level after the models and data are loaded, sampled every 20 ms), methods interleaved and repeated,
the fastest run of each kept. The ratios use **CPU time of one thread**: this machine is shared by
several engineers (load 5–9 on 2 cores while these numbers were taken), and wall times of
sequential runs swing by 2–4× with the load while one thread's CPU time does not. Wall times are
printed too. Model pairs: ReLU (the realistic case: a positive common offset, where float32 libraries
lose digits) and tanh (no common offset: every library is right, so the values must agree).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import PeakMemory, cpu_info, loadavg, print_table  # noqa: E402

BATCH = 256


def models(scale: bool = False, act: str = "relu"):
    import torch
    from torch import nn

    torch.manual_seed(0)
    Act = {"relu": nn.ReLU, "tanh": nn.Tanh}[act]
    depth_a, depth_b = (22, 20) if scale else (12, 8)
    mods = [nn.Linear(40, 256), Act()]
    for _ in range(depth_a - 1):
        mods += [nn.Linear(256, 256), Act()]
    a = nn.Sequential(*mods, nn.Linear(256, 10))
    convs = [nn.Conv1d(1, 32, 3, padding=1), Act()]
    for _ in range(depth_b - 1):
        convs += [nn.Conv1d(32, 32, 3, padding=1), Act()]
    b = nn.Sequential(nn.Unflatten(1, (1, 40)), *convs, nn.Flatten(), nn.Linear(32 * 40, 10))
    # Variance-preserving initialisation, so that no layer collapses to a constant (PyTorch's default
    # init shrinks the signal with depth: the 22nd layer's features would vary by 1e-9 around 1e-2).
    # tanh: zero biases and odd activations of symmetric inputs give zero-mean features — no common
    # offset, the case where float32 libraries are right. ReLU: He init; its features keep the
    # positive offset of ReLU (mean ≈ 0.6 × std), the realistic case.
    gain = 1.2 if act == "tanh" else 2**0.5
    for m in [*a.modules(), *b.modules()]:
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, std=gain / fan_in**0.5)
            nn.init.zeros_(m.bias)
    la = [n for n, m in a.named_modules() if isinstance(m, Act)] + [str(len(a) - 1)]
    lb = [n for n, m in b.named_modules() if isinstance(m, Act)] + [str(len(b) - 1)]
    return a.eval(), b.eval(), la, lb


def data(n: int):
    import torch

    return torch.randn(n, 40, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------------------- methods
def run_deepgeom(a, b, la, lb, x):
    from deepgeom.analysis.similarity import cka_matrix

    return cka_matrix(a, b, x, layers_a=la, layers_b=lb, batch_size=BATCH, progress=False).values


def run_deepgeom64(a, b, la, lb, x):
    import torch

    from deepgeom.analysis.similarity import cka_matrix

    return cka_matrix(a, b, x, layers_a=la, layers_b=lb, batch_size=BATCH, progress=False,
                      compute_dtype=torch.float64).values


def run_forward(a, b, la, lb, x):
    """Only the two models' forward passes over the batches: the floor every method pays."""
    import numpy as np
    import torch

    with torch.no_grad():
        for s in range(0, x.shape[0], BATCH):
            a(x[s:s + BATCH])
            b(x[s:s + BATCH])
    return np.full((len(la), len(lb)), np.nan)


def run_torch_cka(a, b, la, lb, x):
    import warnings

    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA

    loader = DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = CKA(a, b, model1_name="A", model2_name="B", model1_layers=la, model2_layers=lb)
        try:
            c.compare(loader)
        except AssertionError:  # "HSIC computation resulted in NANs": keep the matrix it computed
            pass
    M = c.hsic_matrix.numpy()
    order_a, order_b = c.model1_info["Layers"], c.model2_info["Layers"]
    # torch-cka labels rows by named_modules order; values come in hook-firing order (same here)
    return M[[order_a.index(n) for n in la]][:, [order_b.index(n) for n in lb]]


def run_ckatorch(a, b, la, lb, x):
    import torch
    from ckatorch.core import cka_batch

    feats = {("a", n): [] for n in la} | {("b", n): [] for n in lb}
    hooks = []
    for side, model, names in (("a", a, la), ("b", b, lb)):
        mods = dict(model.named_modules())
        for n in names:
            hooks.append(mods[n].register_forward_hook(
                lambda _m, _i, out, key=(side, n): feats[key].append(out.detach().flatten(1))))
    nfull = (x.shape[0] // BATCH) * BATCH  # cka_batch needs equal batch sizes
    with torch.no_grad():
        for s in range(0, nfull, BATCH):
            a(x[s:s + BATCH])
            b(x[s:s + BATCH])
    for h in hooks:
        h.remove()
    stacks = {k: torch.stack(v) for k, v in feats.items()}  # (n_batches, B, D)
    M = torch.zeros(len(la), len(lb), dtype=torch.float64)
    for i, na in enumerate(la):
        for j, nb in enumerate(lb):
            M[i, j] = cka_batch(stacks[("a", na)], stacks[("b", nb)])
    return M.numpy()


METHODS = {"deepgeom": run_deepgeom, "deepgeom-f64": run_deepgeom64, "torch-cka": run_torch_cka,
           "ckatorch": run_ckatorch, "forward only": run_forward}
IMPORTS = {"deepgeom": "deepgeom.analysis.similarity", "deepgeom-f64": "deepgeom.analysis.similarity",
           "torch-cka": "torch_cka", "ckatorch": "ckatorch.core", "forward only": "torch"}
#: the values every method is compared with: deepgeom with float64 Gram products
REFERENCE = "deepgeom-f64"


def worker(method: str, n: int, scale: bool, act: str, out: str) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)  # see the module docstring: CPU time of one thread is what we compare
    import importlib

    importlib.import_module(IMPORTS[method])  # library import time is not part of the measurement
    a, b, la, lb = models(scale, act)
    x = data(n)
    with torch.no_grad():
        a(x[:BATCH])
        b(x[:BATCH])
    with PeakMemory() as pm:
        base = pm.peak_mb
        c0, t0 = time.process_time(), time.perf_counter()
        M = METHODS[method](a, b, la, lb, x)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(out, np.asarray(M, dtype=np.float64))
    print(json.dumps({"method": method, "seconds": secs, "cpu_s": cpu, "peak_mb": pm.peak_mb - base,
                      "layers": [len(la), len(lb)]}))


def call(method: str, n: int, scale: bool, act: str, out: Path) -> dict:
    p = subprocess.run([sys.executable, __file__, "--worker", method, "--n", str(n), "--act", act, "--out", str(out)]
                       + (["--scale"] if scale else []), capture_output=True, text=True, check=False)
    if p.returncode:
        return {"method": method, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def case_name(act: str, deep: bool) -> str:
    """A case's name in --only, results.json and the saved matrices: relu, tanh-deep, ..."""
    return f"{act}{'-deep' if deep else ''}"


def compare(n: int, act: str, deep: bool, out: Path, repeats: int) -> list[dict]:
    """Every method ``repeats`` times, interleaved (A B C A B C …); keep each method's fastest CPU time."""
    import numpy as np

    tag = case_name(act, deep)
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for m in METHODS:
            r = call(m, n, deep, act, out / f"{tag}-{m}.npy")
            if m not in best or ("error" not in r and r["cpu_s"] < best[m].get("cpu_s", float("inf"))):
                best[m] = r
    rows = [best[m] for m in METHODS]
    ref = np.load(out / f"{tag}-{REFERENCE}.npy")
    base = best["deepgeom"]
    fwd = best.get("forward only", {}).get("cpu_s")
    for r in rows:
        if "error" in r:
            continue
        if r["method"] != "forward only":
            M = np.load(out / f"{tag}-{r['method']}.npy")
            finite = np.isfinite(M)
            r["max_abs_diff"] = float(np.abs(M - ref)[finite].max()) if finite.any() else None
            r["nan"] = int((~finite).sum())  # torch-cka: float32 HSIC of ReLU features goes negative → NaN
        r["cpu_ratio"] = r["cpu_s"] / base["cpu_s"]
        if fwd is not None and r["method"] != "forward only" and base["cpu_s"] > fwd:
            # the same ratio for the CKA work alone: what each method adds to the forward passes
            r["cka_ratio"] = (r["cpu_s"] - fwd) / (base["cpu_s"] - fwd)
        r["wall_ratio"] = r["seconds"] / base["seconds"]
        r["memory_ratio"] = r["peak_mb"] / max(base["peak_mb"], 1.0)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller N, one repeat")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per method (default 2; quick 1)")
    ap.add_argument("--only", help="comma-separated cases: relu-deep, tanh-deep, relu, tanh, scale (default all)")
    ap.add_argument("--methods", help=f"comma-separated subset of {', '.join(METHODS)} (deepgeom and "
                    f"{REFERENCE} are always run)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--act", default="relu", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--scale", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.n, args.scale, args.act, args.out)
        return 0
    out = HERE / "out" / "cka"
    out.mkdir(parents=True, exist_ok=True)
    repeats = args.repeats or (1 if args.quick else 2)
    cols = ["method", "cpu_s", "cpu_ratio", "cka_ratio", "seconds", "wall_ratio", "peak_mb", "memory_ratio",
            "max_abs_diff", "nan", "error"]  # max_abs_diff: against deepgeom with float64 products
    print(f"bench_cka: {cpu_info()}; load {loadavg()}; batch {BATCH}; 1 thread per worker; best of {repeats}")
    results = {}
    configs = [("relu", True, 1024 if args.quick else 2560), ("tanh", True, 1024 if args.quick else 2560),
               ("relu", False, 2048 if args.quick else 5120), ("tanh", False, 1024 if args.quick else 2048)]
    only = set(args.only.split(",")) if args.only else None
    if args.methods:
        keep = set(args.methods.split(",")) | {"deepgeom", REFERENCE}
        for m in [m for m in METHODS if m not in keep]:
            del METHODS[m]
    for act, deep, n in configs:
        if only is not None and case_name(act, deep) not in only:
            continue
        rows = compare(n, act, deep, out, repeats)
        results[case_name(act, deep)] = {"n": n, "rows": rows, "load": loadavg()}
        print_table(rows, cols, title=f"{act} models ({rows[0].get('layers')} layers), N = {n}; ratios = method / "
                    f"deepgeom (load now {loadavg()})")
    ns = 4000 if args.quick else 10000
    if only is None or "scale" in only:
        r = call("deepgeom", ns, True, "relu", out / "scale.npy")
        results["scale"] = {"n": ns, "row": r, "load": loadavg()}
        print_table([r], ["method", "cpu_s", "seconds", "peak_mb", "layers", "error"],
                    title=f"scale: 2 models × 20+ layers × {ns} examples (deepgeom only), load {loadavg()}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
