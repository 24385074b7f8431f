"""Run an experiment plan: train and evaluate every (dataset, method, seed), resumably.

``run_experiment(plan, out_dir, data_root)``: for each run of :meth:`Plan.runs`, train (PEFT + distiller,
:func:`~infosam_core.training.trainer.train`) on the dataset's train split, evaluate on its test split with its
prompt protocol and metrics (:func:`~infosam_core.evaluation.prompted.evaluate`, prompt seed = the run's
seed), and write ``OUT/runs/<key>.json`` atomically. A trained run is saved by
:func:`~infosam_core.training.runs.train_and_save` into ``OUT/adapters/<key>/`` (adapter files + history, for
``infosam eval --adapter``); its result file names the adapter. Zero-shot methods (``peft = "none"``) are only
evaluated.

Resuming: a run whose result file exists with the same settings fingerprint is never retrained; a run
interrupted before its file was written starts again from scratch; a run whose settings changed in the
plan is redone. After every run ``OUT/results.csv`` and ``OUT/table.md`` are rewritten from all finished
runs (:mod:`infosam_core.experiments.tables`).

Several workers (``infosam experiment --gpus 0,1,...``: one process per GPU) share one output folder: with
``claim_runs=True`` a worker takes a run only after creating its claim file ``OUT/runs/<key>.claim``
exclusively (:func:`claim_run`), so each run is trained once; a claim left by a dead worker is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infosam_core.data.datasets import SegmentationSample, load_folder_dataset
from infosam_core.evaluation.prompted import evaluate
from infosam_core.experiments.plan import Plan, RunSpec
from infosam_core.experiments.tables import write_outputs
from infosam_core.io.atomic import write_json_atomic
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import load_sam
from infosam_core.training.runs import train_and_save
from infosam_core.training.trainer import EpochCallback


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


def adapter_folder(out_dir: str | Path, run: RunSpec) -> Path:
    """Where a trained run's adapter files and history go."""
    return Path(out_dir) / "adapters" / run.key


def claim_path(out_dir: str | Path, run: RunSpec) -> Path:
    return Path(out_dir) / "runs" / f"{run.key}.claim"


def _claim_is_stale(path: Path) -> bool:
    """A claim whose worker process (on this host) is gone."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        pid, host = int(holder["pid"]), str(holder["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return True  # unreadable or half-written: its writer died before finishing a 50-byte write
    if host != socket.gethostname():
        return False  # another machine's worker: cannot tell, leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_run(out_dir: str | Path, run: RunSpec) -> bool:
    """Take ``run`` for this process: True when its claim file was created here (or a dead worker's claim was
    taken over), False when another live worker holds it."""
    path = claim_path(out_dir, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _claim_is_stale(path):
                return False
            path.unlink(missing_ok=True)  # the dead worker's claim; the next round creates ours
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, f)
        return True
    return False


def release_run(out_dir: str | Path, run: RunSpec) -> None:
    claim_path(out_dir, run).unlink(missing_ok=True)


def execute_run(
    run: RunSpec,
    base_sam: SamLike,
    train_samples: list[SegmentationSample],
    test_samples: list[SegmentationSample],
    callbacks: list[EpochCallback] | None = None,
    folder: Path | None = None,
) -> dict[str, Any]:
    """Train (unless zero-shot) and evaluate one run; the JSON-able record written to its result file. A trained
    run's adapter files and history are saved into ``folder`` (None: not saved)."""
    t0 = time.monotonic()
    steps, stop_reason, history, model = 0, "zero-shot", [], base_sam
    adapter: str | None = None
    if run.config is not None:
        facts = {"dataset": run.dataset.name, "method": run.method.name, "seed": run.seed}
        saved = train_and_save(run.config, base_sam, train_samples, folder, facts=facts, callbacks=callbacks)
        result = saved.result
        model, steps, stop_reason, history = result.model, result.steps, result.stop_reason, result.history
        adapter = str(saved.files.adapter) if saved.files is not None else None
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
        "adapter": adapter,
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
    claim_runs: bool = False,
) -> list[dict[str, Any]]:
    """Run every unfinished run of ``plan`` into ``out_dir`` (see the module docstring); returns the records
    of all finished runs in table order (dataset, method, seed; runs execute seed by seed). ``should_stop()`` is
    checked between runs; ``callbacks_for(run, train_samples)`` gives a run's epoch-end callbacks (e.g.
    relation-map figures); ``claim_runs``: share ``out_dir`` with other workers (see the module docstring)."""
    out_dir = Path(out_dir)
    runs = plan.runs(data_root)
    records: dict[str, dict[str, Any]] = {}
    for run in runs:
        if (record := finished_record(out_dir, run)) is not None:
            records[run.key] = record
    models: dict[tuple[str, str | None], SamLike] = {}
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
        if claim_runs:
            if (record := finished_record(out_dir, run)) is not None:  # another worker finished it meanwhile
                records[run.key] = record
                continue
            if not claim_run(out_dir, run):
                continue  # another worker is on it
        left = len(runs) - len(records)
        eta = spent / ran * left if ran else None
        if progress is not None:
            progress(ExperimentProgress(len(records), len(runs), run, False, eta_s=eta))
        t0 = time.monotonic()
        model_key = (run.model, run.checkpoint)
        if model_key not in models:
            models[model_key] = load_sam(run.model, run.checkpoint)
        callbacks = callbacks_for(run, samples(run.dataset.train)) if callbacks_for is not None else None
        try:
            record = execute_run(
                run,
                models[model_key],
                samples(run.dataset.train),
                samples(run.dataset.test),
                callbacks,
                folder=adapter_folder(out_dir, run),
            )
            write_json_atomic(result_path(out_dir, run), record)
        finally:
            if claim_runs:
                release_run(out_dir, run)
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
