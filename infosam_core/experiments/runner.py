"""Run an experiment plan: train and evaluate every (dataset, method, seed), resumably.

``run_experiment(plan, out_dir, data_root)``: for each run of :meth:`Plan.runs`, train (PEFT + distiller,
:func:`~infosam_core.training.trainer.train`) on the dataset's train split, evaluate on its test split with its
prompt protocol and metrics (:func:`~infosam_core.evaluation.prompted.evaluate`, prompt seed = the run's
seed), and write ``OUT/runs/<key>.json`` atomically. Zero-shot methods (``peft = "none"``) are only evaluated.

Resuming: a run whose result file exists with the same settings fingerprint is never retrained; a run
interrupted before its file was written starts again from scratch; a run whose settings changed in the
plan is redone. After every run ``OUT/results.csv`` and ``OUT/table.md`` are rewritten from all finished
runs (:mod:`infosam_core.experiments.tables`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segment_anything.modeling import Sam

from infosam_core.data.datasets import SegmentationSample, load_folder_dataset
from infosam_core.evaluation.prompted import evaluate
from infosam_core.experiments.plan import Plan, RunSpec
from infosam_core.experiments.tables import write_outputs
from infosam_core.io.atomic import write_json_atomic
from infosam_core.models.registry import load_sam
from infosam_core.training.trainer import EpochCallback, train


@dataclass
class ExperimentProgress:
    """Reported when a run starts (``finished=False``) and ends. ``done`` counts finished runs, including
    those found finished from an earlier call; ``eta_s`` is the mean time of the runs done in this call times
    the runs left (None before the first)."""

    done: int
    total: int
    run: RunSpec
    finished: bool
    record: dict[str, Any] | None = None
    eta_s: float | None = None


def result_path(out_dir: str | Path, run: RunSpec) -> Path:
    return Path(out_dir) / "runs" / f"{run.key}.json"


def finished_record(out_dir: str | Path, run: RunSpec) -> dict[str, Any] | None:
    """The stored result of ``run`` when it exists and was made with the same settings; else None."""
    path = result_path(out_dir, run)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if record.get("fingerprint") == run.fingerprint() else None


def execute_run(
    run: RunSpec,
    base_sam: Sam,
    train_samples: list[SegmentationSample],
    test_samples: list[SegmentationSample],
    callbacks: list[EpochCallback] | None = None,
) -> dict[str, Any]:
    """Train (unless zero-shot) and evaluate one run; the JSON-able record written to its result file."""
    t0 = time.monotonic()
    steps, stop_reason, history, model = 0, "zero-shot", [], base_sam
    if run.config is not None:
        result = train(run.config, base_sam, train_samples, callbacks=callbacks)
        model, steps, stop_reason, history = result.model, result.steps, result.stop_reason, result.history
    train_s = time.monotonic() - t0
    t1 = time.monotonic()
    evaluation = evaluate(model, test_samples, run.dataset.prompt, seed=run.seed, metrics=run.dataset.metrics)
    return {
        "dataset": run.dataset.name,
        "method": run.method.name,
        "seed": run.seed,
        "metrics": evaluation.mean,
        "n_test_images": len(evaluation.rows),
        "skipped_images": evaluation.skipped,
        "steps": steps,
        "stop_reason": stop_reason,
        "train_s": round(train_s, 2),
        "eval_s": round(time.monotonic() - t1, 2),
        "history": history,
        "fingerprint": run.fingerprint(),
        "settings": run.settings(),
        "config": asdict(run.config) if run.config is not None else None,
    }


def _spec(plan: Plan, run: RunSpec):
    """The plan's dataset entry of ``run`` (whose paths were resolved against the data root)."""
    return next(d for d in plan.datasets if d.name == run.dataset.name)


def table_order(plan: Plan, runs: list[RunSpec]) -> list[RunSpec]:
    """``runs`` in the tables' order: dataset, method, seed (as the plan lists them)."""
    return sorted(
        runs,
        key=lambda r: (plan.datasets.index(_spec(plan, r)), plan.methods.index(r.method), plan.seeds.index(r.seed)),
    )


def write_report(plan: Plan, out_dir: str | Path, data_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Rewrite ``results.csv`` and ``table.md`` from the finished runs without running anything; returns them."""
    records = [rec for r in table_order(plan, plan.runs(data_root)) if (rec := finished_record(out_dir, r))]
    write_outputs(plan, records, out_dir)
    return records


def run_experiment(
    plan: Plan,
    out_dir: str | Path,
    data_root: str | Path | None = None,
    progress: Callable[[ExperimentProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    callbacks_for: Callable[[RunSpec, list[SegmentationSample]], list[EpochCallback]] | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished run of ``plan`` into ``out_dir`` (see the module docstring); returns the records
    of all finished runs in table order (dataset, method, seed; runs execute seed by seed). ``should_stop()`` is checked between runs; ``callbacks_for(run, train_samples)`` gives a run's epoch-end callbacks (e.g. relation-map figures)."""
    out_dir = Path(out_dir)
    runs = plan.runs(data_root)
    records: dict[str, dict[str, Any]] = {}
    for run in runs:
        if (record := finished_record(out_dir, run)) is not None:
            records[run.key] = record
    models: dict[tuple[str, str | None], Sam] = {}
    datasets: dict[str, list[SegmentationSample]] = {}

    def samples(path: str) -> list[SegmentationSample]:
        if path not in datasets:
            datasets[path] = load_folder_dataset(path)
        return datasets[path]

    # check every dataset before the first long run: a wrong path fails now, not after hours
    for run in runs:
        if run.key not in records:
            samples(run.dataset.train)
            samples(run.dataset.test)

    in_table_order = table_order(plan, runs)

    def ordered() -> list[dict[str, Any]]:
        return [records[r.key] for r in in_table_order if r.key in records]

    if records:
        write_outputs(plan, ordered(), out_dir)
    spent, ran = 0.0, 0
    for run in runs:
        if run.key in records:
            continue
        if should_stop is not None and should_stop():
            break
        left = len(runs) - len(records)
        eta = spent / ran * left if ran else None
        if progress is not None:
            progress(ExperimentProgress(len(records), len(runs), run, False, eta_s=eta))
        t0 = time.monotonic()
        model_key = (run.model, run.checkpoint)
        if model_key not in models:
            models[model_key] = load_sam(run.model, run.checkpoint)
        callbacks = callbacks_for(run, samples(run.dataset.train)) if callbacks_for is not None else None
        record = execute_run(run, models[model_key], samples(run.dataset.train), samples(run.dataset.test), callbacks)
        write_json_atomic(result_path(out_dir, run), record)
        records[run.key] = record
        spent += time.monotonic() - t0
        ran += 1
        write_outputs(plan, ordered(), out_dir)
        if progress is not None:
            left = len(runs) - len(records)
            progress(ExperimentProgress(len(records), len(runs), run, True, record=record, eta_s=spent / ran * left))
    if not records:
        write_outputs(plan, [], out_dir)
    return ordered()
