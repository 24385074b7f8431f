"""Experiments: plans of (dataset, method, seed) runs (:mod:`.plan`), their resumable execution
(:mod:`.runner`) and the result files, ``results.csv`` and the paper-layout ``table.md`` (:mod:`.tables`).

The exports are imported on first use (PEP 562): ``infosam experiment`` reads and checks its plan
(:mod:`.plan`) before the runner, with training and evaluation under it, is imported, so a bad plan is refused
in the CLI's start-up time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infosam_core.lazy_exports import lazy_getattr

if TYPE_CHECKING:
    from infosam_core.experiments.plan import DatasetSpec, MethodSpec, Plan, PlanError, RunSpec, load_plan
    from infosam_core.experiments.runner import ExperimentProgress, run_experiment

_PLAN = "infosam_core.experiments.plan"
_RUNNER = "infosam_core.experiments.runner"
_LAZY = {
    "DatasetSpec": _PLAN,
    "MethodSpec": _PLAN,
    "Plan": _PLAN,
    "PlanError": _PLAN,
    "RunSpec": _PLAN,
    "load_plan": _PLAN,
    "ExperimentProgress": _RUNNER,
    "run_experiment": _RUNNER,
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "DatasetSpec",
    "ExperimentProgress",
    "MethodSpec",
    "Plan",
    "PlanError",
    "RunSpec",
    "load_plan",
    "run_experiment",
]
