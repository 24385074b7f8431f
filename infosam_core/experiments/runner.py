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
plan is redone. The fingerprint holds the resolved paths, so any spelling of ``--data-root`` gives the same
one. A result file that is not a run record (damaged, not UTF-8, not a JSON object, missing or wrong metrics,
a folder) is reported in one line (``warn``); a real run moves it aside to ``<name>.corrupt-<time>`` and redoes
the run. A run whose loss or gradients stop being finite (:class:`~infosam_core.training.results.TrainingError`)
is recorded as failed (``"status": "failed"`` and the reason; not retried on resume: delete its file to retry)
and the experiment goes on with the other runs. After every run ``OUT/results.csv`` and ``OUT/table.md`` are
rewritten from all finished runs on disk (:mod:`infosam_core.experiments.tables`), under ``OUT/.outputs.lock``;
a ``results.csv`` or ``table.md`` already in ``OUT`` that this runner did not write is never overwritten
(:class:`OutputsNotOursError`, before any run).

Work assignment: any number of runners (``infosam experiment`` twice, or ``--gpus 0,1,...``: one worker process
per GPU) may share one output folder. A runner trains a run only while it holds the run's OS file lock
``OUT/runs/<key>.lock`` (:func:`claim_run`; ``flock``/``LockFileEx`` through ``filelock``, as the project store):
the lock is exclusive, and the OS releases it when its holder exits or is killed, so no stale claim can block a
run and no process id can be mistaken for a holder. A runner first takes every free run; then it waits for each
run held by another runner: when the lock comes free the run is either finished (its record is taken) or its
holder died (the run is trained here). Each run is trained once, and a runner killed mid-run leaves the others
to finish every run.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from infosam_core.data.datasets import SegmentationSample, load_folder_dataset
from infosam_core.evaluation.prompted import evaluate
from infosam_core.experiments.plan import Plan, RunSpec
from infosam_core.experiments.tables import check_outputs_are_ours, write_outputs
from infosam_core.io.atomic import write_json_atomic
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import load_sam
from infosam_core.training.results import TrainingError
from infosam_core.training.runs import train_and_save
from infosam_core.training.trainer import EpochCallback

MAX_RECORD_BYTES = 64 << 20  # a run record is a few KB (its per-epoch history); more is not one
STATUS_OK = "ok"
STATUS_FAILED = "failed"


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


def record_problem(record: Any) -> str | None:
    """Why ``record`` (parsed JSON) is not a run record this runner wrote, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not a run record (an object)"
    status = record.get("status", STATUS_OK)
    if status not in (STATUS_OK, STATUS_FAILED):
        return f"unknown status {str(status)[:40]!r}"
    for key, kind in (("fingerprint", str), ("dataset", str), ("method", str)):
        if not isinstance(record.get(key), kind):
            return f"field {key!r} missing or not a string"
    if not isinstance(record.get("seed"), int) or isinstance(record.get("seed"), bool):
        return "field 'seed' missing or not a whole number"
    if status == STATUS_FAILED:
        return None if isinstance(record.get("error"), str) else "a failed run without its 'error'"
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()
    ):
        return "field 'metrics' missing or not an object of numbers"
    for key in ("steps", "train_s", "eval_s"):
        value = record.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"field {key!r} is not a number"
    return None


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` for a readable run record at ``path``; ``(None, None)`` when there is no file;
    ``(None, problem)`` (one line naming the file) when something there is not a run record. Never blocks on a
    FIFO and reads at most :data:`MAX_RECORD_BYTES`."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None, f"{path}: not a regular file"
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_RECORD_BYTES + 1)
        except OSError as exc:
            return None, f"{path}: cannot be read ({exc.strerror or exc})"
    if len(raw) > MAX_RECORD_BYTES:
        return None, f"{path}: over {MAX_RECORD_BYTES >> 20} MB, not a run record"
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"{path}: not a JSON run record ({str(exc)[:80]})"
    if problem := record_problem(record):
        return None, f"{path}: {problem}"
    return record, None


def check_record(out_dir: str | Path, run: RunSpec) -> tuple[dict[str, Any] | None, str | None]:
    """The stored record of ``run`` (finished or failed) when it exists and was made with the same settings,
    else None; and the problem with a file that is there but not a run record (one line), else None."""
    record, problem = read_record(result_path(out_dir, run))
    if record is None or record["fingerprint"] != run.fingerprint():
        return None, problem
    return record, None


def finished_record(out_dir: str | Path, run: RunSpec) -> dict[str, Any] | None:
    """The stored record of ``run`` (see :func:`check_record`), or None."""
    return check_record(out_dir, run)[0]


def move_aside(path: Path) -> Path:
    """Rename a damaged result file (or folder) to ``<name>.corrupt-<time>`` beside it; returns the new path."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    return target


def adapter_folder(out_dir: str | Path, run: RunSpec) -> Path:
    """Where a trained run's adapter files and history go."""
    return Path(out_dir) / "adapters" / run.key


def claim_path(out_dir: str | Path, run: RunSpec) -> Path:
    """The run's lock file (it stays on disk; holding its OS lock is the claim)."""
    return Path(out_dir) / "runs" / f"{run.key}.lock"


def claim_run(out_dir: str | Path, run: RunSpec, timeout: float = 0.0) -> FileLock | None:
    """Take ``run`` for this process: its acquired lock (release it when the run's record is written), or None
    when another runner holds it after ``timeout`` seconds (0: do not wait). See the module docstring."""
    path = claim_path(out_dir, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=timeout)
    try:
        lock.acquire(timeout=timeout, poll_interval=0.05)
    except Timeout:
        return None
    return lock


