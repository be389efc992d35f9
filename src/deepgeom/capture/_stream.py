"""Forward hooks that stream layer activations batch by batch (the engine behind :func:`capture`).

One forward pass per batch, with a forward hook on each requested module; the hook copies the module's
output (reduced to ``(rows, D)`` float32 on the CPU) and nothing else is kept. Hooks are registered once
and removed in ``finally``; the model runs in eval mode under ``torch.no_grad()`` and its train/eval
flags are restored afterwards, also when the forward raises.
"""

from __future__ import annotations

import dataclasses
import inspect
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from .._validation import check_positive_int
from ..errors import InputError
from ._layers import INPUT, OUTPUT, LayerSpec, module_for, parameter_device, parameter_dtype, resolve_layers

__all__ = ["stream", "StreamBatch", "REDUCE_MODES", "first_tensor", "n_examples"]

REDUCE_MODES = ("flatten", "mean", "tokens", "cls")  # or None: flatten, but refuse a token axis
REPEAT_MODES = ("error", "first", "last")


class StreamBatch(dict):
    """One batch from :func:`stream`: a plain ``{layer: tensor (rows, D)}`` dict with three attributes.

    Attributes:
        index: int64 tensor, the position in ``data`` of each example of the batch (length B).
        example_index: int64 tensor, the example each row belongs to (length rows; equals ``index``
            except for ``reduce="tokens"``, where each example contributes one row per kept token).
        labels: the batch's labels (a tensor of length B) when the data carry them, else None.
    """

    index: torch.Tensor
    example_index: torch.Tensor
    labels: torch.Tensor | None


class _StopForward(BaseException):
    """Raised from a hook once every requested layer has fired, to skip the rest of the forward.

    A ``BaseException`` so that a model's own ``except Exception`` cannot swallow it."""


@dataclasses.dataclass
class _Batch:
    inputs: Any               # tensor, or mapping of model keyword inputs
    labels: torch.Tensor | None
    size: int


# --------------------------------------------------------------------------------------------- data
def _as_tensor(x: Any, name: str = "data") -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise InputError(f"{name} must be numeric; got numpy dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise InputError(f"{name} must be a torch tensor or numpy array; got {type(x).__name__}")


def _mapping_len(data: Mapping) -> int:
    lengths = {k: int(v.shape[0]) for k, v in data.items() if isinstance(v, (torch.Tensor, np.ndarray))}
    if not lengths:
        raise InputError("a dict of model inputs must hold at least one tensor (e.g. tokenizer output)")
    if len(set(lengths.values())) != 1:
        raise InputError(f"the tensors of a dict of model inputs must have the same length; got {lengths}")
    return next(iter(lengths.values()))


def _is_pair(data: Any) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) in (1, 2)
            and all(isinstance(d, (torch.Tensor, np.ndarray, Mapping)) for d in data))


def _is_dataset(data: Any) -> bool:
    return (hasattr(data, "__getitem__") and hasattr(data, "__len__")
            and not isinstance(data, (str, bytes, Mapping, tuple, list)))


