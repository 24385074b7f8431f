"""`infosam experiment`: train and evaluate every (dataset, method, seed) of a plan; resumable.

    infosam experiment experiments/peft_table.toml --data-root /data --out runs/peft
    infosam experiment experiments/distill_table.toml --dry-run
    infosam experiment experiments/peft_table.toml --data-root /data --out runs/peft --gpus 0,1,2,3

Writes ``OUT/runs/<dataset>__<method>__seed<k>.json`` per run, ``OUT/results.csv`` (one row per run) and
``OUT/table.md`` (the paper's layout, mean ± std x100). Calling it again skips finished runs; an
interrupted run starts again. Several runners may share one ``--out``: each run is trained by the one runner
holding its OS lock. ``--gpus`` spreads the independent runs over GPUs: one worker process per GPU
(``CUDA_VISIBLE_DEVICES`` set to it), each taking the next free run, so one run per GPU at a time. The
plan format: :mod:`infosam_core.experiments.plan` and docs/EXPERIMENTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path

from infosam_core.cli import CLIError, InterruptToStop


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run a plan of (dataset, method, seed) trainings + evaluations; writes results.csv and table.md",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("plan", type=Path, help="plan file (TOML), e.g. experiments/peft_table.toml")
    parser.add_argument("--out", type=Path, help="output folder (required unless --dry-run)")
    parser.add_argument(
        "--data-root", type=Path, help="folder the plan's relative dataset paths resolve against (default: .)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs (and what is finished) and stop")
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rewrite results.csv and table.md from the runs already finished in --out (runs nothing)",
    )
    parser.add_argument(
        "--relation-maps",
        type=int,
        default=0,
        metavar="N",
        help="draw InfoSAM relation maps of N training images after every epoch, to OUT/relation_maps/<run>/",
    )
    parser.add_argument(
        "--gpus",
        metavar="IDS",
        help="spread the runs over these GPUs, one run per GPU at a time (e.g. 0,1,2,3; one worker process each)",
    )
    parser.add_argument("--claim-runs", action="store_true", help=argparse.SUPPRESS)  # set on --gpus workers
    parser.add_argument("--quiet-notes", action="store_true", help=argparse.SUPPRESS)  # set on --gpus workers
    parser.set_defaults(func=run)


def parse_gpus(text: str) -> list[str]:
    """``"0,1,3"`` -> ``["0", "1", "3"]``: distinct non-negative integers, else CLIError."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise CLIError(f"--gpus {text!r}: expected distinct GPU numbers separated by commas, e.g. 0,1,2,3")
    return ids


