"""The outputs of an experiment: ``results.csv`` (one row per finished run) and ``table.md`` (the paper's layout).

``table.md``: one row per method (plan order), the datasets as column groups (one column per metric, named
``<dataset> <metric>``), each cell ``mean ± std`` over the seeds, x100 like the paper, with one decimal. The
std is the sample standard deviation (ddof = 1; a single seed shows the value alone). A cell with fewer
finished seeds than planned says ``(n=k)``; a method that cannot run yet shows ``n/a`` and the reason below the table;
a failed run (``status = "failed"``: its training diverged) is left out of both files and named below the table.

Both files are only ever overwritten when they are this module's (:func:`check_outputs_are_ours`): a user's own
``results.csv`` or ``table.md`` in the output folder is refused, never replaced.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.experiments.plan import Plan
from infosam_core.io.atomic import write_text_atomic

TIMING_COLUMNS = ("steps", "train_s", "eval_s")
CSV_HEADER_START = "dataset,method,seed"
TABLE_MARK = "Mean ± std over seeds"  # the first line of every table.md written here (after the title)


class OutputsNotOursError(ValueError):
    """``results.csv`` or ``table.md`` in the output folder was not written by an experiment: not overwritten."""


def _is_ours(path: Path) -> bool:
    """Whether ``path`` (an existing entry) is a results.csv / table.md this module wrote (read: 4 KB at most)."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    lines = head.splitlines()
    if path.name == "results.csv":
        return (
            bool(lines) and lines[0].startswith(CSV_HEADER_START + ",") and lines[0].endswith(",".join(TIMING_COLUMNS))
        )
    return any(line.startswith(TABLE_MARK) for line in lines[:3])


def check_outputs_are_ours(out_dir: str | Path) -> None:
    """Refuse (:class:`OutputsNotOursError`) an output folder whose ``results.csv`` or ``table.md`` exists and
    was not written here: the user's own file is kept; the fix is another ``--out`` or moving the file away."""
    for name in ("results.csv", "table.md"):
        path = Path(out_dir) / name
        if (path.exists() or path.is_symlink()) and not _is_ours(path):
            raise OutputsNotOursError(
                f"{path}: exists and was not written by infosam experiment; it is not overwritten: "
                "move it away or choose another --out"
            )


def _ok(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status", "ok") == "ok"]


def metric_columns(plan: Plan) -> list[str]:
    """Every metric of the plan's datasets, in first-seen order."""
    names: list[str] = []
    for dataset in plan.datasets:
        names += [m for m in dataset.metrics if m not in names]
    return names


def results_csv(plan: Plan, records: list[dict[str, Any]]) -> str:
    """``dataset, method, seed``, one column per metric (empty where a dataset does not use it), timing."""
    metrics = metric_columns(plan)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "method", "seed", *metrics, *TIMING_COLUMNS])
    for r in _ok(records):
        values = [f"{r['metrics'][m]:.6f}" if m in r["metrics"] else "" for m in metrics]
        timing = [r.get("steps", 0), f"{r.get('train_s', 0.0):.1f}", f"{r.get('eval_s', 0.0):.1f}"]
        writer.writerow([r["dataset"], r["method"], r["seed"], *values, *timing])
    return buf.getvalue()


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0.0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def format_cell(values: list[float], planned: int) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    text = f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"
    if any(math.isnan(v) for v in values):
        text = "nan"
    return text if len(values) == planned else f"{text} (n={len(values)})"


def summary(plan: Plan, records: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[float]]:
    """(dataset, method, metric) -> the finished seeds' values, in plan seed order."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for r in _ok(records):
        for metric, value in r["metrics"].items():
            out.setdefault((r["dataset"], r["method"], metric), []).append(float(value))
    return out


def table_markdown(plan: Plan, records: list[dict[str, Any]]) -> str:
    """The paper-layout table (see the module docstring)."""
    cells = summary(plan, records)
    unavailable = plan.unavailable()
    columns = [(d.name, m) for d in plan.datasets for m in d.metrics]
    header = ["method", *(f"{d} {m}" for d, m in columns)]
    lines = []
    if plan.title:
        lines += [f"## {plan.title}", ""]
    lines += [
        f"{TABLE_MARK} {list(plan.seeds)} (x100); prompts: "
        + ", ".join(f"{d.name} {d.prompt}" for d in plan.datasets)
        + ".",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * len(columns)) + " |",
    ]
    for method in plan.methods:
        if method.name in unavailable:
            row = [f"{method.name} ¹", *(["n/a"] * len(columns))]
        else:
            row = [method.name, *(format_cell(cells.get((d, method.name, m), []), len(plan.seeds)) for d, m in columns)]
        lines.append("| " + " | ".join(row) + " |")
    if unavailable:
        lines += ["", "¹ not run: " + "; ".join(f"{name}: {why}" for name, why in unavailable.items()) + "."]
    failed = [r for r in records if r.get("status") == "failed"]
    if failed:
        lines += [
            "",
            "Failed (left out): "
            + "; ".join(f"{r['dataset']} / {r['method']} / seed {r['seed']}: {r['error']}" for r in failed)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write_outputs(plan: Plan, records: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``table.md`` into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    return (
        write_text_atomic(out_dir / "results.csv", results_csv(plan, records)),
        write_text_atomic(out_dir / "table.md", table_markdown(plan, records)),
    )