def n_examples(data: Any) -> int | None:
    """How many examples ``data`` holds, when that is known before iterating (else None)."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return int(data.shape[0])
    if isinstance(data, Mapping):
        return _mapping_len(data)
    if _is_pair(data):
        x = data[0]
        return _mapping_len(x) if isinstance(x, Mapping) else int(x.shape[0])
    if isinstance(data, DataLoader):
        try:
            return len(data.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    if _is_dataset(data):
        return len(data)
    return None


def _slice_inputs(x: Any, sl: slice) -> Any:
    if isinstance(x, Mapping):
        return {k: (_as_tensor(v)[sl] if isinstance(v, (torch.Tensor, np.ndarray)) else v) for k, v in x.items()}
    return _as_tensor(x)[sl]


def _split_element(elem: Any) -> tuple[Any, torch.Tensor | None]:
    """A DataLoader batch: a tensor, a mapping of model inputs, or ``(inputs, labels, ...)``."""
    if isinstance(elem, (torch.Tensor, Mapping)):
        return elem, None
    if isinstance(elem, (tuple, list)) and elem:
        labels = elem[1] if len(elem) > 1 and isinstance(elem[1], torch.Tensor) else None
        return elem[0], labels
    raise InputError(f"cannot read a batch of type {type(elem).__name__}; expected a tensor, a dict of "
                     "model inputs, or an (inputs, labels) pair")


def _batch_size_of(x: Any) -> int:
    if isinstance(x, Mapping):
        return _mapping_len(x)
    return int(_as_tensor(x).shape[0])


def _iter_batches(data: Any, batch_size: int) -> Iterator[_Batch]:
    """Batches in the data's own fixed order (never shuffled: CKA compares models on the same examples)."""
    if isinstance(data, DataLoader):
        sampler = getattr(data.batch_sampler, "sampler", data.sampler)
        if isinstance(sampler, RandomSampler) or isinstance(data.sampler, RandomSampler):
            raise InputError("the DataLoader shuffles (its sampler is random); capture needs a fixed order "
                             "so that layers and models see the same examples: use shuffle=False")
        for elem in data:
            x, y = _split_element(elem)
            yield _Batch(x, y, _batch_size_of(x))
        return
    if isinstance(data, (torch.Tensor, np.ndarray, Mapping)) or _is_pair(data):
        x, y = (data[0], data[1] if len(data) > 1 else None) if _is_pair(data) else (data, None)
        n = n_examples(data)
        if y is not None:
            y = _as_tensor(y, "labels")
            if y.shape[0] != n:
                raise InputError(f"inputs and labels must have the same length; got {n} and {y.shape[0]}")
        if n == 0:
            raise InputError("data holds no examples")
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            yield _Batch(_slice_inputs(x, sl), None if y is None else y[sl], sl.stop - sl.start)
        return
    if _is_dataset(data):  # a map-style torch Dataset
        yield from _iter_batches(DataLoader(data, batch_size=batch_size, shuffle=False), batch_size)
        return
    raise InputError(
        f"cannot capture from data of type {type(data).__name__}: pass a tensor or numpy array (N, ...), an "
        "(inputs, labels) pair, a dict of model inputs (tokenizer output), a torch Dataset or a DataLoader "
        "with shuffle=False")


