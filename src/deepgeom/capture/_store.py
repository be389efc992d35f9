"""Collect streamed activations into per-layer arrays under a memory budget, spilling to ``.npy`` on disk.

Layers are kept in RAM while their (projected) total stays within ``memory_budget``; above it the
largest layer moves to an ``.npy`` file that is *appended to* batch by batch with ordinary file writes
and re-opened as a read-only ``np.memmap`` at the end. Appending (rather than writing into an
``np.lib.format.open_memmap`` map) matters for the memory claim: pages written through a shared map
stay counted in the process's resident set until the map is dropped, so a 5 GB layer written through
a map shows a 5 GB RSS even though the kernel can evict it; pages written with ``write(2)`` sit in the
page cache, which is not the process's memory. The file is a standard ``.npy`` (header rewritten with
the final shape on close), so ``np.load(path, mmap_mode="r")`` reads it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import atomic_write, atomic_write_text, replace_durably
from .._results import to_jsonable
from .._validation import load_npy
from ..errors import InputError, UnknownNameError
from ._layers import LayerSpec
from ._stream import n_examples, stream

__all__ = ["Capture", "UnknownLayerError", "capture", "load_capture", "parse_bytes", "MANIFEST", "LABELS_FILE"]

MANIFEST = "manifest.json"
LABELS_FILE = "labels.npy"
_FORMAT = "deepgeom-capture"
_RESERVED = {"manifest", "labels"}
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class UnknownLayerError(UnknownNameError, KeyError):
    """A layer that is not in the capture: an :class:`UnknownNameError` that is also a ``KeyError``, so
    ``Mapping.get`` and ``in`` work as for any mapping."""

    __str__ = Exception.__str__  # KeyError would print the message with quotes around it


def parse_bytes(value: int | float | str) -> int:
    """``"1GB"`` → 10⁹, ``"512MiB"`` → 512·2²⁰, ``"0"`` → 0, ``2_000_000`` → 2,000,000 (bytes).

    Decimal units (kB, MB, GB, TB; the ``B`` optional) and binary ones (KiB, MiB, GiB, TiB); case-insensitive.
    """
    if isinstance(value, bool):
        raise InputError(f"memory_budget must be a size such as '1GB' or a number of bytes; got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        if not np.isfinite(value) or value < 0:
            raise InputError(f"memory_budget must be a non-negative size; got {value!r}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"memory_budget must be a size such as '1GB', '512MiB' or a number of bytes; "
                         f"got {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _safe_filenames(names: list[str]) -> dict[str, str]:
    """Layer name → file name ``<name>.npy`` with only ``[A-Za-z0-9._-]``, unique and never hidden."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "layer"
        if stem.lower() in _RESERVED:
            stem += "_layer"
        cand, k = stem, 2
        while cand.lower() in used:
            cand, k = f"{stem}-{k}", k + 1
        used.add(cand.lower())
        out[name] = cand + ".npy"
    return out


