"""Study configs: a YAML/JSON file describing a sweep, validated with errors that name the problem.

A study is the cartesian product of the lists under ``sweep`` (datasets × model families × widths ×
depths × seeds × label-shuffle fractions) — or the union of several such products when ``sweep`` is a
list of them — minus the combinations matched by ``exclude``; every run is
trained with the ``train`` settings and then measured by each entry of ``analyses``. The schema is
documented in ``docs/studies.md``; :func:`load_config` is the only way in, so every key is checked once.

Example::

    name: tiny
    sweep: {dataset: digits, model: mlp, width: [32, 64], depth: 2, shuffle_fraction: [0.0, 1.0]}
    train: {epochs: 3, batch_size: 64}
    analyses: {id_profile: {n_points: 300}}
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .._defaults import SWEEP_AXES, TRAIN_DEFAULTS
from ..claims import parse_claims
from ..errors import InputError, UnknownNameError
from ..models.user import import_file, is_user_spec, resolve_spec
from .registry import get_analysis
from .resources import check_resources
from .training import train_config

__all__ = [
    "SWEEP_AXES",
    "TOP_LEVEL_KEYS",
    "TRAIN_KEYS",
    "RunSpec",
    "StudyConfig",
    "load_config",
    "expand_sweep",
    "stable_key",
]


#: Top-level keys a config may hold.
TOP_LEVEL_KEYS = ("name", "description", "sweep", "exclude", "data", "models", "train", "analyses",
                  "resources", "analyses_from", "claims")

#: Training settings understood by the runner (forwarded to :class:`deepgeom.train.TrainConfig`).
#: The defaults are ``deepgeom._defaults.TRAIN_DEFAULTS``, the same as ``deepgeom train``'s.
TRAIN_KEYS: dict[str, Any] = {
    **TRAIN_DEFAULTS,  # epochs, batch_size, optimizer, lr, momentum, weight_decay, loss ("ce" or "mse")
    "checkpoints": None,  # None: every epoch, including epoch 0 (untrained)
    "eval_every": 1,  # history rows every k epochs (+ checkpoints, last); not part of the run key
    "stop_at_train_acc": None,  # stop at the first evaluated epoch with this training accuracy
}

#: Training keys that do not change the trained weights, left out of the run key (changing them
#: does not retrain finished runs) — unless ``stop_at_train_acc`` is set: then the evaluated epochs
#: are where training may stop.
_UNWEIGHTED_TRAIN_KEYS = ("eval_every",)

#: Training keys added after studies were first run: left out of the run key while at their default
#: (None), so the runs of existing study directories keep their keys and are not retrained.
_LATER_TRAIN_KEYS = ("stop_at_train_acc",)


def _weighted_train(train: dict[str, Any]) -> dict[str, Any]:
    """The training settings that shape the weights (what a run key hashes)."""
    stops = train.get("stop_at_train_acc") is not None
    return {k: v for k, v in train.items()
            if not (k in _UNWEIGHTED_TRAIN_KEYS and not stops) and not (k in _LATER_TRAIN_KEYS and v is None)}


#: Keys of the ``data`` section: the split seed shared by every run plus per-dataset loader options.
DATA_KEYS = ("seed", "options")


def stable_key(obj: Any, length: int = 12) -> str:
    """A short, stable hex key of a JSON-able object (sha256 of its canonical JSON)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One point of the sweep: what to train. ``key`` is a hash of everything that shapes the weights."""

    dataset: str
    model: str
    width: int
    depth: int
    seed: int
    shuffle_fraction: float
    data_options: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
    model_options: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
    train: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
    data_seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Everything that defines the trained weights, JSON-ready (this is what the key hashes)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "width": self.width,
            "depth": self.depth,
            "seed": self.seed,
            "shuffle_fraction": self.shuffle_fraction,
            "data_options": self.data_options,
            "model_options": self.model_options,
            "train": _weighted_train(self.train),
            "data_seed": self.data_seed,
        }

    @property
    def key(self) -> str:
        return stable_key({"unit": "train", **self.as_dict()})

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``mnist1d/mlp w64 d3 s0 shuf0``."""
        shuf = f" shuf{self.shuffle_fraction:g}" if self.shuffle_fraction else ""
        return f"{_short(self.dataset)}/{_short(self.model)} w{self.width} d{self.depth} s{self.seed}{shuf}"

    def columns(self) -> dict[str, Any]:
        """The sweep coordinates, added as columns to every table row this run produces."""
        return {
            "run": self.key,
            "dataset": self.dataset,
            "model": self.model,
            "width": self.width,
            "depth": self.depth,
            "seed": self.seed,
            "shuffle_fraction": self.shuffle_fraction,
        }


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A validated study: the raw mapping plus its expanded runs and analysis parameters."""

    name: str
    description: str
    sweep: list[dict[str, list]]  # one or more cartesian products (their union is the study)
    exclude: list[dict]
    data_seed: int
    data_options: dict[str, dict]
    model_options: dict[str, dict]
    train: dict[str, Any]
    analyses: dict[str, dict]
    raw: dict[str, Any]
    claims: list = dataclasses.field(default_factory=list)  # pre-registered claims (deepgeom.claims.Claim)
    #: per-unit threads / CPUs / GPUs / device (:mod:`deepgeom.studies.resources`); not part of any key
    resources: dict[str, dict] = dataclasses.field(default_factory=dict)

    @property
    def runs(self) -> list[RunSpec]:
        return expand_sweep(self)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)


def _short(name: str) -> str:
    """A user model spec ``/abs/dir/net.py:Net`` or data path ``/abs/x.csv`` shown by its last part."""
    if ":" in name:
        return name.rpartition(":")[2]
    return Path(name).name if ("/" in name or "\\" in name) else name


def load_analyses_from(spec: Any, base: str | Path | None = None) -> list[str]:
    """Import the user's analysis modules named by a config's ``analyses_from`` (a ``file.py`` path,
    relative to the config file, or an importable module name; or a list of them), so their
    ``@register_analysis`` decorators run. Returns what was imported. Analyses published by installed
    packages under the ``deepgeom.analyses`` entry-point group are loaded with the built-ins."""

    items = _as_list(spec)
    done = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise InputError(f"analyses_from must be a file.py path or a module name (or a list); got {item!r}")
        if item.endswith(".py"):
            path = Path(item).expanduser()
            if not path.is_absolute() and base is not None and (Path(base) / path).is_file():
                path = Path(base) / path
            import_file(path.resolve())
        else:
            try:
                importlib.import_module(item)
            except ImportError as exc:
                raise InputError(f"analyses_from: cannot import module {item!r}: {exc}") from exc
        done.append(item)
    return done


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where} must be a mapping (key: value); got {type(value).__name__} {value!r}")
    return dict(value)


def _check_keys(mapping: Mapping, allowed: Any, where: str) -> None:
    for k in mapping:
        if k not in allowed:
            raise UnknownNameError(f"key in {where}", k, list(allowed))


def _read(source: str | Path | Mapping) -> dict:
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    path = Path(source)
    if not path.is_file():
        raise InputError(f"study config {str(path)!r} does not exist (give a .yaml, .yml or .json file)")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise InputError(f"study config {str(path)!r} is not a text file (YAML or JSON): {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"study config {str(path)!r} is not valid JSON: {exc}") from exc
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"study config {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise InputError(f"study config {str(path)!r} must hold a mapping at the top level; got {type(data).__name__}")
    return dict(data)


def _check_axis_value(axis: str, value: Any, where: str = "sweep") -> Any:
    if axis in ("dataset", "model"):
        if not isinstance(value, str) or not value:
            raise InputError(f"{where}.{axis} values must be non-empty names; got {value!r}")
        return value
    if axis in ("width", "depth", "seed"):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if axis == "seed" else 1):
            low = 0 if axis == "seed" else 1
            raise InputError(f"{where}.{axis} values must be integers >= {low}; got {value!r}")
        return int(value)
    # shuffle_fraction
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{where}.shuffle_fraction values must be numbers in [0, 1]; got {value!r}")
    return float(value)


def load_config(source: str | Path | Mapping) -> StudyConfig:
    """Read and validate a study config (path to YAML/JSON, or a mapping).

    Every key is checked: an unknown key anywhere raises :class:`~deepgeom.errors.UnknownNameError`
    listing the known ones; bad values raise :class:`~deepgeom.errors.InputError` naming the key.
    Analysis names and their parameters are checked against the analysis registry.
    """

    raw = _read(source)
    _check_keys(raw, TOP_LEVEL_KEYS, "study config")
    base = None if isinstance(source, Mapping) else Path(source).resolve().parent
    if raw.get("analyses_from") is not None:  # before the analyses are checked against the registry
        load_analyses_from(raw["analyses_from"], base)
    name = raw.get("name", "study")
    if not isinstance(name, str) or not name:
        raise InputError(f"name must be a non-empty string; got {name!r}")
    description = raw.get("description", "") or ""

    sweep_raw = raw.get("sweep")
    if isinstance(sweep_raw, list):  # a union of several cartesian products
        if not sweep_raw:
            raise InputError("sweep is an empty list; give a mapping of axes or a list of them")
        sweeps = [_check_sweep(_check_mapping(sw, f"sweep[{i}]"), f"sweep[{i}]") for i, sw in enumerate(sweep_raw)]
    else:
        sweeps = [_check_sweep(_check_mapping(sweep_raw, "sweep"), "sweep")]
    for sw in sweeps:  # your own model and data files, relative to the config file when they are there
        sw["model"] = [_resolve_model(m, base) for m in sw["model"]]
        sw["dataset"] = [_resolve_data(d, base) for d in sw["dataset"]]
    all_values = {axis: [v for sw in sweeps for v in sw[axis]] for axis in SWEEP_AXES}

    exclude = raw.get("exclude") or []
    if not isinstance(exclude, list):
        raise InputError(f"exclude must be a list of partial sweep points; got {exclude!r}")
    excl: list[dict] = []
    for i, pattern in enumerate(exclude):
        pattern = _check_mapping(pattern, f"exclude[{i}]")
        _check_keys(pattern, SWEEP_AXES, f"exclude[{i}]")
        fix = {"model": _resolve_model, "dataset": _resolve_data}
        excl.append({a: [fix.get(a, lambda v, _b: v)(_check_axis_value(a, v, f"exclude[{i}]"), base)
                         for v in _as_list(val)]
                     for a, val in pattern.items()})

    data = _check_mapping(raw.get("data"), "data")
    _check_keys(data, DATA_KEYS, "data")
    data_seed = data.get("seed", 0)
    if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
        raise InputError(f"data.seed must be an integer >= 0; got {data_seed!r}")
    data_options = {_resolve_data(k, base): v for k, v in _check_mapping(data.get("options"), "data.options").items()}
    for ds, opts in data_options.items():
        if ds not in all_values["dataset"]:
            raise UnknownNameError("dataset in data.options", ds, sorted(set(all_values["dataset"])),
                                   "options are per swept dataset")
        data_options[ds] = _check_mapping(opts, f"data.options.{ds}")

    models = {_resolve_model(k, base): v for k, v in _check_mapping(raw.get("models"), "models").items()}
    for fam, opts in models.items():
        if fam not in all_values["model"]:
            raise UnknownNameError("model in models", fam, sorted(set(all_values["model"])),
                                   "options are per swept model family")
        models[fam] = _check_mapping(opts, f"models.{fam}")

    train_in = _check_mapping(raw.get("train"), "train")
    _check_keys(train_in, TRAIN_KEYS, "train")
    train = {**TRAIN_KEYS, **train_in}
    for k in ("epochs", "batch_size", "eval_every"):
        v = train[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "epochs" else 1):
            raise InputError(f"train.{k} must be an integer >= {0 if k == 'epochs' else 1}; got {v!r}")
    stop = train["stop_at_train_acc"]
    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, (int, float)) or not 0 < stop <= 1):
        raise InputError(f"train.stop_at_train_acc must be a number in (0, 1] or null; got {stop!r}")
    for k in ("lr", "weight_decay", "momentum"):
        v = train[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k == "lr" and v == 0):
            raise InputError(f"train.{k} must be a {'positive' if k == 'lr' else 'non-negative'} number; got {v!r}")
        train[k] = float(v)
    if train["checkpoints"] is None:
        train["checkpoints"] = list(range(train["epochs"] + 1))
    else:
        cps = _as_list(train["checkpoints"])
        for c in cps:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= train["epochs"]:
                raise InputError(f"train.checkpoints must be epochs in [0, {train['epochs']}]; got {c!r}")
        train["checkpoints"] = sorted(set(cps) | {0, train["epochs"]})

    analyses_in = raw.get("analyses")
    if analyses_in is None:
        analyses_in = {}
    if isinstance(analyses_in, list):  # a bare list of names: all with default parameters
        analyses_in = {a: {} for a in analyses_in}
    analyses_in = _check_mapping(analyses_in, "analyses")
    analyses: dict[str, dict] = {}
    for aname, params in analyses_in.items():
        if params is False:
            continue
        if params is True or params is None:
            params = {}
        params = _check_mapping(params, f"analyses.{aname}")
        analysis = get_analysis(aname)  # UnknownNameError lists the registered ones
        analyses[aname] = analysis.resolve_params(params)

    claims = parse_claims(raw.get("claims"), where="claims")

    resources = check_resources(raw.get("resources"), ["train", *analyses])

    cfg = StudyConfig(
        name=name,
        description=str(description),
        sweep=sweeps,
        exclude=excl,
        data_seed=int(data_seed),
        data_options=data_options,
        model_options=models,
        train=train,
        analyses=analyses,
        raw=raw,
        claims=claims,
        resources=resources,
    )
    runs = cfg.runs
    if not runs:
        raise InputError("the sweep is empty: every combination is matched by an exclude pattern")

    for run in runs:  # TrainConfig checks optimizer, loss and model family names
        train_config(run)
    return cfg


def _resolve_data(name: str, base: Path | None) -> str:
    p = Path(name).expanduser()
    if base is None or p.is_absolute() or not p.suffix or not (base / p).is_file():
        return name
    return str((base / p).resolve())


def _resolve_model(name: str, base: Path | None) -> str:
    return resolve_spec(name, base) if is_user_spec(name) else name


def _excluded(point: dict, patterns: list[dict]) -> bool:
    return any(all(point[a] in vals for a, vals in pat.items()) for pat in patterns)


def expand_sweep(config: StudyConfig) -> list[RunSpec]:
    """The runs of a study: the cartesian product of the sweep lists (in ``SWEEP_AXES`` order) — or the
    union of several products when ``sweep`` is a list, in order, each run once — minus the points
    matched by an ``exclude`` pattern (a point matches when each named axis holds one of its values)."""
    axes = list(SWEEP_AXES)
    runs, seen = [], set()
    for sweep in config.sweep:
        for values in itertools.product(*(sweep[a] for a in axes)):
            point = dict(zip(axes, values, strict=True))
            if _excluded(point, config.exclude):
                continue
            run = RunSpec(
                **point,
                data_options=config.data_options.get(point["dataset"], {}),
                model_options=config.model_options.get(point["model"], {}),
                train=config.train,
                data_seed=config.data_seed,
            )
            if run.key not in seen:
                seen.add(run.key)
                runs.append(run)
    return runs


def _check_sweep(sweep_in: dict, where: str) -> dict[str, list]:
    _check_keys(sweep_in, SWEEP_AXES, where)
    sweep: dict[str, list] = {}
    for axis, default in SWEEP_AXES.items():
        if axis not in sweep_in:
            if default is None:
                raise InputError(f"{where}.{axis} is required (a name or a list of names)")
            sweep[axis] = [default]
            continue
        values = _as_list(sweep_in[axis])
        if not values:
            raise InputError(f"{where}.{axis} is an empty list; give at least one value")
        checked = [_check_axis_value(axis, v, where) for v in values]
        if len(set(checked)) != len(checked):
            raise InputError(f"{where}.{axis} lists a value twice: {values!r}")
        sweep[axis] = checked
    return sweep
