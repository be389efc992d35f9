"""All-pairs CKA heatmap of two models: deepgeom vs pytorch-cka, torch-cka and ckatorch, same models, same data.

    python bench/bench_cka.py            # every case at 1 and 2 threads, + 2 models × 20+ layers × 10,000
    python bench/bench_cka.py --quick    # smaller N, one repeat
    python bench/bench_cka.py --smoke    # N = 512 everywhere, one repeat, no scale case: seconds per case
    python bench/bench_cka.py --only resmlp --methods deepgeom,pytorch-cka --threads 2   # parts

Model pairs (mnist1d-shaped Gaussian inputs, 40 features):

* MLP (width 256) + 1-D CNN (32 channels on length 40, D = 1,280 per layer), every activation output
  plus the logits: 23 × 21 layers (``relu-deep``, ``tanh-deep``; 22 and 20 hidden) and 13 × 9 layers
  (``relu``, ``tanh``; 12 and 8 hidden).
* ``resmlp`` (issue 17): two residual ReLU MLPs, 22 and 17 hidden layers of width 512 and 1,024
  (a ReLU stem, then blocks h ← ReLU(h + W h + b)), every hidden layer, N = 3,072. The residual sums
  give the layers a growing common offset (mean / std 0.7 at the stem, 5.3 at the 22nd layer), as in
  trained residual networks: the case where float32 HSIC₁ on uncentred Grams loses digits.

Minibatch CKA with batch 256 (Nguyen et al. 2021), one pass in a fixed order, all L_a × L_b pairs.

* deepgeom: ``cka_matrix(model_a, model_b, x, batch_size=256)`` — one pass, U-centred kernels per
  batch, all pairs from one matrix product, float64 HSIC terms and sums; its default
  ``compute_dtype="auto"`` runs the Gram products of these float32 activations in float32 after
  centring. "deepgeom-f64" forces float64 products: the reference every ``max |Δ|`` is taken against
  (ckatorch, float64 throughout, agrees with it to 1e-13 on the non-residual pairs).
* forward only: the two models run over the same batches and nothing else — the floor every method
  pays. ``beyond_fwd`` is a method's time minus this (what its CKA work costs) and ``beyond_ratio``
  the ratio of that to deepgeom's.
* pytorch-cka 1.1.3 (``import cka``): ``compute_cka(a, b, loader, layers=…, model2_layers=…)`` with an
  unshuffled loader: float32 Grams of all layers stacked, HSIC₁ of all pairs from one einsum on the
  uncentred Grams, result clamped to [0, 1] (docs/similarity.md lists its defects).
* torch-cka 0.21: ``CKA(...).compare(loader)`` with an unshuffled loader and the layers listed (its
  defaults would hook every module and zip a shuffled loader with itself). It computes HSIC₁ in
  float32 on uncentred Grams, pair by pair (three n×n×n products per pair per batch).
* ckatorch 1.0.3: its ``CKA`` class cannot take (B, D) layer outputs (``torch.bmm`` needs 3-D) and
  overwrites its matrix every batch (only the last batch of each epoch counts), so the anchor is its
  own minibatch function ``ckatorch.core.cka_batch`` on every layer pair, with all activations held as
  (n_batches, B, D) stacks (captured with forward hooks in the same single pass).

**Roofline** (deepgeom rows): the time its necessary products would take at this machine's matmul
rates, measured in the same run with the same thread count ((2,048 × 4,096)·(4,096 × 2,048)
products): per batch of B rows, one symmetric Gram product per layer, B(B+1)·D flops, at the float32
rate (float64 for deepgeom-f64), and the all-pairs product of the flattened U-centred kernels,
2·L_a·L_b·B² flops, at the float64 rate. ``roofline`` = that time / ``beyond_fwd``: 1 would mean the
CKA work ran at the matmul rate with nothing else around it.

Each method runs in a fresh subprocess with ``torch.set_num_threads(T)`` for each T in ``--threads``
(fair peak memory: anonymous RSS above the level after the models and data are loaded, sampled
every 20 ms), methods interleaved and repeated, the fastest run of each kept (``ratio``). Each
round also gives a paired ratio, method / deepgeom from runs seconds apart: ``paired_median``, its
``paired_range`` over the rounds and ``slower_rounds`` (rounds in which the method was slower than
deepgeom) say whether a lead outlasts this VM's swings (±20–50% between runs). With one thread the
times compared are **CPU times** (on a shared machine wall times of sequential runs swing 2–4× with
others' load, one thread's CPU time does not); with more threads, wall times. Both are printed.
ReLU pairs have a positive common offset (the realistic case, where float32 libraries lose digits),
tanh pairs none (every library is right, so the values must agree).
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

from _common import PeakMemory, cpu_flags, cpu_info, cpu_kind, loadavg, matmul_gflops, print_table  # noqa: E402

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


def resmlp_models():
    """Two residual ReLU MLPs (issue 17): 22 hidden layers of width 512 and 17 of width 1,024.

    Hidden layer 1 is a stem ReLU(W x + b); each further one a block h ← ReLU(h + W h + b) (the
    ResNet form, one Linear per block). Stem weights He-normal, block weights N(0, 1/w), zero biases:
    the spread grows ~1.2× per block and its common offset with it (mean / std 0.7 → 5.3).
    """
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, w: int):
            super().__init__()
            self.fc, self.act = nn.Linear(w, w), nn.ReLU()

        def forward(self, h):
            return self.act(h + self.fc(h))

    class ResMLP(nn.Module):
        def __init__(self, width: int, hidden: int):
            super().__init__()
            self.stem = nn.Sequential(nn.Linear(40, width), nn.ReLU())
            self.blocks = nn.Sequential(*[Block(width) for _ in range(hidden - 1)])
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    torch.manual_seed(0)
    out = []
    for width, hidden in ((512, 22), (1024, 17)):
        m = ResMLP(width, hidden)
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                gain = 2**0.5 if mod is m.stem[0] else 1.0
                nn.init.normal_(mod.weight, std=gain / mod.weight.shape[1]**0.5)
                nn.init.zeros_(mod.bias)
        out.append((m.eval(), ["stem"] + [f"blocks.{i}" for i in range(hidden - 1)]))
    (a, la), (b, lb) = out
    return a, b, la, lb


def build(arch: str, scale: bool, act: str):
    """The model pair of a case: ``arch`` "mlp-cnn" (``scale`` = the 23 × 21 depth) or "resmlp"."""
    return resmlp_models() if arch == "resmlp" else models(scale, act)


def layer_widths(model, names, x) -> list[int]:
    """Features per recorded layer (one forward pass of a few rows with hooks)."""
    import torch

    widths: dict[str, int] = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda _m, _i, out, n=n: widths.__setitem__(n, out[0].numel()))
             for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [widths[n] for n in names]


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


def run_pytorch_cka(a, b, la, lb, x):
    from cka import compute_cka
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=False)
    # rows and columns come in the order of the layer lists given (its layer dict keeps that order)
    return compute_cka(a, b, loader, layers=la, model2_layers=lb, device="cpu", progress=False)[0].numpy()


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


METHODS = {"deepgeom": run_deepgeom, "deepgeom-f64": run_deepgeom64, "pytorch-cka": run_pytorch_cka,
           "torch-cka": run_torch_cka, "ckatorch": run_ckatorch, "forward only": run_forward}
IMPORTS = {"deepgeom": "deepgeom.analysis.similarity", "deepgeom-f64": "deepgeom.analysis.similarity",
           "pytorch-cka": "cka", "torch-cka": "torch_cka", "ckatorch": "ckatorch.core", "forward only": "torch"}
#: the values every method is compared with: deepgeom with float64 Gram products
REFERENCE = "deepgeom-f64"


def worker(method: str, n: int, scale: bool, act: str, arch: str, threads: int, out: str) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import importlib

    importlib.import_module(IMPORTS[method])  # library import time is not part of the measurement
    a, b, la, lb = build(arch, scale, act)
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


def call(method: str, n: int, scale: bool, act: str, arch: str, threads: int, out: Path) -> dict:
    p = subprocess.run([sys.executable, __file__, "--worker", method, "--n", str(n), "--act", act, "--arch", arch,
                        "--threads", str(threads), "--out", str(out)] + (["--scale"] if scale else []),
                       capture_output=True, text=True, check=False)
    if p.returncode:
        return {"method": method, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def case_name(act: str, deep: bool, arch: str = "mlp-cnn") -> str:
    """A case's name in --only, results.json and the saved matrices: relu, tanh-deep, resmlp, ..."""
    return "resmlp" if arch == "resmlp" else f"{act}{'-deep' if deep else ''}"


