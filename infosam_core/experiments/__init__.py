"""Experiments: plans of (dataset, method, seed) runs (:mod:`.plan`), their resumable execution
(:mod:`.runner`) and the result files, ``results.csv`` and the paper-layout ``table.md`` (:mod:`.tables`)."""

from infosam_core.experiments.plan import DatasetSpec, MethodSpec, Plan, PlanError, RunSpec, load_plan
from infosam_core.experiments.runner import ExperimentProgress, run_experiment

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
