"""The k-NN search as a sequence of named steps: validate, plan, search candidates, prove, search the
uncertain rows again (:func:`knn`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..._validation import check_matrix, check_positive_int, is_memmap
from ...errors import InputError
from ..matrix import DEFAULT_BLOCK_BYTES, as_tensor, block_size_for, resolve_device
from ._error_model import U32, U64, _search_error, _unit_scale
from ._quantized import int8_against_all, int8_available, int8_symmetric_search, quantize_rows
from ._refine import _exact_rows, _refine, _rounding_radius
from ._result import Neighbors
from ._search import (
    _centre_in_memory,
    _d2_block,
    _fast_bf16_cpu,
    _mean_and_max,
    _progress_bar,
    _slab_search,
    _squared_norms,
    _stats_pass,
    _symmetric_search,
)
from ._tree import TREE_MAX_DIM, TREE_MIN_ROWS, _tree_search


def knn(
    X: Any,
    k: int = 2,
    *,
    device: str | torch.device | None = None,
    block_rows: int | None = None,
    block_features: int | None = None,
    margin: int = 8,
    memory_bytes: int = DEFAULT_BLOCK_BYTES,
    search: str = "auto",
    method: str = "auto",
    progress: bool | None = None,
) -> Neighbors:
    r"""Exact k nearest neighbours (Euclidean) of each row of X among the other rows.

    The brute-force search of every k-NN ID estimator (Facco et al. 2017 TwoNN; Levina & Bickel
    2004 MLE; Denti et al. 2022 GRIDE), done as blocked matrix products with a proof of exactness.

    **Algorithm.** With :math:`\mu` the float64 column mean, :math:`\tilde x_i = \mathrm{fl}_{32}(X_i-\mu)`
    and :math:`s_i = \|\tilde x_i\|^2` (float64), candidates are the :math:`K=k+m` smallest of

    .. math:: \hat d^2_{ij} = \mathrm{fl}_{32}\big(s_i + s_j - 2\,\tilde x_i\cdot\tilde x_j\big),

    computed block pair by block pair (each symmetric pair once).  The candidates' distances are then
    recomputed exactly as :math:`d_{ij} = \big(\sum_f (X_{if}-X_{jf})^2\big)^{1/2}` in float64 from the
    original rows (0.0 exactly for duplicate rows) and re-sorted (ties: smaller index first).

    **Why it is exact (the margin proof).**  A float32 dot product of :math:`h` terms, in any
    summation order, errs by at most :math:`\gamma_h\,|\tilde x_i|\,|\tilde x_j| \le
    \tfrac{\gamma_h}{2}(s_i+s_j)` with :math:`\gamma_h = hu/(1-hu)`, :math:`u=2^{-24}` (Higham,
    *Accuracy and Stability of Numerical Algorithms*, §3.1); products are accumulated over feature
    chunks of at most ``block_features`` columns, so :math:`h \le D_c + \lceil D/D_c\rceil`.  With the
    roundings of the norms and the additions, :math:`|\hat d^2_{ij} - \|\tilde x_i-\tilde x_j\|^2|
    \le \varepsilon_{ij} = (\gamma_h + 8u)(s_i+s_j)`.  Rounding the centred data moves each point by
    at most :math:`e_i \approx u\sqrt{s_i}`, so the true distance satisfies
    :math:`d_{ij} \ge \sqrt{\hat d^2_{ij}-\varepsilon_{ij}} - e_i - e_j`.  Every point outside the
    candidates has :math:`\hat d^2_{ij} \ge T_i`, the K-th candidate value, hence if

    .. math:: \sqrt{T_i - (\gamma_h+8u)(s_i + \max_j s_j)} - e_i - \max_j e_j \;>\; d_{i,(k)},

    (the k-th exact distance; strict, so that no outside point can tie it with a smaller index), no
    outside point can be nearer than the k-th found one and row
    :math:`i` is exact.  Rows where this fails (near-ties at the scale of the float32 error) are
    searched again in float64 with the same refinement and the same proof at :math:`u=2^{-53}`, and
    rows even that cannot certify (tight clusters far from the mean) get every distance from float64
    differences; their number is ``n_fallback``.  Before the search the centred data are scaled by a
    power of two so that every value is below 1 in magnitude (exact): no square overflows float32,
    and the error model's absolute term covers subnormal values.

    **bfloat16 products.** The same proof holds for a search with bf16 operands (float32
    accumulation, bf16 result) once :math:`(\gamma_h+8u)` is replaced by that search's bound,
    :math:`\approx 3\cdot 2^{-8}` plus an absolute term for flushed subnormals (:func:`_search_error`;
    checked pair by pair in the tests).  The bound is ~10⁵ times wider, so ``search="auto"`` first
    proves a pilot of 256 rows and keeps float32 when more than 10% of them stay uncertain (data whose
    neighbour distances are nearly equal: high intrinsic dimension, tight clusters); rows a bf16 pass
    cannot certify are searched again in float32, then float64.

    **int8 products** (:mod:`._quantized`; CPUs without native bf16, where oneDNN's integer
    products run at about twice float32's rate).  Rows are quantized with a step per row,
    :math:`\hat x_i = \sigma_i q_i`, :math:`|q_i| \le 63`; the integer products are exact, so
    :math:`\hat d^2_{ij}` is :math:`\|\hat x_i - \hat x_j\|^2` up to a few float32 roundings, and
    :math:`e_i` above becomes the quantization residual :math:`\|x_i - \hat x_i\|` (bounded per row),
    with the same proof, pilot and fallbacks as bf16.

    Only candidates that can still be among the k nearest (lower bound ≤ the k-th upper bound) are
    refined, so refinement costs about k+1 differences per row.

    **Memory.** The centred float32 copy of X plus one B×W float32 strip of the distance matrix
    (``block_rows`` = B, W ≤ ``memory_bytes``/(12·B)) in memory (int8: two N×D byte copies instead of
    the float32 one, the unsigned rows and oneDNN's packed blocks, and R×512 strips,
    R ≤ ``memory_bytes``/(12·512); a float32 search after it makes the float32 copy then); for a memmap an R×N slab
    accumulated over feature chunks (streamed from disk, never loaded whole) with
    R×N×4 ≤ ``memory_bytes`` (one slab for all rows: only its upper block triangle is multiplied).
    Refinement gathers pair batches within ``memory_bytes``.  Never an N×N×D tensor; no loop over
    points (only over blocks).

    **Cost.** About N²·D float32 flops (each unordered pair once; the diagonal squares are split
    down to 128-row squares, so the extra is a fraction 128/N) and ≈ k·N·D float64 operations for
    the refinement, run in cache-sized batches: the float32 products dominate (measured split in
    BENCHMARKS.md).

    Args:
        X: (N, D) numpy array, torch tensor or numpy memmap (streamed).
        k: neighbours per point (1 ≤ k ≤ N−1).
        device: ``None``/``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present; same results).
        block_rows: rows per block of the distance matrix (default 1024; the row block meets column
            chunks of up to ``memory_bytes``/(12·B) columns).
        block_features: feature columns per product chunk (bounds h above; default 4096).
        margin: extra candidates m kept per row beyond k (more → fewer fallback rows).
        memory_bytes: working-memory budget for one block/slab.
        search: dtype of the candidate products: ``"float32"``, ``"bfloat16"``, ``"int8"`` or
            ``"auto"`` (for in-memory data with D ≥ 256 on a CPU: bfloat16 where the CPU multiplies
            it natively — AVX512-BF16/AMX, about twice float32's rate — else int8 where torch has
            oneDNN's int8 products, each after its pilot; else float32).  ``"int8"`` on a GPU or
            without oneDNN searches in float32.  The answer is the same exact one: only the error
            bound of the proof changes, and rows it cannot certify are searched again in float32,
            then float64 (a bf16 or int8 pass that leaves over a quarter of the rows uncertain is
            replaced by a whole float32 search).
        method: ``"matrix"`` (the blocked products above, O(N²D)), ``"tree"`` (a k-d tree,
            :func:`_tree_search`: O(N log N) in low dimension, same exact distances, same tie rule) or
            ``"auto"``: the tree for D ≤ ``TREE_MAX_DIM`` (8) and N ≥ ``TREE_MIN_ROWS`` (4,096) when its
            float64 copy of the data (N·D·8 bytes) fits in 4 × ``memory_bytes``, else the matrix.
        progress: a progress bar on stderr; ``None`` shows one when the search is expected to take
            more than about 3 s on a 2-core CPU (N²/2 pairs at ~10⁻¹¹·D + 2·10⁻⁸ s each on the matrix
            route, N ≥ 2¹⁸ rows on the tree).

    Returns:
        :class:`Neighbors` with (N, k) float64 distances and int64 indices, nearest first.

    Example:
        >>> import numpy as np
        >>> nb = knn(np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32), k=2)
        >>> nb.distances.tolist(), nb.indices.tolist()
        ([[1.0, 3.0], [1.0, 2.0], [2.0, 3.0], [4.0, 6.0]], [[1, 2], [0, 2], [1, 0], [2, 1]])
    """
    streamed = is_memmap(X)
    X, k, margin = _validate(X, k, margin)
    n, d = X.shape
    dev = resolve_device(device)
    sdt = _search_dtype(search, dev, d)  # validated for every input; memmaps search in float32
    plan = _plan(n, d, k, margin, block_features, memory_bytes)
    if _use_tree(method, n, d, memory_bytes):
        return _tree_search(X, k, margin, dev, memory_bytes, plan.Dr, progress)
    # expected seconds on a 2-core CPU: ~1e-11 s per product flop plus ~2e-8 s per pair for the
    # top-k merges (N = 20,000, D = 1 takes seconds although its products are trivial)
    bar = _progress_bar(progress, n * n / 2 * (d * 1e-11 + 2e-8) >= 3.0, n * (n + 1) // 2, "knn")
    if streamed:
        cand = _search_streamed(X, plan, dev)
    else:
        cand = _search_in_memory(X, plan, dev, sdt, search, block_rows, bar)
    dist, idx, ok = _prove_first(cand, plan, dev)
    n_fallback = int((~ok).sum())
    _search_uncertain_again(cand, plan, dev, dist, idx, ok)
    if bar is not None:
        bar.close()
    return Neighbors(distances=dist.cpu().numpy(), indices=idx.cpu().numpy(), n_fallback=n_fallback)


def ensure_neighbors(data: Any, k: int, **knn_options: Any) -> Neighbors:
    """Neighbors for ``k``: reuse a precomputed :class:`Neighbors` (first k columns) or search ``data``.

    This is how estimators accept either the data or one shared search result.
    """
    if isinstance(data, Neighbors):
        return data.take(k) if data.k != k else data
    return knn(data, k, **knn_options)


# ----------------------------------------------------------------------------------------------
# the steps


@dataclass(frozen=True)
class _Plan:
    """Sizes of one search, fixed before it starts."""

    n: int
    d: int
    k: int
    margin: int
    K: int  #: candidates kept per row (k + margin, at most N − 1)
    complete: bool  #: every other row is a candidate: nothing is left to prove
    Dc: int  #: feature columns per product chunk
    chunks: int  #: feature chunks of the products
    h: int  #: depth of the accumulated dot products (the error model's h)
    Dr: int  #: feature columns per refinement chunk
    budget: int  #: memory_bytes


@dataclass
class _Candidates:
    """The first candidate search: the rows exact distances come from, the search's units, and the
    K smallest approximate squared distances per row."""

    src: Any  #: the original rows (a memmap, or a tensor on the device)
    mean: torch.Tensor  #: float64 column mean (the centring)
    scale: float  #: the power of two the centred data were multiplied by
    sq: torch.Tensor  #: float64 squared norms of the searched rows (rounded or quantized, scaled, centred)
    radius: torch.Tensor  #: per row, how far the searched point can be from the true one (:func:`_refine`)
    values: torch.Tensor
    indices: torch.Tensor
    dtype: torch.dtype  #: dtype of the products
    h: int
    chunks: int  #: feature chunks of the running sums (1 for the slab search)
    Xc: torch.Tensor | None = None  #: centred float32 rows (in memory: a float32 search after bf16/int8)
    Xc_sq: torch.Tensor | None = None  #: their float64 squared norms
    B: int = 0  #: row block of the symmetric search
    W: int = 0  #: column chunk of the symmetric search
    #: the int8 search's :func:`_mean_and_max` of ``src``, for a float32 search after it
    stats: tuple[torch.Tensor, float] | None = None


def _validate(X: Any, k: Any, margin: Any) -> tuple[Any, int, int]:
    X = check_matrix(X, "X", min_rows=2, check_finite=False)
    k = check_positive_int(k, "k")
    margin = check_positive_int(margin, "margin", minimum=0)
    n = X.shape[0]
    if n < k + 1:
        raise InputError(f"k={k} neighbours need at least k+1 = {k + 1} points (rows); got N={n}")
    _check_exact_integers(X)
    return X, k, margin


def _search_dtype(search: str, dev: torch.device, d: int) -> torch.dtype:
    """The candidate-product dtype for ``search`` (see :func:`knn`)."""
    if search not in ("auto", "float32", "bfloat16", "int8"):
        raise InputError(f"search must be 'auto', 'float32', 'bfloat16' or 'int8'; got {search!r}")
    if search == "float32":
        return torch.float32
    if search == "int8":  # oneDNN's int8 products run on the CPU only
        return torch.int8 if dev.type == "cpu" and int8_available() else torch.float32
    if dev.type == "cuda" and bool(torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction):
        # cuBLAS may then round partial sums to bf16, which the error model does not cover
        return torch.float32
    if search == "bfloat16":
        return torch.bfloat16
    if dev.type != "cpu" or d < 256:
        return torch.float32
    if _fast_bf16_cpu():
        return torch.bfloat16
    return torch.int8 if int8_available() else torch.float32


#: product dtypes whose wider error bound may leave rows a float32 search would certify
_REDUCED = (torch.bfloat16, torch.int8)


def _plan(n: int, d: int, k: int, margin: int, block_features: int | None, memory_bytes: int) -> _Plan:
    K = min(n - 1, k + margin)
    Dc = min(d, check_positive_int(block_features, "block_features") if block_features else 4096)
    chunks = math.ceil(d / Dc)
    # refinement streams feature chunks of this width in both paths, so memmap and in-memory agree bitwise
    Dr = max(1, min(d, memory_bytes // (n * 8)))
    return _Plan(n=n, d=d, k=k, margin=margin, K=K, complete=K == n - 1, Dc=Dc, chunks=chunks,
                 h=min(d, Dc) + chunks, Dr=Dr, budget=memory_bytes)


def _use_tree(method: str, n: int, d: int, memory_bytes: int) -> bool:
    """The k-d tree for ``method="tree"``, or for ``"auto"`` on low-dimensional data whose float64
    copy fits in 4 × ``memory_bytes``."""
    if method not in ("auto", "matrix", "tree"):
        raise InputError(f"method must be 'auto', 'matrix' or 'tree'; got {method!r}")
    return method == "tree" or (method == "auto" and d <= TREE_MAX_DIM and n >= TREE_MIN_ROWS
                                and n * d * 8 <= 4 * memory_bytes)


def _search_streamed(X: Any, plan: _Plan, dev: torch.device) -> _Candidates:
    """A memmap: statistics in one streamed pass, then float32 slabs over feature chunks."""
    mean, amax = _stats_pass(X, block_size_for(plan.d, 8, plan.budget))
    mean = mean.to(dev)
    scale = _unit_scale(amax)
    v, i, sq, h = _slab_search(X, torch.arange(plan.n), mean, plan.K, torch.float32, dev, plan.budget, plan.Dc,
                               None, scale)
    return _Candidates(src=X, mean=mean, scale=scale, sq=sq, radius=_rounding_radius(sq, U32), values=v, indices=i,
                       dtype=torch.float32, h=h, chunks=1)


def _search_in_memory(X: Any, plan: _Plan, dev: torch.device, sdt: torch.dtype, search: str,
                      block_rows: int | None, bar: Any) -> _Candidates:
    """In memory: centre and scale, then the symmetric block search in ``sdt`` (bf16 or int8 only when
    a pilot says it will certify the data, for ``search="auto"``)."""
    n, d = plan.n, plan.d
    src = as_tensor(X).to(dev)
    B = max(1, min(n, check_positive_int(block_rows or 1024, "block_rows"), int(math.sqrt(plan.budget / 12))))
    W = max(B, min(n, plan.budget // (12 * B)))
    stats = None
    if sdt == torch.int8:
        stats = _mean_and_max(src, dev, block_size_for(d, 8, plan.budget))  # shared with a float32 search after it
        cand = _search_int8(src, plan, dev, search, B, W, bar, stats)
        if cand is not None:
            return cand
        sdt = torch.float32
    mean, Xc, scale, sq = _centred_copy(src, plan, dev, stats)
    radius = _rounding_radius(sq, U32)
    if sdt == torch.bfloat16 and float(sq.max()) < 1e-30:  # all but vanishing after flushing
        sdt = torch.float32
    Xs = Xc if sdt == torch.float32 else Xc.to(sdt)
    if sdt == torch.bfloat16 and search == "auto":
        sq32 = sq.to(torch.float32)
        err = _search_error(torch.bfloat16, plan.h, dev, d, plan.chunks)
        if not _pilot(src, lambda rows: _d2_block(Xs[rows], Xs, sq32[rows], sq32, plan.Dc), sq, radius, err, plan, dev,
                      scale):
            sdt, Xs = torch.float32, Xc
    v, i = _symmetric_search(Xs, sq, plan.K, B, W, plan.Dc, bar)
    return _Candidates(src=src, mean=mean, scale=scale, sq=sq, radius=radius, values=v, indices=i, dtype=sdt,
                       h=plan.h, chunks=plan.chunks, Xc=Xc, Xc_sq=sq, B=B, W=W)


def _centred_copy(src: torch.Tensor, plan: _Plan, dev: torch.device, stats: tuple[torch.Tensor, float] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """(mean, centred scaled float32 rows, their power-of-two scale, their float64 squared norms);
    ``stats``: the rows' :func:`_mean_and_max`, when already computed."""
    br = block_size_for(plan.d, 8, plan.budget)
    mean, Xc, scale = _centre_in_memory(src, dev, br, stats)
    return mean, Xc, scale, _squared_norms(Xc, dev, br)