def matmul_rates(threads: int, smoke: bool) -> dict:
    """float32 and float64 GFLOP/s of a large product with ``threads`` threads, measured now."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        n, d = (512, 1024) if smoke else (2048, 4096)
        return {dt: matmul_gflops(n, d, repeat=3, dtype=dt) for dt in ("float32", "float64")}
    finally:
        torch.set_num_threads(before)


def roofline_seconds(n: int, widths_a: list[int], widths_b: list[int], rates: dict, f64: bool) -> float:
    """Seconds the necessary products take at the measured matmul rates (see the module docstring)."""
    r32 = rates["float64" if f64 else "float32"] * 1e9
    r64 = rates["float64"] * 1e9
    total = 0.0
    for s in range(0, n, BATCH):
        B = min(BATCH, n - s)
        if B < 4:
            continue  # left out by every method
        total += B * (B + 1) * (sum(widths_a) + sum(widths_b)) / r32
        total += 2.0 * len(widths_a) * len(widths_b) * B * B / r64
    return total


def compare(n: int, act: str, deep: bool, arch: str, threads: int, out: Path, repeats: int,
            rates: dict) -> list[dict]:
    """Every method ``repeats`` times, interleaved (A B C A B C …); keep each method's fastest time, and
    each round's paired ratio method / deepgeom (runs seconds apart, so a slow spell of this shared
    VM hits both): its median, range and how many rounds deepgeom was the faster."""
    import numpy as np

    tag = f"{case_name(act, deep, arch)}-t{threads}"
    key = "cpu_s" if threads == 1 else "seconds"
    best: dict[str, dict] = {}
    paired: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(repeats):
        times = {}
        for m in METHODS:
            r = call(m, n, deep, act, arch, threads, out / f"{tag}-{m}.npy")
            if "error" not in r:
                times[m] = r[key]
            if m not in best or ("error" not in r and r[key] < best[m].get(key, float("inf"))):
                best[m] = r
        if "deepgeom" in times:
            for m, t in times.items():
                paired[m].append(t / times["deepgeom"])
    rows = [best[m] for m in METHODS]
    ref = np.load(out / f"{tag}-{REFERENCE}.npy")
    base = best["deepgeom"]
    fwd = best.get("forward only", {}).get(key)
    a, b, la, lb = build(arch, deep, act)
    x = data(4)
    wa, wb = layer_widths(a, la, x), layer_widths(b, lb, x)
    for r in rows:
        if "error" in r:
            continue
        r["time_s"] = r[key]
        if r["method"] != "forward only":
            M = np.load(out / f"{tag}-{r['method']}.npy")
            finite = np.isfinite(M)
            r["max_abs_diff"] = float(np.abs(M - ref)[finite].max()) if finite.any() else None
            r["nan"] = int((~finite).sum())  # torch-cka: float32 HSIC of ReLU features goes negative → NaN
        r["ratio"] = r[key] / base[key]
        if fwd is not None and r["method"] != "forward only":
            # what each method adds to the forward passes: its CKA work
            r["beyond_fwd"] = r[key] - fwd
            if base[key] > fwd:
                r["beyond_ratio"] = r["beyond_fwd"] / (base[key] - fwd)
            if r["method"] in ("deepgeom", "deepgeom-f64") and r["beyond_fwd"] > 0:
                r["roofline"] = roofline_seconds(n, wa, wb, rates, r["method"] == "deepgeom-f64") / r["beyond_fwd"]
        rounds = paired[r["method"]]
        if rounds and r["method"] != "deepgeom":
            r["paired_median"] = float(np.median(rounds))
            r["paired_range"] = f"{min(rounds):.2f}–{max(rounds):.2f}"
            r["slower_rounds"] = f"{sum(v > 1 for v in rounds)}/{len(rounds)}"  # rounds deepgeom was faster
        r["wall_ratio"] = r["seconds"] / base["seconds"]
        r["memory_ratio"] = r["peak_mb"] / max(base["peak_mb"], 1.0)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller N, one repeat")
    ap.add_argument("--smoke", action="store_true", help="N = 512 for every case, one repeat, no scale case "
                    "(checks that the script runs; the numbers mean little)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per method (default 2; quick 1)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts, one table each (default 1,2)")
    ap.add_argument("--only", help="comma-separated cases: relu-deep, tanh-deep, relu, tanh, resmlp, scale "
                    "(default all)")
    ap.add_argument("--methods", help=f"comma-separated subset of {', '.join(METHODS)} (deepgeom, "
                    f"{REFERENCE} and forward only are always run)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--act", default="relu", help=argparse.SUPPRESS)
    ap.add_argument("--arch", default="mlp-cnn", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--scale", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.n, args.scale, args.act, args.arch, int(args.threads), args.out)
        return 0
    out = HERE / "out" / "cka"
    out.mkdir(parents=True, exist_ok=True)
    repeats = args.repeats or (1 if args.quick or args.smoke else 2)
    thread_counts = [int(t) for t in args.threads.split(",")]
    cols = ["method", "time_s", "ratio", "paired_median", "paired_range", "slower_rounds", "beyond_fwd",
            "beyond_ratio", "roofline", "seconds", "cpu_s", "peak_mb",
            "max_abs_diff", "nan", "error"]  # max_abs_diff: against deepgeom with float64 products
    flags = cpu_flags()
    import torch

    print(f"bench_cka: {cpu_kind()}; torch {torch.__version__}; load {loadavg()}; batch {BATCH}; "
          f"best of {repeats}")
    results: dict = {"cpu": cpu_info(), "flags": flags, "rates": {}}
    rates = {}
    for t in thread_counts:
        rates[t] = matmul_rates(t, args.smoke)
        results["rates"][t] = rates[t]
        print(f"matmul rate, {t} thread(s): float32 {rates[t]['float32']:.1f} GFLOP/s, "
              f"float64 {rates[t]['float64']:.1f} GFLOP/s", flush=True)

    def size(full: int, quick: int) -> int:
        return 512 if args.smoke else quick if args.quick else full

    configs = [("relu", True, "mlp-cnn", size(2560, 1024)), ("tanh", True, "mlp-cnn", size(2560, 1024)),
               ("relu", False, "mlp-cnn", size(5120, 2048)), ("tanh", False, "mlp-cnn", size(2048, 1024)),
               ("relu", False, "resmlp", size(3072, 1536))]
    only = set(args.only.split(",")) if args.only else None
    if args.methods:
        keep = set(args.methods.split(",")) | {"deepgeom", REFERENCE, "forward only"}
        for m in [m for m in METHODS if m not in keep]:
            del METHODS[m]
    for act, deep, arch, n in configs:
        name = case_name(act, deep, arch)
        if only is not None and name not in only:
            continue
        for t in thread_counts:
            rows = compare(n, act, deep, arch, t, out, repeats, rates[t])
            results[f"{name}-t{t}"] = {"n": n, "threads": t, "rows": rows, "load": loadavg()}
            what = "CPU time of one thread" if t == 1 else f"wall time, {t} threads"
            print_table(rows, cols, title=f"{name} ({rows[0].get('layers')} layers), N = {n}, {what}; ratios = "
                        f"method / deepgeom (load now {loadavg()})")
    ns = 4000 if args.quick else 10000
    if (only is None and not args.smoke) or (only is not None and "scale" in only):
        r = call("deepgeom", ns, True, "relu", "mlp-cnn", 1, out / "scale.npy")
        results["scale"] = {"n": ns, "row": r, "load": loadavg()}
        print_table([r], ["method", "cpu_s", "seconds", "peak_mb", "layers", "error"],
                    title=f"scale: 2 models × 20+ layers × {ns} examples (deepgeom only, 1 thread), load {loadavg()}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
