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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

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
        """A file-name-safe unique name: ``<dataset>__<method>__seed<k>``."""
        return f"{slug(self.dataset.name)}__{slug(self.method.name)}__seed{self.seed}"

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
        root = Path(data_root) if data_root is not None else Path.cwd()
        runs = []
        for dataset in self.datasets:
            resolved = dataclasses.replace(dataset, train=str(root / dataset.train), test=str(root / dataset.test))
            for seed in self.seeds:
                for method in self.methods:
                    if not method.missing(self.model):
                        runs.append(self._run(resolved, method, seed, root))
        return runs

    def unavailable(self) -> dict[str, str]:
        """Method name -> why it cannot run yet."""
        return {m.name: reason for m in self.methods if (reason := m.missing(self.model))}

    def _run(self, dataset: DatasetSpec, method: MethodSpec, seed: int, root: Path) -> RunSpec:
        model = method.model or self.model
        checkpoint = str(root / self.checkpoint) if self.checkpoint and model == self.model else None
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
    """``Adapter+InfoSAM`` -> ``Adapter+InfoSAM``; anything outside [A-Za-z0-9+._-] becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9+._-]+", "_", name).strip("_") or "_"


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
    return rest


def _str(entry: dict[str, Any], key: str, where: str, path: Path, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        raise PlanError(f"{path}: {where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def parse_plan(data: dict[str, Any], path: Path) -> Plan:
    """A :class:`Plan` from a parsed TOML document (``path`` is only used in messages)."""
    top = {"seeds", "train", "datasets", "methods", "model", "checkpoint", "title"}
    unknown = sorted(set(data) - top)
    if unknown:
        raise PlanError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected {', '.join(sorted(top))}")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise PlanError(f"{path}: 'seeds' must be a non-empty list of integers, e.g. seeds = [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise PlanError(f"{path}: 'seeds' lists a seed twice: {seeds}")
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise PlanError(f"{path}: [train] must be a table of training settings")
    train = _overrides(train, "[train]", path, set())

    datasets = []
    for i, entry in enumerate(data.get("datasets", [])):
        where = f"datasets[{i}] ({entry.get('name', '?')})"
        reserved = {"name", "train", "test", "prompt", "metrics"}
        prompt = _str(entry, "prompt", where, path, "box")
        if prompt not in PROTOCOLS:
            raise PlanError(f"{path}: {where}: prompt must be one of {', '.join(PROTOCOLS)}, got {prompt!r}")
        metrics = entry.get("metrics", ["iou", "dice"])
        if not isinstance(metrics, list) or not metrics or any(m not in METRICS for m in metrics):
            raise PlanError(f"{path}: {where}: metrics must be a non-empty list from {', '.join(METRICS)}")
        datasets.append(
            DatasetSpec(
                _str(entry, "name", where, path),
                _str(entry, "train", where, path),
                _str(entry, "test", where, path),
                prompt,
                tuple(metrics),
                _overrides(entry, where, path, reserved),
            )
        )
    methods = []
    for i, entry in enumerate(data.get("methods", [])):
        where = f"methods[{i}] ({entry.get('name', '?')})"
        reserved = {"name", "peft", "distill", "peft_options", "distill_options", "model"}
        for key in ("peft_options", "distill_options"):
            if not isinstance(entry.get(key, {}), dict):
                raise PlanError(f"{path}: {where}: {key} must be a table, e.g. {key} = {{alpha = 1.0}}")
        method = MethodSpec(
            _str(entry, "name", where, path),
            _str(entry, "peft", where, path),
            _str(entry, "distill", where, path, NO_DISTILLATION),
            dict(entry.get("peft_options", {})),
            dict(entry.get("distill_options", {})),
            entry.get("model"),
            _overrides(entry, where, path, reserved),
        )
        if method.zero_shot and (method.distill != NO_DISTILLATION or method.train_overrides):
            raise PlanError(f"{path}: {where}: peft = 'none' (zero-shot) trains nothing: drop distill and settings")
        try:
            method.check_options()
        except ValueError as exc:
            raise PlanError(f"{path}: {where}: {exc}") from None
        methods.append(method)
    if not datasets or not methods:
        raise PlanError(f"{path}: a plan needs at least one [[datasets]] and one [[methods]] entry")
    for kind, names in (("dataset", [d.name for d in datasets]), ("method", [m.name for m in methods])):
        slugs = [slug(n) for n in names]
        if len(set(slugs)) != len(slugs):
            raise PlanError(f"{path}: two {kind}s share a name (after making it file-safe): {names}")
    model = data.get("model", "tiny")
    plan = Plan(
        path, tuple(seeds), tuple(datasets), tuple(methods), model, data.get("checkpoint"), train, data.get("title", "")
    )
    plan.runs(Path("."))  # validates every runnable method's settings now, before any long work
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file; :class:`PlanError` names the problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"{path}: plan file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: not valid TOML ({exc})") from None
    try:
        return parse_plan(data, path)
    except TypeError as exc:  # e.g. a setting of the wrong type reaching TrainConfig
        raise PlanError(f"{path}: {exc}") from None