def _search_int8(src: torch.Tensor, plan: _Plan, dev: torch.device, search: str, B: int, W: int,
                 bar: Any, stats: tuple[torch.Tensor, float]) -> _Candidates | None:
    """The int8 search (:mod:`._quantized`), or None when its pilot says the bound will not certify
    this data.  The rows are centred, scaled and quantized block by block from the input: no float32
    copy of the data is made (a float32 search after it makes its own, :func:`_prove_first`).
    ``stats``: the rows' :func:`_mean_and_max`, computed by the caller so that a float32 fallback
    reuses it."""
    n, d = plan.n, plan.d
    mean, xmax = stats
    # |x − mean| ≤ max|x| + max|mean|: a power of two that keeps every centred value within 1
    scale = _unit_scale(xmax + float(mean.abs().max()))

    def centred(r0: int, r1: int) -> torch.Tensor:  # float64 difference, exact scaling, one rounding
        return ((src[r0:r1].to(torch.float64) - mean) * scale).to(torch.float32)

    qr = quantize_rows(centred, n, d, n)
    radius = qr.radius + _rounding_radius(qr.sq_x, U32)  # quantized → centred float32 → true centred point
    err = _search_error(torch.int8, 0, dev, d, len(qr.u))
    if search == "auto" and not _pilot(src, lambda rows: int8_against_all(qr, rows), qr.sq, radius, err, plan, dev,
                                       scale):
        return None
    v, i = int8_symmetric_search(qr, plan.K, plan.budget, bar)
    return _Candidates(src=src, mean=mean, scale=scale, sq=qr.sq, radius=radius, values=v, indices=i,
                       dtype=torch.int8, h=plan.h, chunks=len(qr.u), B=B, W=W, stats=stats)