def check_gpus(ids: list[str]) -> None:
    """Refuse GPU numbers this machine does not have, before any run starts."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [i for i in ids if int(i) >= count]
    if missing:
        raise CLIError(f"--gpus: no GPU {', '.join(missing)} here ({count} CUDA device(s) visible)")


def run_on_gpus(args: argparse.Namespace, ids: list[str]) -> int:
    """One worker process per GPU over the same --out (runs are claimed, so each trains once); then the
    tables from every worker's results. Each worker's lines are prefixed with its GPU."""
    argv = [sys.executable, "-m", "infosam_core", "experiment", str(args.plan), "--out", str(args.out), "--claim-runs"]
    argv += ["--quiet-notes"]  # the parent printed the plan's notes once
    if args.data_root is not None:
        argv += ["--data-root", str(args.data_root)]
    if args.relation_maps:
        argv += ["--relation-maps", str(args.relation_maps)]
    workers = []
    for gpu in ids:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu)
        workers.append(
            (gpu, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        )

    def relay(gpu: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None  # started with stdout=PIPE
        for line in proc.stdout:
            print(f"[gpu {gpu}] {line}", end="", flush=True)

    relays = [threading.Thread(target=relay, args=w, daemon=True) for w in workers]
    for t in relays:
        t.start()
    try:
        codes = [proc.wait() for _, proc in workers]
    except KeyboardInterrupt:  # the workers got the same Ctrl-C: wait for them to stop after their run
        codes = [proc.wait() for _, proc in workers]
    for t in relays:
        t.join(timeout=5)
    from infosam_core.experiments.plan import load_plan
    from infosam_core.experiments.runner import write_report

    plan = load_plan(args.plan)
    records = write_report(plan, args.out, args.data_root, warn=_warn)
    total = len(plan.runs(args.data_root))
    ok, failed = _counts(records)
    print(f"{ok}/{total} runs finished{_failed_text(failed)} on GPUs {','.join(ids)} -> {args.out / 'table.md'}")
    return 0 if ok == total and not any(codes) else 1


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _counts(records: list[dict]) -> tuple[int, int]:
    """(finished, failed) among stored records."""
    failed = sum(1 for r in records if r.get("status") == "failed")
    return len(records) - failed, failed


def _failed_text(failed: int) -> str:
    return f", {failed} failed (see table.md)" if failed else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run(args: argparse.Namespace) -> int:
    from infosam_core.experiments.plan import PlanError, load_plan

    try:
        plan = load_plan(args.plan)
        runs = plan.runs(args.data_root)
    except PlanError as exc:
        raise CLIError(str(exc)) from None
    # the runner (training, evaluation) is imported once the plan is known good: a bad plan is refused sooner
    from infosam_core.experiments.runner import check_record, run_experiment, write_report

    if not args.quiet_notes:
        for line in plan.absolute_paths():
            _warn(f"note: {line}")
    unavailable = plan.unavailable()
    if args.dry_run:
        print(
            f"{args.plan}: {len(plan.datasets)} dataset(s) x {len(plan.methods)} method(s) x {len(plan.seeds)} seed(s)"
        )
        for r in runs:
            record, problem = check_record(args.out, r) if args.out is not None else (None, None)
            if problem:
                _warn(f"warning: {problem}; the run will be redone")
            state = "todo" if record is None else "done" if record.get("status", "ok") == "ok" else "FAIL"
            what = "zero-shot" if r.config is None else f"{r.config.peft} + {r.config.distill}, {r.config.epochs} ep"
            print(f"  {state}  {r.key}  ({what}, {r.dataset.prompt}, {r.model})")
        for name, why in unavailable.items():
            print(f"  n/a   {name}: {why}")
        print(f"{len(runs)} run(s); {len(unavailable)} method(s) not available yet")
        return 0
    if args.out is None:
        raise CLIError("--out is required (the folder for results.csv, table.md and the per-run files)")
    if args.relation_maps < 0:
        raise CLIError("--relation-maps must be >= 0")
    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out}: is a file; give a folder (it is created if missing)")
    from infosam_core.experiments.tables import OutputsNotOursError, check_outputs_are_ours

    try:
        check_outputs_are_ours(args.out)  # before any worker starts (the runner checks again)
    except OutputsNotOursError as exc:
        raise CLIError(str(exc)) from None
    if args.report:
        try:
            records = write_report(plan, args.out, args.data_root, warn=_warn)
        except ValueError as exc:  # OutputsNotOursError
            raise CLIError(str(exc)) from None
        except OSError as exc:
            raise CLIError(f"{args.out}: cannot write the tables ({exc.strerror or exc})") from None
        ok, failed = _counts(records)
        print(
            f"{ok}/{len(runs)} runs finished{_failed_text(failed)} -> {args.out / 'results.csv'}, {args.out / 'table.md'}"
        )
        return 0
    if args.gpus is not None:
        ids = parse_gpus(args.gpus)
        check_gpus(ids)
        return run_on_gpus(args, ids)
    for name, why in unavailable.items():
        print(f"skipping {name}: {why}", flush=True)

    interrupts = InterruptToStop(
        "stopping after this run (Ctrl-C again to abort; the current run then restarts next time)"
    )

    def report(p) -> None:
        label = f"{p.run.dataset.name} / {p.run.method.name} / seed {p.run.seed}"
        if not p.finished:
            print(f"[{p.done + 1}/{p.total}] {label} ... (ETA {_duration(p.eta_s)})", flush=True)
            return
        if p.record.get("status") == "failed":
            print(f"[{p.done}/{p.total}] FAILED: {p.record['error']} (the other runs go on)", flush=True)
            return
        metrics = ", ".join(f"{k} {100 * v:.1f}" for k, v in p.record["metrics"].items())
        took = p.record["train_s"] + p.record["eval_s"]
        print(f"[{p.done}/{p.total}] done in {_duration(took)}: {metrics}; ETA {_duration(p.eta_s)}", flush=True)

    callbacks_for = None
    if args.relation_maps:
        from infosam_core.evaluation.relation_maps import RelationMapRecorder

        def callbacks_for(run_spec, train_samples):
            return [RelationMapRecorder(args.out / "relation_maps" / run_spec.key, train_samples, args.relation_maps)]

    try:
        records = run_experiment(
            plan, args.out, args.data_root, report, interrupts.stop.is_set, callbacks_for, warn=_warn
        )
    except (
        ValueError,
        OSError,
    ) as exc:  # PlanError (device), OutputsNotOursError, DatasetError, CheckpointError, unwritable output
        raise CLIError(str(exc)) from None
    finally:
        interrupts.restore()
    ok, failed = _counts(records)
    print(
        f"{ok}/{len(runs)} runs finished{_failed_text(failed)} -> {args.out / 'results.csv'}, {args.out / 'table.md'}"
    )
    if args.claim_runs:  # a --gpus worker: the parent reports the whole experiment
        return 0
    return 0 if ok == len(runs) else 1