def release_run(lock: FileLock) -> None:
    lock.release()


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
        "runner": runner_identity(),
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


def failed_record(run: RunSpec, error: BaseException, seconds: float) -> dict[str, Any]:
    """The record of a run whose training failed (``status = "failed"``, the reason in ``error``)."""
    return {
        "status": STATUS_FAILED,
        "dataset": run.dataset.name,
        "method": run.method.name,
        "seed": run.seed,
        "error": str(error).splitlines()[0] if str(error) else type(error).__name__,
        "train_s": round(seconds, 2),
        "fingerprint": run.fingerprint(),
        "settings": run.settings(),
        "runner": runner_identity(),
    }


def runner_identity() -> dict[str, Any]:
    """Which process ran a run (kept in its record: shows which runner trained it)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def stored_records(
    plan: Plan, runs: list[RunSpec], out_dir: str | Path, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Every stored record (finished or failed) of ``runs`` in table order; a file that is not a run record is
    reported through ``warn`` and left out."""
    records = []
    for run in table_order(plan, runs):
        record, problem = check_record(out_dir, run)
        if problem and warn is not None:
            warn(f"warning: {problem}; left out")
        if record is not None:
            records.append(record)
    return records


def _write_tables(plan: Plan, runs: list[RunSpec], out_dir: Path) -> list[dict[str, Any]]:
    """Rewrite the tables from every record on disk (other runners' too), one writer at a time."""
    with FileLock(str(out_dir / ".outputs.lock")):
        records = stored_records(plan, runs, out_dir)
        write_outputs(plan, records, out_dir)
    return records


def write_report(
    plan: Plan, out_dir: str | Path, data_root: str | Path | None = None, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Rewrite ``results.csv`` and ``table.md`` from the stored runs without running anything; returns the
    records (finished and failed). Refuses (:class:`OutputsNotOursError`) to overwrite tables it did not write."""
    out_dir = Path(out_dir)
    check_outputs_are_ours(out_dir)
    runs = plan.runs(data_root)
    records = stored_records(plan, runs, out_dir, warn)
    out_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir / ".outputs.lock")):
        write_outputs(plan, records, out_dir)
    return records


def run_experiment(
    plan: Plan,
    out_dir: str | Path,
    data_root: str | Path | None = None,
    progress: Callable[[ExperimentProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    callbacks_for: Callable[[RunSpec, list[SegmentationSample]], list[EpochCallback]] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished run of ``plan`` into ``out_dir`` (see the module docstring); returns the records
    of all stored runs (finished and failed, ``record["status"]``) in table order (dataset, method, seed; runs
    execute seed by seed). ``should_stop()`` is checked between runs and while waiting for other runners;
    ``callbacks_for(run, train_samples)`` gives a run's epoch-end callbacks (e.g. relation-map figures);
    ``warn(line)`` gets one line per damaged result file. Before any run: the tables in ``out_dir`` must be
    this runner's (:class:`~infosam_core.experiments.tables.OutputsNotOursError`), every device must exist
    (:class:`~infosam_core.experiments.plan.PlanError`) and every dataset still to run must load."""
    out_dir = Path(out_dir)
    check_outputs_are_ours(out_dir)
    plan.check_devices()
    runs = plan.runs(data_root)
    records: dict[str, dict[str, Any]] = {}
    warned: set[str] = set()  # runs whose damaged file was reported up front: one line per damaged file
    for run in runs:
        record, problem = check_record(out_dir, run)
        if record is not None:
            records[run.key] = record
        elif problem and warn is not None:
            warn(f"warning: {problem}; the run is redone (the damaged file kept beside it as *.corrupt-*)")
            warned.add(run.key)
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

    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    if records:
        _write_tables(plan, runs, out_dir)
    spent, ran = 0.0, 0
    stopped = False

    def attempt(run: RunSpec, wait: bool) -> bool:
        """Do ``run`` if this runner can claim it (waiting for its holder when ``wait``); True when settled."""
        nonlocal spent, ran, stopped
        lock = claim_run(out_dir, run)
        while lock is None and wait:
            if should_stop is not None and should_stop():
                stopped = True
                return False
            lock = claim_run(out_dir, run, timeout=0.5)
        if lock is None:
            return False  # another runner is on it
        try:
            record, problem = check_record(out_dir, run)  # another runner may have finished it meanwhile
            if record is not None:
                records[run.key] = record
                return True
            path = result_path(out_dir, run)
            if problem is not None and (path.exists() or path.is_symlink()):
                moved = move_aside(path)
                if warn is not None and run.key not in warned:  # damaged since this runner started
                    warn(f"warning: {problem}; moved to {moved.name}, the run is redone")
            left = len(runs) - len(records)
            if progress is not None:
                progress(
                    ExperimentProgress(len(records), len(runs), run, False, eta_s=spent / ran * left if ran else None)
                )
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
            except TrainingError as exc:  # diverged: recorded, the other runs go on
                record = failed_record(run, exc, time.monotonic() - t0)
            write_json_atomic(path, record)
        finally:
            release_run(lock)
        records[run.key] = record
        spent += time.monotonic() - t0
        ran += 1
        _write_tables(plan, runs, out_dir)
        if progress is not None:
            left = len(runs) - len(records)
            progress(ExperimentProgress(len(records), len(runs), run, True, record=record, eta_s=spent / ran * left))
        return True

    for wait in (False, True):  # first every free run, then those other runners hold (or held when they died)
        for run in runs:
            if run.key in records:
                continue
            if stopped or (should_stop is not None and should_stop()):
                stopped = True
                break
            attempt(run, wait)
    return _write_tables(plan, runs, out_dir)