def _prove(c: _Candidates, plan: _Plan, dev: torch.device, rows: torch.Tensor, values: torch.Tensor,
           indices: torch.Tensor, sq: torch.Tensor, dtype: torch.dtype, h: int, radius: torch.Tensor, complete: bool,
           chunks: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_refine` with the error model of a search in ``dtype`` of depth ``h``."""
    return _refine(c.src, rows, values, indices, sq, plan.k, _search_error(dtype, h, dev, plan.d, chunks), radius,
                   dev, plan.budget, plan.Dr, complete, c.scale)


def _prove_first(c: _Candidates, plan: _Plan, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine and prove every row's candidates; a bf16 or int8 search that leaves over a quarter of the
    rows uncertain could not separate the neighbours of this data and is replaced by one float32 search."""
    all_rows = torch.arange(plan.n, device=dev)
    dist, idx, ok = _prove(c, plan, dev, all_rows, c.values, c.indices, c.sq, c.dtype, c.h, c.radius, plan.complete,
                           c.chunks)
    if c.dtype in _REDUCED and int((~ok).sum()) > plan.n // 4:
        if c.Xc is None:  # the int8 search kept no float32 copy
            c.mean, c.Xc, c.scale, c.Xc_sq = _centred_copy(c.src, plan, dev, c.stats)
        c.values, c.indices = _symmetric_search(c.Xc, c.Xc_sq, plan.K, c.B, c.W, plan.Dc)
        c.dtype, c.sq, c.radius, c.chunks = torch.float32, c.Xc_sq, _rounding_radius(c.Xc_sq, U32), plan.chunks
        dist, idx, ok = _prove(c, plan, dev, all_rows, c.values, c.indices, c.sq, c.dtype, c.h, c.radius, plan.complete,
                               c.chunks)
    c.Xc = None  # the centred copy is not needed beyond this point
    return dist, idx, ok


def _search_uncertain_again(c: _Candidates, plan: _Plan, dev: torch.device, dist: torch.Tensor, idx: torch.Tensor,
                            ok: torch.Tensor) -> None:
    """Rows the first search could not certify (in place): a float32 slab search (after bf16 or int8),
    then float64, then, for rows even float64 products cannot separate, every distance from differences."""
    n = plan.n
    K2 = min(n - 1, plan.k + max(2 * plan.margin, 16))
    for dtype, u_data in ((torch.float32, U32), (torch.float64, U64)):
        if bool(ok.all()) or (dtype == torch.float32 and c.dtype not in _REDUCED):
            continue
        rows = (~ok).nonzero()[:, 0]
        v2, i2, sq2, h2 = _slab_search(c.src, rows, c.mean, K2, dtype, dev, plan.budget, plan.Dc, None, c.scale)
        dist[rows], idx[rows], ok[rows] = _prove(c, plan, dev, rows, v2, i2, sq2, dtype, h2,
                                                 _rounding_radius(sq2, u_data), K2 == n - 1)
    if not bool(ok.all()):
        rows = (~ok).nonzero()[:, 0]
        dist[rows], idx[rows] = _exact_rows(c.src, rows, plan.k, dev, plan.budget, plan.Dr, c.scale)


def _check_exact_integers(X: Any) -> None:
    """Integer data are computed on in float64: refuse values that float64 cannot hold exactly."""
    dt = X.dtype
    is_int = (not dt.is_floating_point and dt != torch.bool) if isinstance(dt, torch.dtype) else np.issubdtype(dt, np.integer)
    if not is_int or np.dtype(str(dt).replace("torch.", "")).itemsize < 8:
        return
    big = 2**53
    for s0 in range(0, X.shape[0], 65536):
        blk = X[s0 : s0 + 65536]
        m = int(blk.abs().max()) if isinstance(blk, torch.Tensor) else int(np.abs(np.asarray(blk)).max())
        if m > big:
            raise InputError(f"X holds integers beyond 2**53 (|x| = {m}), which float64 cannot represent exactly; "
                             "convert them to floating point yourself if rounding is acceptable")


def _pilot(src: torch.Tensor, strip: Any, sq: torch.Tensor, radius: torch.Tensor, err: tuple[float, float],
           plan: _Plan, dev: torch.device, scale: float, m: int = 256, max_uncertain: float = 0.1) -> bool:
    """Will a reduced-precision search (bf16, int8) certify this data?  ``strip(rows)`` gives the
    searched squared distances of ``m`` evenly spaced rows against all (about m/N of the whole
    search's work); they are proved with that search's error model ``err`` and ``radius``, and the
    answer is True when at most ``max_uncertain`` of them stay uncertain.  Data whose neighbour
    distances are too alike for the wider bound (high intrinsic dimension, tight clusters, features
    of very different scales for int8) then go straight to float32."""
    n = plan.n
    m = min(m, plan.budget // (8 * n))  # the pilot's m × N strip stays within the memory budget
    if n <= 2 * m or m < 16:
        return True
    rows = torch.linspace(0, n - 1, m, device=dev).long()
    d2 = strip(rows)
    d2[torch.arange(m, device=dev), rows] = math.inf
    v, i = torch.topk(d2, plan.K, dim=1, largest=False, sorted=True)
    _, _, ok = _refine(src, rows, v, i, sq, plan.k, err, radius, dev, plan.budget, plan.Dr, False, scale)
    return float((~ok).float().mean()) <= max_uncertain