class _NpyAppender:
    """Write an (n, ncols) ``.npy`` row block by row block, with plain writes; shape fixed on close."""

    HEADER = 256  # bytes (magic + length + dict), room for any 2-D shape; a multiple of 64 as .npy asks

    def __init__(self, path: Path, dtype: np.dtype, ncols: int):
        self.path, self.dtype, self.ncols, self.rows = Path(path), np.dtype(dtype), int(ncols), 0
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._header()

    def _header(self) -> None:
        descr = np.lib.format.dtype_to_descr(self.dtype)
        d = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({self.rows}, {self.ncols}), }}"
        body = d.encode("latin1").ljust(self.HEADER - 10 - 1) + b"\n"
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.ncols:
            raise InputError(f"{self.path.stem}: a batch has shape {block.shape}; expected (rows, {self.ncols})")
        self.f.write(memoryview(block).cast("B"))
        self.rows += block.shape[0]

    def close(self) -> Path:
        self._header()
        self.f.close()
        replace_durably(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


class _LayerStore:
    """One layer's rows: a list of in-RAM blocks, or an ``.npy`` being appended to once spilled."""

    def __init__(self, name: str, ncols: int, dtype: np.dtype):
        self.name, self.ncols, self.dtype = name, ncols, np.dtype(dtype)
        self.blocks: list[np.ndarray] = []
        self.rows = 0
        self.writer: _NpyAppender | None = None

    @property
    def row_bytes(self) -> int:
        return self.ncols * self.dtype.itemsize

    def append(self, block: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.append(block)
        else:
            self.blocks.append(np.ascontiguousarray(block, dtype=self.dtype))
        self.rows += block.shape[0]

    def spill(self, path: Path) -> None:
        self.writer = _NpyAppender(path, self.dtype, self.ncols)
        while self.blocks:
            self.writer.append(self.blocks.pop(0))

    def finish(self) -> np.ndarray:
        if self.writer is not None:
            return np.load(self.writer.close(), mmap_mode="r")
        out = np.empty((self.rows, self.ncols), dtype=self.dtype)
        at = 0
        while self.blocks:  # copy block by block, freeing as we go: peak ≈ one layer + one block
            b = self.blocks.pop(0)
            out[at: at + b.shape[0]] = b
            at += b.shape[0]
        return out


class Capture(Mapping):
    """Captured layers: a read-only mapping ``layer → array (N, D)`` in forward order.

    Each value is an ``np.ndarray`` (kept in RAM) or a read-only ``np.memmap`` (spilled to disk under
    the memory budget, or loaded with :func:`load_capture`); both index like arrays.

    Attributes:
        layers: layer names in forward order (``"input"`` first, ``"output"`` last).
        shapes: ``{layer: (N, D)}``.
        relative_depth: ``{layer: depth in [0, 1]}`` — the layer's position in ``model.analysis_layers``
            (``i / (L - 1)``) when the model declares them and every captured layer is among them, else its
            rank in the order the captured layers first ran (``"input"`` 0, ``"output"`` 1, the others evenly
            between), i.e. relative to the captured selection.
        n: number of rows (examples; tokens under ``reduce="tokens"``).
        labels: per-row labels when the data carried them, else None.
        example_index: int64 array, the example each row came from.
        meta: free-form information saved in the manifest (model class, reduce mode, …).
        spilled: ``{layer: path}`` of the layers that live in ``.npy`` files.
    """

    def __init__(self, arrays: dict[str, np.ndarray], *, relative_depth: dict[str, float],
                 labels: np.ndarray | None = None, example_index: np.ndarray | None = None,
                 meta: dict[str, Any] | None = None, tmpdir: str | Path | None = None):
        self._arrays = dict(arrays)
        ns = {k: v.shape[0] for k, v in self._arrays.items()}
        if len(set(ns.values())) > 1:
            raise InputError(f"captured layers have different numbers of rows: {ns}")
        self.relative_depth = {k: float(relative_depth[k]) for k in self._arrays}
        self.labels = labels
        self.example_index = example_index
        self.meta = dict(meta or {})
        self._tmpdir = Path(tmpdir) if tmpdir is not None else None
        self._finalizer = (weakref.finalize(self, shutil.rmtree, str(self._tmpdir), True)
                           if self._tmpdir is not None else None)

    # Mapping protocol
    def __getitem__(self, layer: str) -> np.ndarray:
        try:
            return self._arrays[layer]
        except KeyError:
            raise UnknownLayerError("captured layer", layer, list(self._arrays)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def layers(self) -> list[str]:
        return list(self._arrays)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(int(s) for s in v.shape) for k, v in self._arrays.items()}

    @property
    def n(self) -> int:
        return int(next(iter(self._arrays.values())).shape[0]) if self._arrays else 0

    @property
    def spilled(self) -> dict[str, Path]:
        return {k: Path(v.filename) for k, v in self._arrays.items()
                if isinstance(v, np.memmap) and v.filename is not None}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {self.shapes[k]}" + (" [disk]" if k in self.spilled else "")
                          for k in self._arrays)
        return f"Capture(n={self.n}, {parts})"

    def save(self, directory: str | Path) -> Path:
        """Write one ``<layer>.npy`` per layer plus ``manifest.json`` to ``directory``; return its path.

        File names keep only ``[A-Za-z0-9._-]`` of the layer name (the manifest maps names to files).
        Every file is written under a temporary name and renamed into place, the manifest last, so a
        reader never sees a half-written capture. Layers already spilled into ``directory`` stay where
        they are (no copy); if ``directory`` is the temporary spill directory, it is kept.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files = _safe_filenames(self.layers)
        entries = []
        for name, arr in self._arrays.items():
            target = d / files[name]
            src = Path(arr.filename).resolve() if isinstance(arr, np.memmap) and arr.filename else None
            if src is None or src != target.resolve():
                if src is not None and src.suffix == ".npy" and _is_whole_npy(arr, src):
                    atomic_write(target, lambda t, src=src: shutil.copyfile(src, t))  # file to file, never loaded
                else:
                    atomic_write(target, lambda t, arr=arr: _save_npy(t, np.asarray(arr)))
            entries.append({"name": name, "file": files[name], "shape": list(self.shapes[name]),
                            "dtype": str(arr.dtype), "relative_depth": self.relative_depth[name],
                            "n": int(arr.shape[0])})
        labels_file = None
        if self.labels is not None:
            labels_file = LABELS_FILE
            _atomic_npy(d / LABELS_FILE, np.asarray(self.labels))
        if self.example_index is not None:
            _atomic_npy(d / "example_index.npy", np.asarray(self.example_index))
        manifest = {"format": _FORMAT, "version": 1, "n": self.n, "layers": entries, "labels": labels_file,
                    "example_index": "example_index.npy" if self.example_index is not None else None,
                    "meta": to_jsonable(self.meta)}
        atomic_write_text(d / MANIFEST, json.dumps(manifest, indent=2))
        if self._tmpdir is not None and self._tmpdir.resolve() == d.resolve() and self._finalizer is not None:
            self._finalizer.detach()  # the user keeps this directory now
        return d

    def close(self) -> None:
        """Delete the temporary spill directory now (spilled arrays become unusable)."""
        self._arrays = {}
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_whole_npy(arr: np.memmap, src: Path) -> bool:
    """The memmap is exactly the array stored in ``src`` (not a slice of it)."""
    try:
        on_disk = np.load(src, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return on_disk.shape == arr.shape and on_disk.dtype == arr.dtype and getattr(arr, "offset", 0) == on_disk.offset


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temporary name
        np.save(f, arr)


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda t: _save_npy(t, arr))


def load_capture(directory: str | Path, *, mmap: bool = True) -> Capture:
    """Open a directory written by :meth:`Capture.save` (or ``deepgeom capture``).

    Args:
        directory: holds ``manifest.json`` and one ``.npy`` per layer.
        mmap: open layers as read-only memmaps (default; nothing is read until used) or load them.

    Raises:
        InputError: no manifest, a missing file, or a file whose shape differs from the manifest.
    """
    d = Path(directory)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise InputError(f"{d} is not a capture directory: no {MANIFEST} (write one with deepgeom capture)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{mpath} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise InputError(f"{mpath} is not a deepgeom capture manifest (format {fmt!r})")
    entries = manifest.get("layers")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{mpath} has no \"layers\" list (rewrite the capture with deepgeom capture)")
    arrays, depth = {}, {}
    for i, e in enumerate(entries):
        missing = [k for k in ("name", "file", "shape", "relative_depth") if not isinstance(e, dict) or k not in e]
        if missing:
            raise InputError(f"{mpath}: layer entry {i} lacks {', '.join(repr(k) for k in missing)}")
        p = d / e["file"]
        if not p.is_file():
            raise InputError(f"capture in {d}: layer {e['name']!r} has no file {e['file']}")
        a = load_npy(p, f"capture in {d}: layer {e['name']!r} file", mmap=mmap)
        if list(a.shape) != list(e["shape"]):
            raise InputError(f"capture in {d}: {e['file']} has shape {a.shape}, manifest says {e['shape']}")
        arrays[e["name"]], depth[e["name"]] = a, e["relative_depth"]
    labels = load_npy(d / manifest["labels"], f"capture in {d}: labels", mmap=False) if manifest.get("labels") else None
    ex = (load_npy(d / manifest["example_index"], f"capture in {d}: example index", mmap=False)
          if manifest.get("example_index") else None)
    return Capture(arrays, relative_depth=depth, labels=labels, example_index=ex, meta=manifest.get("meta"))


def layer_depths(model: nn.Module | None, names: list[str]) -> dict[str, float]:
    """Relative depth (0 = input, 1 = output) of captured layers, the x-axis of every profile.

    Position in ``model.analysis_layers`` / (L − 1) when the model declares all ``names`` there (the
    ID paper's layers), else rank in ``names`` (forward order) / (m − 1).
    """
    declared = list(getattr(model, "analysis_layers", None) or [])
    if declared and all(n in declared for n in names) and len(declared) > 1:
        return {n: declared.index(n) / (len(declared) - 1) for n in names}
    m = len(names)
    return {n: (i / (m - 1) if m > 1 else 0.0) for i, n in enumerate(names)}


def _expected_rows(data: Any, reduce: str | None) -> int | None:
    n = n_examples(data)
    if reduce != "tokens":
        return n
    x = data[0] if isinstance(data, (tuple, list)) and data and isinstance(data[0], Mapping) else data
    if isinstance(x, Mapping) and isinstance(x.get("attention_mask"), (torch.Tensor, np.ndarray)):
        return int(np.asarray(x["attention_mask"]).astype(bool).sum())
    return None  # unknown until the end: blocks are counted as they come


def capture(
    model: nn.Module,
    data: Any,
    layers: LayerSpec = None,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    memory_budget: int | str = "1GB",
    spill_dir: str | Path | None = None,
    reduce: str | None = None,
    dtype: Any = np.float32,
    repeated: str = "error",
    forward: Callable[[nn.Module, Any], Any] | None = None,
    progress: bool = True,
) -> Capture:
    """Capture the activations of chosen layers of any ``torch.nn.Module`` on ``data``, as ``(N, D)`` arrays.

    Built on :func:`stream` (same ``data``, ``layers``, ``reduce``, ``repeated`` and ``forward``
    arguments): one forward pass per batch under ``no_grad`` in eval mode, hooks removed and modes
    restored afterwards. Rows are kept in RAM while the projected total of the in-RAM layers
    (bytes per row × N, known after the first batch when ``len(data)`` is) stays within
    ``memory_budget``; above it the largest in-RAM layer spills to ``<spill_dir>/<layer>.npy``, appended
    batch by batch and returned as a read-only ``np.memmap`` — so a layer far larger than RAM (e.g.
    5,000 × 262,144 float32 = 5.2 GB) is captured with a peak resident memory of about one batch.

    Args:
        model: any ``torch.nn.Module``.
        data: see :func:`stream`.
        layers: names, globs or module types (:func:`resolve_layers`); None → ``model.analysis_layers``
            or all leaf modules plus ``"input"``/``"output"``.
        batch_size: examples per forward pass.
        device: where the forward runs (the model must already be there).
        memory_budget: bytes or a size string (``"1GB"``, ``"512MiB"``); ``0`` spills every layer.
        spill_dir: where spilled layers go; default a fresh temporary directory, deleted when the
            :class:`Capture` is closed or garbage-collected unless :meth:`Capture.save` was called on it.
            A directory you give is never deleted (``deepgeom capture`` spills straight into ``--out``).
        reduce: ``None`` (flatten, but a layer with a token axis raises, saying what to pass) |
            ``"flatten"`` | ``"mean"`` | ``"tokens"`` | ``"cls"`` — see :func:`stream`.
        dtype: storage dtype (float32 default; float16 halves disk and RAM, float64 doubles them).
        progress: tqdm progress bar.

    Returns:
        :class:`Capture` — mapping layer → array, in the order the layers ran.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> cap = capture(net, torch.randn(100, 4), "*", progress=False)
        >>> cap.shapes
        {'input': (100, 4), '0': (100, 8), '1': (100, 8), '2': (100, 2), 'output': (100, 2)}
    """
    budget = parse_bytes(memory_budget)
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise InputError(f"dtype must be a floating-point type; got {dt}")
    expected = _expected_rows(data, reduce)
    owned_tmp: Path | None = None
    target_dir = Path(spill_dir) if spill_dir is not None else None
    stores: dict[str, _LayerStore] = {}
    files: dict[str, str] = {}
    labels: list[np.ndarray] = []
    example_index: list[np.ndarray] = []
    has_labels = True

    def ram_projection(s: _LayerStore) -> int:
        return s.row_bytes * (expected if expected is not None else s.rows)

    try:
        for batch in stream(model, data, layers, batch_size=batch_size, device=device, reduce=reduce,
                            repeated=repeated, forward=forward, progress=progress):
            if not stores:
                stores = {k: _LayerStore(k, v.shape[1], dt) for k, v in batch.items()}
                files = _safe_filenames(list(stores))
            for k, v in batch.items():
                stores[k].append(v.numpy())
            example_index.append(batch.example_index.numpy())
            if batch.labels is None:
                has_labels = False
            elif has_labels:
                lab = batch.labels
                if reduce == "tokens" and lab.shape[0] != batch.example_index.shape[0]:
                    lab = lab[batch.example_index - batch.index[0]]
                labels.append(lab.numpy())
            ram = [s for s in stores.values() if s.writer is None]
            while ram and sum(ram_projection(s) for s in ram) > budget:
                big = max(ram, key=ram_projection)
                if target_dir is None:
                    owned_tmp = Path(tempfile.mkdtemp(prefix="deepgeom-capture-"))
                    target_dir = owned_tmp
                target_dir.mkdir(parents=True, exist_ok=True)
                big.spill(target_dir / files[big.name])
                ram.remove(big)
            del batch, v  # drop this batch's tensors before the next forward pass allocates its own
        if not stores:
            raise InputError("data holds no examples")
        arrays = {k: s.finish() for k, s in stores.items()}
    except BaseException:
        for s in stores.values():
            if s.writer is not None:
                s.writer.abort()
        if owned_tmp is not None:
            shutil.rmtree(owned_tmp, ignore_errors=True)
        raise
    names = list(arrays)
    meta = {"model": type(model).__name__, "reduce": reduce or "flatten", "batch_size": batch_size}
    return Capture(arrays, relative_depth=layer_depths(model, names),
                   labels=np.concatenate(labels) if has_labels and labels else None,
                   example_index=np.concatenate(example_index), meta=meta, tmpdir=owned_tmp)

