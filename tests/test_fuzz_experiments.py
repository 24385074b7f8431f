"""Experiment plans and run records, fuzzed (issue 32): any plan gives a :class:`Plan` or one
:class:`PlanError`, and any file in ``OUT/runs/`` gives a run record or a one-line problem, never another
exception; a record that is accepted can be tabulated.

Inputs: a valid plan (as parsed TOML) with one value replaced by a random value (wrong types, non-finite numbers,
``../`` and absolute paths, deep nesting) or removed; a valid plan's bytes with random bytes replaced or cut off;
a valid run record with one value replaced or removed, and random bytes. Derandomised and few by default, like
``tests/test_fuzz_loaders.py``; ``INFOSAM_FUZZ_EXAMPLES=2000`` for a longer random run.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infosam_core.experiments.plan import Plan, PlanError, load_plan, parse_plan
from infosam_core.experiments.runner import check_record, read_record, result_path
from infosam_core.experiments.tables import results_csv, table_markdown

_EXAMPLES = os.environ.get("INFOSAM_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXAMPLES or 60),
    deadline=None,
    derandomize=not _EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EVIL = ["../../outside", "/etc/passwd", "..", ".", "", "a/../../..", "\x00", "x" * 300, "a|b", "cuda", "tpu9"]
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(EVIL)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)

VALID_PLAN: dict[str, Any] = {
    "title": "fuzz",
    "seeds": [0, 1],
    "model": "tiny",
    "train": {"epochs": 1, "batch_size": 2, "max_steps": 1, "device": "cpu", "lr": 1e-3},
    "datasets": [{"name": "Blobs", "train": "blobs", "test": "blobs", "prompt": "box", "metrics": ["iou", "dice"]}],
    "methods": [
        {"name": "Decoder-only", "peft": "decoder"},
        {"name": "Adapter+InfoSAM", "peft": "adapter", "distill": "infosam", "distill_options": {"alpha": 1.0}},
        {"name": "LoRA", "peft": "lora", "peft_options": {"rank": 2}, "epochs": 2},
    ],
}
VALID_TOML = """title = "fuzz"
seeds = [0, 1]
[train]
epochs = 1
batch_size = 2
[[datasets]]
name = "Blobs"
train = "blobs"
test = "blobs"
metrics = ["iou", "dice"]
[[methods]]
name = "Adapter+InfoSAM"
peft = "adapter"
distill = "infosam"
distill_options = {alpha = 1.0}
"""


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) to a value in a JSON-like tree."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(tree: Any, which: int, value: Any, delete: bool) -> Any:
    """``tree`` with the value at one path replaced by ``value`` (or removed)."""
    tree = copy.deepcopy(tree)
    paths = _paths(tree)
    path = paths[which % len(paths)]
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return tree


def _check_plan(plan: Plan, root: Path) -> None:
    """What a plan that was accepted must allow: runs expanded with distinct keys and paths inside the root
    (or absolute in the plan), fingerprints, the empty tables."""
    runs = plan.runs(root)
    assert len({r.key for r in runs}) == len(runs)
    for run in runs:
        assert "/" not in run.key and len(run.key) < 250
        run.fingerprint()
    for d in plan.datasets:
        for text in (d.train, d.test):
            resolved = os.path.realpath(root / os.path.normpath(text)) if not Path(text).is_absolute() else None
            assert resolved is None or resolved.startswith(str(root))
    results_csv(plan, [])
    table_markdown(plan, [])


@FUZZ
@given(which=st.integers(0, 10**6), value=json_values, delete=st.booleans())
def test_any_parsed_plan_gives_a_plan_or_one_plan_error(tmp_path, which, value, delete):
    data = _mutate(VALID_PLAN, which, value, delete)
    if not isinstance(data, dict):
        data = {"seeds": data}
    try:
        plan = parse_plan(data, Path("fuzz.toml"))
    except PlanError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml")
        return
    _check_plan(plan, tmp_path.resolve())


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 2**16),
)
def test_any_plan_file_gives_a_plan_or_one_plan_error(tmp_path, edits, cut):
    raw = bytearray(VALID_TOML.encode())
    for pos, byte in edits:
        raw[pos % len(raw)] = byte
    data = bytes(raw[: cut % (len(raw) + 1)] if cut is not None else raw)
    path = tmp_path / "plan.toml"
    path.write_bytes(data)
    try:
        plan = load_plan(path)
    except PlanError as exc:
        assert "\n" not in str(exc).strip() or "not valid TOML" in str(exc)
        return
    _check_plan(plan, tmp_path.resolve())


def _plan_and_run(tmp_path: Path):
    plan = parse_plan(copy.deepcopy(VALID_PLAN), Path("fuzz.toml"))
    return plan, plan.runs(tmp_path)[0]


def _valid_record(run) -> dict[str, Any]:
    return {
        "dataset": run.dataset.name,
        "method": run.method.name,
        "seed": run.seed,
        "metrics": {"iou": 0.5, "dice": 0.6},
        "steps": 1,
        "train_s": 0.5,
        "eval_s": 0.25,
        "history": [],
        "fingerprint": run.fingerprint(),
    }


@FUZZ
@given(which=st.integers(0, 10**6), value=json_values, delete=st.booleans(), status=st.sampled_from(["ok", "failed"]))
def test_any_run_record_is_read_or_reported_in_one_line(tmp_path, which, value, delete, status):
    plan, run = _plan_and_run(tmp_path)
    record = _valid_record(run)
    if status == "failed":
        record.update(status="failed", error="the loss is not finite")
    record = _mutate(record, which, value, delete)
    path = result_path(tmp_path, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    stored, problem = read_record(path)
    assert (stored is None) != (problem is None)
    if problem is not None:
        assert "\n" not in problem and str(path) in problem
        return
    found, problem = check_record(tmp_path, run)
    assert problem is None
    results_csv(plan, [stored])
    table_markdown(plan, [stored])


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_as_a_run_record_are_reported(tmp_path, data):
    plan, run = _plan_and_run(tmp_path)
    path = result_path(tmp_path, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stored, problem = read_record(path)
    assert stored is None and problem is not None and "\n" not in problem