def _to_device(x: Any, device: torch.device, float_dtype: torch.dtype | None) -> Any:
    if isinstance(x, Mapping):
        return {k: _to_device(v, device, float_dtype) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        x = _as_tensor(x)
    if isinstance(x, torch.Tensor):
        if float_dtype is not None and x.is_floating_point() and x.dtype != float_dtype:
            return x.to(device=device, dtype=float_dtype)
        return x.to(device)
    return x


# ------------------------------------------------------------------------------------------- outputs
def first_tensor(out: Any, *, prefer_float: bool = True) -> torch.Tensor | None:
    """The tensor that stands for a module's output.

    A tensor is itself; for a tuple/list, a dict or a transformers ``ModelOutput`` (a dict subclass) it is
    the first floating-point tensor found depth-first in order (``last_hidden_state`` for a transformer,
    ``hidden`` for an ``(hidden, attention)`` tuple); integer tensors (token ids, masks) are skipped
    unless there is no floating-point one.
    """
    found: list[torch.Tensor] = []
    # a module-level walker, not a recursive closure: a closure that calls itself is a reference cycle
    # that would keep every module output alive until the cyclic garbage collector runs
    if _walk(out, found, prefer_float):
        return found[-1]
    return found[0] if found else None


def _walk(o: Any, found: list[torch.Tensor], prefer_float: bool) -> bool:
    if isinstance(o, torch.Tensor):
        if o.is_floating_point() or not prefer_float:
            found.append(o)
            return True
        if not found:
            found.append(o)  # remember the first integer tensor as a fallback
        return False
    if isinstance(o, Mapping):
        return any(_walk(v, found, prefer_float) for v in o.values())
    if isinstance(o, (tuple, list)):
        return any(_walk(v, found, prefer_float) for v in o)
    return False


def _reduce(t: torch.Tensor, mode: str | None, mask: torch.Tensor | None, layer: str,
            token_len: int | None = None) -> torch.Tensor:
    """Reduce a batch output ``(B, ...)`` to rows ``(rows, D)``; ``mask`` is a (B, T) attention mask.

    ``mode=None`` flattens, except an output with a token axis (axis 1 as long as the batch's token
    sequence, ``token_len``), which raises: flattening padded tokens would measure the padding."""
    if t.ndim == 0:
        raise InputError(f"layer {layer!r} returned a scalar, not a batch of activations")
    B = t.shape[0]
    if mode is None:
        if token_len is not None and t.ndim >= 3 and t.shape[1] == token_len:
            raise InputError(
                f"layer {layer!r} has a token axis: its output is {tuple(t.shape)} (batch, {token_len} tokens, "
                "...), and flattening it would mix real and padding tokens into one long row; pass "
                "reduce='mean' (average over the real tokens), 'cls' (the first token), 'tokens' (one row "
                "per real token) or, to flatten anyway, 'flatten' (on the command line: --reduce {mean,cls,tokens,flatten})")
        mode = "flatten"
    if mode == "flatten" or t.ndim < 3:
        if mode == "tokens" and t.ndim < 3:
            raise InputError(f"reduce='tokens' needs (B, T, H) outputs but layer {layer!r} has shape "
                             f"{tuple(t.shape)}; select sequence layers only, or use reduce='mean'")
        return t.reshape(B, -1) if t.ndim != 2 else t
    if mask is not None and mask.shape[1] != t.shape[1]:
        raise InputError(f"layer {layer!r} has {t.shape[1]} positions on axis 1 but the attention mask has "
                         f"{mask.shape[1]}; reduce={mode!r} cannot apply the mask")
    if mode == "cls":
        return t[:, 0].reshape(B, -1)
    if mode == "mean":
        if mask is None:
            return t.float().mean(dim=1).reshape(B, -1)
        m = mask.to(device=t.device, dtype=torch.float32).reshape(B, -1, *([1] * (t.ndim - 2)))
        return ((t.float() * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)).reshape(B, -1)
    if mode == "tokens":
        rows = t.reshape(B * t.shape[1], -1)
        if mask is not None:
            rows = rows[mask.reshape(-1).to(rows.device).bool()]
        return rows
    raise AssertionError(mode)


def _call_style(model: nn.Module, batch: Mapping) -> str:
    """``model(**batch)`` if the forward names any of the dict's keys, else ``model(batch)``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "kwargs"
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return "kwargs" if named & set(batch) else "positional"


def _model_input_tensor(inputs: Any) -> torch.Tensor:
    t = first_tensor(inputs)
    if t is None:
        raise InputError("the batch holds no tensor to record as the 'input' layer")
    return t


# -------------------------------------------------------------------------------------------- stream
def stream(
    model: nn.Module,
    data: Any,
    layers: LayerSpec = None,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    reduce: str | None = None,
    repeated: str = "error",
    forward: Callable[[nn.Module, Any], Any] | None = None,
    progress: bool = False,
    copy: bool = True,
) -> Iterator[StreamBatch]:
    """Yield each batch's activations ``{layer: tensor (rows, D) float32 on CPU}``, in forward order.

    Forward hooks (``nn.Module.register_forward_hook``) record the requested modules' outputs during one
    forward pass per batch; the pseudo-layers ``"input"`` and ``"output"`` are the batch given to the
    model and the model's return value. Hooks are removed and the model's train/eval flags restored in
    ``finally`` — also when the forward raises or the caller stops iterating early. The model runs in
    eval mode under ``torch.no_grad()``. This is the streaming half of the torchmetrics-style
    update/compute split: minibatch CKA and running kernels consume it without holding all activations.

    Args:
        model: any ``torch.nn.Module``, already on ``device``.
        data: a tensor or numpy array ``(N, ...)``; an ``(inputs, labels)`` pair; a dict of model inputs
            such as tokenizer output (each tensor sliced along axis 0, other values passed unchanged; the
            model is called as ``model(**batch)`` when its ``forward`` names one of the keys, else
            ``model(batch)``); a map-style ``Dataset``; or a ``DataLoader`` without shuffling (each batch
            a tensor, a dict, or ``(inputs, labels, ...)``). Examples are always read in order.
        layers: see :func:`resolve_layers` (exact names, globs, module types; None → the model's
            ``analysis_layers`` or all leaf modules plus input/output).
        batch_size: examples per forward pass (ignored for a DataLoader, which has its own).
        device: where the forward runs; floating-point inputs are cast to the model's parameter dtype.
        reduce: how a module output of shape ``(B, T, H, ...)`` becomes rows — ``None`` (default):
            ``"flatten"``, except that an output with a token axis (axis 1 as long as the batch's
            ``attention_mask``/``input_ids``) raises :class:`InputError` saying what to pass, so padded
            tokens are never flattened silently; ``"flatten"``: ``(B, T·H·…)``; ``"mean"``: mean over axis 1 (tokens), honouring the batch's
            ``attention_mask`` when the data is a dict that holds one; ``"tokens"``: one row per token,
            ``(B·T, H)``, padding tokens dropped when there is an attention mask; ``"cls"``: the first
            token, ``(B, H)``. Outputs that are already ``(B, D)`` are kept as they are (except under
            ``"tokens"``, which rejects them, since rows would no longer match across layers).
        repeated: a module that runs more than once in one forward pass (a shared ``self.relu``) has no
            single output: ``"error"`` (default) raises naming it; ``"first"``/``"last"`` keep that call.
        forward: optional ``forward(model, inputs) -> output`` to call the model another way.
        progress: show a tqdm progress bar over batches.
        copy: record each layer's own copy (default), safe to keep. ``False``: after a first batch
            copied whole, record the module outputs themselves, valid until the next batch is asked
            for (a consumer done with each batch first, like minibatch CKA, saves a copy of every
            activation: 2% of the CKA benchmark's time). Version counters, checked after each forward
            pass, show which layers a later in-place op (``ReLU(inplace=True)``) changes; those are
            copied from then on (one seen only in a later batch: that batch runs once more).

    Yields:
        :class:`StreamBatch` — a dict in forward order (the order in which the layers first ran) with
        ``.index``, ``.example_index`` and ``.labels``.

    Module outputs that are tuples, dicts or transformers ``ModelOutput`` objects are represented by
    their first floating-point tensor (:func:`first_tensor`). After the first batch, the forward pass
    stops as soon as every requested layer has fired (when ``"output"`` is not requested).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> batches = list(stream(net, torch.randn(10, 4), ["1", "output"], batch_size=4))
        >>> [tuple(b["1"].shape) for b in batches]
        [(4, 8), (4, 8), (2, 8)]
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if reduce is not None and reduce not in REDUCE_MODES:
        raise InputError(f"reduce must be None or one of {', '.join(REDUCE_MODES)}; got {reduce!r}")
    if repeated not in REPEAT_MODES:
        raise InputError(f"repeated must be one of {', '.join(REPEAT_MODES)}; got {repeated!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    names = resolve_layers(model, layers)
    dev = torch.device(device)
    pdev = parameter_device(model)
    if pdev is not None and pdev.type != dev.type:
        raise InputError(f"the model is on {pdev} but device={str(device)!r}: call model.to({str(device)!r}) "
                         "first, or pass the model's device")
    float_dtype = parameter_dtype(model)
    modules = {n: module_for(model, n) for n in names if n not in (INPUT, OUTPUT)}
    if modules and isinstance(model, torch.jit.ScriptModule):
        raise InputError(f"{type(model).__name__} is a TorchScript model: its sub-modules run inside compiled "
                         f"code where forward hooks do not fire, so only 'input' and 'output' can be captured "
                         f"(asked for {list(modules)}); capture the original nn.Module instead")
    return _stream_gen(model, data, names, modules, batch_size, dev, float_dtype, reduce, repeated,
                       forward, progress, copy)


def _stream_gen(model, data, names, modules, batch_size, dev, float_dtype, reduce, repeated, forward,
                progress, copy) -> Iterator[StreamBatch]:
    want_output = OUTPUT in names
    state: dict[str, Any] = {"mask": None, "stop_early": False, "token_len": None}
    collected: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    order: list[str] = []  # layers in the order they first fired (learned on the first batch)
    # copy=False: each output recorded, its version counter then, and whether a copy was kept
    watched: dict[str, tuple[torch.Tensor, int, bool]] = {}
    copied: set[str] = set(modules) if copy else set()

    def make_hook(name: str):
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if calls[name] > 1:
                if repeated == "error":
                    raise InputError(
                        f"layer {name!r} ({type(_mod).__name__}) ran {calls[name]} times in one forward pass "
                        "(a module reused in forward), so it has no single output; capture a module that "
                        "runs once, or pass repeated='first' or 'last'")
                if repeated == "first":
                    return
            t = first_tensor(out)
            if t is None:
                raise InputError(f"layer {name!r} ({type(_mod).__name__}) returned no tensor "
                                 f"(got {type(out).__name__})")
            # a later in-place op (ReLU(inplace=True)) must not change what we recorded: a copy, or
            # the version to check (the first batch is copied whole, learning which layers change;
            # inference tensors have no version counter)
            r = _reduce(t.detach(), reduce, state["mask"], name, state["token_len"])
            own = name in copied or first or r.is_inference()
            collected[name] = r.to("cpu", torch.float32, copy=own)
            if not copy and not r.is_inference():
                watched[name] = (r, r._version, own)
            if state["stop_early"] and len(collected) == len(modules):
                raise _StopForward
        return hook

    was_training = {m: m.training for m in model.modules()}
    handles = []
    bar = None
    try:
        for name, mod in modules.items():
            handles.append(mod.register_forward_hook(make_hook(name)))
        model.eval()
        total = n_examples(data)
        if progress:
            bar = tqdm(total=total, unit="ex", desc="capture", leave=False)
        start = 0
        first = True
        for batch in _iter_batches(data, batch_size):
            inputs = _to_device(batch.inputs, dev, float_dtype)
            mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
            state["mask"] = mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None
            ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else None
            tokens = state["mask"] if state["mask"] is not None else (
                ids if isinstance(ids, torch.Tensor) and ids.ndim == 2 else None)
            state["token_len"] = None if tokens is None else int(tokens.shape[1])
            state["stop_early"] = not first and not want_output and repeated != "last"
            x_in = first_tensor(inputs)
            v_in = None if x_in is None or x_in.is_inference() else x_in._version
            stale = True
            while stale:
                collected.clear()
                calls.clear()
                output = None
                with torch.no_grad():
                    try:
                        if forward is not None:
                            output = forward(model, inputs)
                        elif isinstance(inputs, Mapping):
                            # a fresh dict: some models (SentenceTransformer) add keys to their input in place
                            arg = dict(inputs)
                            output = model(**arg) if _call_style(model, arg) == "kwargs" else model(arg)
                        else:
                            output = model(inputs)
                    except _StopForward as stop:
                        # the traceback's frames hold the aborted forward's tensors in a reference cycle
                        # that only the cyclic GC would free: clear them now so memory stays at one batch
                        traceback.clear_frames(stop.__traceback__)
                        del stop
                changed = {n: own for n, (r, v, own) in watched.items() if r._version != v}
                watched.clear()
                copied |= set(changed)
                stale = [n for n, own in changed.items() if not own]  # overwritten, no copy: run again
                if stale and v_in is not None and x_in._version != v_in:
                    raise InputError(f"layer(s) {sorted(stale)} changed in place after their hooks, and the model "
                                     "changes its input in place, so the batch cannot be run again: use copy=True")
            missing = [n for n in modules if n not in collected]
            if missing:
                raise InputError(f"layer(s) {missing} did not run in the forward pass (unused modules, or a "
                                 "TorchScript model whose sub-module hooks do not fire); pick other layers")
            result = StreamBatch()
            mod_order = order if not first else list(collected)  # dict order = order of first call
            if first:
                order.extend(mod_order)
            if INPUT in names:
                t = first_tensor(inputs)
                if t is None:
                    raise InputError("the batch holds no tensor to record as the 'input' layer")
                result[INPUT] = _reduce(t.detach(), reduce, state["mask"], INPUT, state["token_len"]).to(
                    "cpu", torch.float32, copy=True)
            for n in order:
                result[n] = collected[n]
            if want_output:
                t = first_tensor(output)
                if t is None:
                    raise InputError(f"the model returned no tensor (got {type(output).__name__})")
                result[OUTPUT] = _reduce(t.detach(), reduce, state["mask"], OUTPUT, state["token_len"]).to(
                    "cpu", torch.float32, copy=True)
            B = batch.size
            result.index = torch.arange(start, start + B)
            if reduce == "tokens":
                T = next(iter(result.values())).shape[0] // B if state["mask"] is None else None
                if state["mask"] is not None:
                    counts = state["mask"].to("cpu").bool().sum(dim=1)
                else:
                    counts = torch.full((B,), T, dtype=torch.long)
                result.example_index = torch.repeat_interleave(result.index, counts)
            else:
                result.example_index = result.index
            result.labels = None if batch.labels is None else batch.labels.detach().cpu()
            rows = {n: v.shape[0] for n, v in result.items()}
            if len(set(rows.values())) > 1:
                raise InputError(f"layers gave different numbers of rows for one batch: {rows}")
            first = False
            start += B
            if bar is not None:
                bar.update(B)
            output = t = inputs = None  # keep no tensor of this batch alive while the caller works
            collected.clear()
            yield result
            result = None
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag
        if bar is not None:
            bar.close()
