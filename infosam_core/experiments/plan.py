"""Experiment plans: which (dataset, method, seed) runs to train and evaluate, read from a TOML file.

A plan (see ``experiments/*.toml`` for the shipped ones)::

    seeds = [0, 1, 2]
    model = "tiny"                # base SAM for every run (a registered model type)
    checkpoint = "sam_vit_b.pth"  # optional; its weights (relative to the data root)
    [train]                       # TrainConfig overrides for every run
    epochs = 10
    [[datasets]]
    name = "Leaf"
    train = "leaf/train"          # relative paths resolve against the data root
    test = "leaf/test"
    prompt = "box"                # box | point | points5
    metrics = ["iou", "dice"]
    epochs = 20                   # any other key: a TrainConfig override for this dataset
    [[methods]]
    name = "Adapter+InfoSAM"
    peft = "adapter"              # a registered PEFT method, or "none" (zero-shot: evaluated, never trained)
    distill = "infosam"           # a registered distiller, or "none" (the default)
    distill_options = {alpha = 1.0}
    # peft_options = {...}, model = "...", and any TrainConfig override

A run's settings are TrainConfig's defaults, then ``[train]``, then the dataset's overrides, then the
method's, then ``seed``. A method whose PEFT method, distiller or model type is not registered (yet) stays in
the plan, marked unavailable with the reason: it is listed by ``--dry-run`` and in the table, and skipped.

The whole plan is checked when it is read (:func:`load_plan`), before any run: the file (a regular file of at
most :data:`MAX_PLAN_BYTES`, UTF-8 TOML), its shape (lists of tables, nesting depth), every value's type and
range (training settings by :class:`TrainConfig`'s field types, then :meth:`TrainConfig.validate`; seeds
non-negative integers; the device's form), names (:data:`MAX_NAME_LENGTH` characters of a safe set) and paths
(a relative path may not leave the data root; an absolute one is allowed and reported by
:meth:`Plan.absolute_paths`). Each refusal is one :class:`PlanError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, packaged (a dependency there)
    import tomli as tomllib

from infosam_core.data.prompt_sampling import PROTOCOLS
from infosam_core.distill.registry import (
    DISTILLERS,
    NO_DISTILLATION,
    distillers_for,
    encoder_mismatch,
    make_distiller_config,
)
from infosam_core.evaluation.metrics import METRICS
from infosam_core.models.registry import MODEL_TYPES, MODELS
from infosam_core.peft.registry import PEFT_METHODS, make_config
from infosam_core.training.config import TrainConfig

ZERO_SHOT = "none"  # peft = "none": the base model, evaluated without training
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
RUN_LEVEL = {"seed"}  # set per run from the plan's seeds, not overridable
MAX_PLAN_BYTES = 1 << 20  # a plan is a few KB; anything over 1 MB is not a plan
MAX_NAME_LENGTH = 100  # dataset / method names (they become parts of file names)
MAX_DEPTH = 16  # nesting of tables and arrays in a plan
MAX_SEED = 2**32 - 1  # numpy's seed range
# names: letters (any script), digits, space and common punctuation; no path or markdown-table separators
# that matter ('\\', '|'), quotes or control characters
NAME_PATTERN = re.compile(r"[\w +.,:;()\[\]/=&%#@!~'-]+")
PLAIN_KEY_PART = re.compile(r"[A-Za-z0-9+.-]+(_[A-Za-z0-9+.-]+)*")  # used as is in run keys
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


class PlanError(ValueError):
    """A plan that cannot be used; the message names the file, the entry and the fix."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: train/test folders (absolute once resolved), its prompt protocol and metrics."""

    name: str
    train: str
    test: str
    prompt: str = "box"
    metrics: tuple[str, ...] = ("iou", "dice")
    train_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One method row: PEFT method (or ``none`` for zero-shot), distiller, their options, overrides."""

    name: str
    peft: str
    distill: str = NO_DISTILLATION
    peft_options: dict[str, Any] = field(default_factory=dict)
    distill_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # overrides the plan's model
    train_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def zero_shot(self) -> bool:
        return self.peft == ZERO_SHOT

    def check_options(self) -> None:
        """Refuse (:class:`~infosam_core.options.OptionError`) a wrong type, bound or PEFT option key of a
        registered method or distiller, whether or not the method can run on the plan's model; a distiller
        option this installation does not know makes the method unavailable instead (:meth:`missing`)."""
        if self.peft in PEFT_METHODS:
            make_config(self.peft, self.peft_options)
        if self.distill in DISTILLERS:
            known = set(DISTILLERS[self.distill].config_cls.option_names())
            make_distiller_config(self.distill, {k: v for k, v in self.distill_options.items() if k in known})

    def missing(self, plan_model: str) -> str | None:
        """Why this method cannot run in this installation (None when it can)."""
        reasons = []
        if self.peft != ZERO_SHOT and self.peft not in PEFT_METHODS:
            reasons.append(f"PEFT method {self.peft!r} not implemented yet")
        if self.distill != NO_DISTILLATION and self.distill not in DISTILLERS:
            reasons.append(f"distiller {self.distill!r} not implemented yet")
        elif self.distill in DISTILLERS:
            known = {f.name for f in dataclasses.fields(DISTILLERS[self.distill].config_cls)}
            if extra := sorted(set(self.distill_options) - known):
                reasons.append(f"distiller {self.distill!r} has no option {', '.join(extra)} yet")
        model = self.model or plan_model
        if model not in MODEL_TYPES:
            reasons.append(f"model type {model!r} not implemented yet")
        elif self.distill in DISTILLERS and self.distill not in distillers_for(MODELS[model].family):
            if encoder_mismatch(self.distill, MODELS[model].family) == "block_levels":
                reasons.append(
                    f"distiller {self.distill!r} reads encoder block outputs, which {model}'s encoder does not give"
                )
            else:
                reasons.append(
                    f"distiller {self.distill!r} needs encoder blocks of one width and grid (ViT), which {model}'s "
                    "encoder does not have"
                )
        return "; ".join(reasons) or None


@dataclass(frozen=True)
class RunSpec:
    """One (dataset, method, seed) run and the full settings it trains with."""

    dataset: DatasetSpec
    method: MethodSpec
    seed: int
    model: str
    checkpoint: str | None
    config: TrainConfig | None  # None for zero-shot runs
    plan_settings: dict[str, Any] = field(default_factory=dict)  # the TrainConfig values the plan sets

    @property
    def key(self) -> str:
        """A file-name-safe name, distinct for distinct runs: ``<dataset>__<method>__seed<k>``, each name as
        :func:`key_part` writes it (never containing ``__``, so the parts cannot run into each other)."""
        return f"{key_part(self.dataset.name)}__{key_part(self.method.name)}__seed{self.seed}"

    def settings(self) -> dict[str, Any]:
        """What the plan says about this run: dataset, method, seed, model and the training settings the plan
        sets (not TrainConfig's defaults, so a new setting added to TrainConfig does not invalidate finished
        runs). Its :meth:`fingerprint` decides whether a stored result is still this run's."""
        return {
            "dataset": dataclasses.asdict(self.dataset),
            "method": self.method.name,
            "seed": self.seed,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "train": dict(sorted(self.plan_settings.items())),
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """A parsed plan file (see the module docstring)."""

    path: Path
    seeds: tuple[int, ...]
    datasets: tuple[DatasetSpec, ...]
    methods: tuple[MethodSpec, ...]
    model: str = "tiny"
    checkpoint: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    title: str = ""

    def runs(self, data_root: str | Path | None = None) -> list[RunSpec]:
        """Every runnable (dataset, method, seed) in execution order: datasets outermost, then seeds, then
        methods (so a partly done experiment has every method at the same number of seeds); relative
        dataset paths and the checkpoint resolved against ``data_root`` (default: the current folder). Unavailable methods are
        left out (see :meth:`unavailable`)."""
        root = Path(os.path.realpath(data_root if data_root is not None else Path.cwd()))
        runs = []
        for dataset in self.datasets:
            resolved = dataclasses.replace(
                dataset, train=resolve_path(root, dataset.train), test=resolve_path(root, dataset.test)
            )
            for seed in self.seeds:
                for method in self.methods:
                    if not method.missing(self.model):
                        runs.append(self._run(resolved, method, seed, root))
        return runs

    def absolute_paths(self) -> list[str]:
        """One line for each absolute path of the plan (read from outside the data root: allowed, but said)."""
        entries = [
            (f"datasets[{i}] ({d.name}) {k}", getattr(d, k))
            for i, d in enumerate(self.datasets)
            for k in ("train", "test")
        ]
        entries.append(("checkpoint", self.checkpoint))
        return [
            f"{self.path}: {where} = {value!r} is an absolute path: it is read from outside --data-root"
            for where, value in entries
            if value and Path(value).is_absolute()
        ]

    def check_devices(self) -> None:
        """Refuse (:class:`PlanError`) a run device this machine does not have; called before the first run."""
        devices = {r.config.device for r in self.runs(Path(".")) if r.config is not None}
        for device in sorted(devices):
            if problem := device_problem(device):
                raise PlanError(f"{self.path}: device = {device!r}: {problem}")

    def unavailable(self) -> dict[str, str]:
        """Method name -> why it cannot run yet."""
        return {m.name: reason for m in self.methods if (reason := m.missing(self.model))}

    def _run(self, dataset: DatasetSpec, method: MethodSpec, seed: int, root: Path) -> RunSpec:
        model = method.model or self.model
        checkpoint = resolve_path(root, self.checkpoint) if self.checkpoint and model == self.model else None
        if method.zero_shot:
            return RunSpec(dataset, method, seed, model, checkpoint, None)
        values = {**self.train_overrides, **dataset.train_overrides, **method.train_overrides}
        values.update(
            peft=method.peft,
            peft_options=dict(method.peft_options),
            distill=method.distill,
            distill_options=dict(method.distill_options),
            seed=seed,
        )
        config = TrainConfig(**values)
        try:
            config.validate()  # the PEFT and distiller options too
        except ValueError as exc:
            raise PlanError(f"{self.path}: method {method.name!r} on dataset {dataset.name!r}: {exc}") from None
        return RunSpec(dataset, method, seed, model, checkpoint, config, values)


def slug(name: str) -> str:
    """``Adapter (no KD)`` -> ``Adapter_no_KD``: anything outside [A-Za-z0-9+.-] becomes one ``_``."""
    return re.sub(r"[^A-Za-z0-9+.-]+", "_", name).strip("_") or "_"


def key_part(name: str) -> str:
    """A name's part of a run key: the name itself when it is made of letters, digits, ``+ . -`` and single inner
    underscores; otherwise its :func:`slug` (at most 60 characters), ``~`` and 8 hex digits of the name's
    SHA-256. Distinct names give distinct parts (``~`` only appears in the second form), and no part contains
    ``__``: ``a__b`` + ``c`` and ``a`` + ``b__c`` make different keys."""
    if PLAIN_KEY_PART.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{slug(name)[:60].strip('_') or '_'}~{digest}"


def resolve_path(root: Path, text: str) -> str:
    """``text`` (a plan path, already checked by :func:`_path`) as an absolute path with symbolic links and
    ``..`` resolved, so that every spelling of the data root gives the same path (and the same fingerprint)."""
    return os.path.realpath(Path(text) if Path(text).is_absolute() else root / os.path.normpath(text))


def device_problem(device: str) -> str | None:
    """Why the torch device ``device`` (a plan's ``device`` value, already of a valid form) cannot be used on
    this machine, or None."""
    import torch

    if device in ("auto", "cpu"):
        return None
    if device == "mps":
        ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        return None if ok else "Apple MPS is not available here; use auto or cpu"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available here; use auto or cpu"
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return f"only {torch.cuda.device_count()} CUDA device(s) here"
    return None


_TRAIN_HINTS = typing.get_type_hints(TrainConfig)


def _train_value(name: str, value: Any, where: str, path: Path) -> Any:
    """A training setting's value checked against TrainConfig's field type (``X | None`` as ``X``: TOML has no
    null); numbers finite. Returns it (an integer given for a float setting as a float)."""
    hint = _TRAIN_HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    if typing.get_origin(base) is dict:
        base = dict

    def fail(expected: str) -> PlanError:
        return PlanError(f"{path}: {where}: '{name}' must be {expected}, got {_short(value)}")

    if base is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("a whole number")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        if not math.isfinite(value):
            raise fail("a finite number")
        value = float(value)
    elif base is str:
        if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
            raise fail(f"a non-empty string of at most {MAX_NAME_LENGTH} characters")
        if name == "device" and not DEVICE_PATTERN.fullmatch(value):
            raise fail("auto, cpu, mps, cuda or cuda:N")
    elif base is dict and not isinstance(value, dict):
        raise fail("a table, e.g. {alpha = 1.0}")
    if name in ("epochs", "batch_size") and value < 1:
        raise fail("a whole number >= 1")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _overrides(entry: dict[str, Any], where: str, path: Path, reserved: set[str]) -> dict[str, Any]:
    rest = {k: v for k, v in entry.items() if k not in reserved}
    unknown = sorted(set(rest) - TRAIN_FIELDS)
    if unknown:
        raise PlanError(
            f"{path}: {where}: unknown key(s) {', '.join(unknown)}; a plan entry takes {', '.join(sorted(reserved))} "
            f"and training settings ({', '.join(sorted(TRAIN_FIELDS - RUN_LEVEL))})"
        )
    if RUN_LEVEL & set(rest):
        raise PlanError(f"{path}: {where}: 'seed' is set by the plan's seeds list, not per entry")
    return {k: _train_value(k, v, where, path) for k, v in rest.items()}


def _str(entry: dict[str, Any], key: str, where: str, path: Path, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        raise PlanError(f"{path}: {where}: '{key}' must be a non-empty string, got {_short(value)}")
    if len(value) > MAX_NAME_LENGTH:
        raise PlanError(f"{path}: {where}: '{key}' is {len(value)} characters long; at most {MAX_NAME_LENGTH}")
    return value


def _name(entry: dict[str, Any], where: str, path: Path) -> str:
    """A dataset's or method's name: non-empty, at most :data:`MAX_NAME_LENGTH` characters of :data:`NAME_PATTERN`."""
    name = _str(entry, "name", where, path)
    if not NAME_PATTERN.fullmatch(name) or name != name.strip():
        raise PlanError(
            f"{path}: {where}: 'name' {_short(name)} may only use letters, digits, spaces (not at either end) and "
            "+ . , : ; ( ) [ ] / = & % # @ ! ~ ' -"
        )
    return name


def _path(entry: dict[str, Any], key: str, where: str, path: Path) -> str:
    """A path of the plan: a non-empty string; a relative one may not leave the data root (``../``)."""
    value = entry.get(key)
    if not isinstance(value, str) or not value or len(value) > 4096 or "\0" in value:
        raise PlanError(f"{path}: {where}: '{key}' must be a path (a non-empty string), got {_short(value)}")
    if not Path(value).is_absolute():
        norm = os.path.normpath(value)
        if norm == os.pardir or norm.startswith(os.pardir + os.sep):
            raise PlanError(
                f"{path}: {where}: '{key}' = {_short(value)} leaves --data-root; relative paths stay inside it "
                "(give an absolute path to read from elsewhere)"
            )
    return value


def _table_list(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise PlanError(f"{path}: '{key}' must be a list of tables: write each entry as [[{key}]] with its keys below")
    return value


def _depth(value: Any) -> int:
    """The nesting depth of tables and arrays (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            items = list(item.values())
        elif isinstance(item, list):
            items = item
        else:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_DEPTH:
            return deepest
        stack += [(x, level + 1) for x in items]
    return deepest


def parse_plan(data: dict[str, Any], path: Path) -> Plan:
    """A :class:`Plan` from a parsed TOML document (``path`` is only used in messages); the whole plan is checked
    (see the module docstring)."""
    if _depth(data) > MAX_DEPTH:
        raise PlanError(f"{path}: tables and arrays nested more than {MAX_DEPTH} deep; a plan needs a few levels")
    top = {"seeds", "train", "datasets", "methods", "model", "checkpoint", "title"}
    unknown = sorted(set(data) - top)
    if unknown:
        raise PlanError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected {', '.join(sorted(top))}")
    seeds = data.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)
    ):
        raise PlanError(
            f"{path}: 'seeds' must be a non-empty list of whole numbers from 0 to {MAX_SEED}, e.g. seeds = [0, 1, 2]; "
            f"got {_short(seeds)}"
        )
    if len(set(seeds)) != len(seeds):
        raise PlanError(f"{path}: 'seeds' lists a seed twice: {_short(seeds)}")
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise PlanError(f"{path}: [train] must be a table of training settings")
    train = _overrides(train, "[train]", path, set())
    model = data.get("model", "tiny")
    if not isinstance(model, str) or not model or len(model) > MAX_NAME_LENGTH:
        raise PlanError(f"{path}: 'model' must be a model type name (a string), got {_short(model)}")
    checkpoint = _path(data, "checkpoint", "top level", path) if "checkpoint" in data else None
    title = data.get("title", "")
    if not isinstance(title, str) or len(title) > 200 or not title.isprintable():
        raise PlanError(f"{path}: 'title' must be one line of text of at most 200 characters")

    datasets = []
    for i, entry in enumerate(_table_list(data, "datasets", path)):
        where = f"datasets[{i}]"
        name = _name(entry, where, path)
        where = f"datasets[{i}] ({name})"
        reserved = {"name", "train", "test", "prompt", "metrics"}
        prompt = _str(entry, "prompt", where, path, "box")
        if prompt not in PROTOCOLS:
            raise PlanError(f"{path}: {where}: prompt must be one of {', '.join(PROTOCOLS)}, got {_short(prompt)}")
        metrics = entry.get("metrics", ["iou", "dice"])
        if (
            not isinstance(metrics, list)
            or not metrics
            or any(not isinstance(m, str) or m not in METRICS for m in metrics)
        ):
            raise PlanError(f"{path}: {where}: metrics must be a non-empty list from {', '.join(METRICS)}")
        datasets.append(
            DatasetSpec(
                name,
                _path(entry, "train", where, path),
                _path(entry, "test", where, path),
                prompt,
                tuple(metrics),
                _overrides(entry, where, path, reserved),
            )
        )
    methods = []
    for i, entry in enumerate(_table_list(data, "methods", path)):
        where = f"methods[{i}]"
        name = _name(entry, where, path)
        where = f"methods[{i}] ({name})"
        reserved = {"name", "peft", "distill", "peft_options", "distill_options", "model"}
        for key in ("peft_options", "distill_options"):
            if not isinstance(entry.get(key, {}), dict):
                raise PlanError(f"{path}: {where}: {key} must be a table, e.g. {key} = {{alpha = 1.0}}")
        method_model = entry.get("model")
        if method_model is not None:
            method_model = _str(entry, "model", where, path)
        method = MethodSpec(
            name,
            _str(entry, "peft", where, path),
            _str(entry, "distill", where, path, NO_DISTILLATION),
            dict(entry.get("peft_options", {})),
            dict(entry.get("distill_options", {})),
            method_model,
            _overrides(entry, where, path, reserved),
        )
        if method.zero_shot and (method.distill != NO_DISTILLATION or method.train_overrides):
            raise PlanError(f"{path}: {where}: peft = 'none' (zero-shot) trains nothing: drop distill and settings")
        try:
            method.check_options()
        except (ValueError, TypeError) as exc:
            raise PlanError(f"{path}: {where}: {exc}") from None
        methods.append(method)
    if not datasets or not methods:
        raise PlanError(f"{path}: a plan needs at least one [[datasets]] and one [[methods]] entry")
    for kind, names in (("dataset", [d.name for d in datasets]), ("method", [m.name for m in methods])):
        parts = [key_part(n) for n in names]
        if len(set(parts)) != len(parts):
            raise PlanError(f"{path}: two {kind}s share a name: {_short(names)}")
    plan = Plan(path, tuple(seeds), tuple(datasets), tuple(methods), model, checkpoint, train, title)
    plan.runs(Path("."))  # validates every runnable method's settings now, before any long work
    return plan


def read_plan_text(path: Path) -> str:
    """The text of the plan file ``path``: a regular file (not a folder, FIFO or device: checked on the open file,
    so nothing blocks) of at most :data:`MAX_PLAN_BYTES`, in UTF-8; else :class:`PlanError`."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise PlanError(f"{path}: plan file not found") from None
    except IsADirectoryError:
        raise PlanError(f"{path}: is a folder; give the plan's .toml file") from None
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise PlanError(f"{path}: is a folder; give the plan's .toml file")
        raise PlanError(f"{path}: not a regular file (a pipe or a device); give the plan's .toml file")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_PLAN_BYTES + 1)
        except OSError as exc:
            raise PlanError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanError(f"{path}: over {MAX_PLAN_BYTES // (1 << 20)} MB; a plan is a small TOML file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path}: not UTF-8 text (byte {exc.start}); save the plan as UTF-8") from None


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file (see the module docstring); :class:`PlanError` names the problem."""
    path = Path(path)
    text = read_plan_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise PlanError(f"{path}: tables and arrays nested too deeply; a plan needs a few levels") from None
    try:
        return parse_plan(data, path)
    except (TypeError, RecursionError) as exc:  # a value of a shape no check above foresaw
        raise PlanError(f"{path}: {exc}") from None
