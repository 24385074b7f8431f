"""`infosam experiment` against hostile plans, output folders and runners (issue 32): each numbered defect of the
issue has a test here that failed before its fix (one line on stderr and exit 2, or the right result)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import write_ellipse_dataset

import infosam_core.experiments.runner as runner_module
from infosam_core.cli import main
from infosam_core.experiments.plan import MAX_PLAN_BYTES, PlanError, load_plan
from infosam_core.training.results import TrainingError

ROOT = Path(__file__).resolve().parents[1]

DATASET = '[[datasets]]\nname = "{name}"\ntrain = "{path}"\ntest = "{path}"\n'
METHOD = '[[methods]]\nname = "{name}"\npeft = "decoder"\n'
TINY_TRAIN = "[train]\nepochs = 1\nbatch_size = 2\nmax_steps = 1\n"


def plan_text(datasets=("Blobs",), methods=("Decoder-only",), seeds=(0,), path="blobs", extra="") -> str:
    text = f"seeds = {list(seeds)}\n{extra}{TINY_TRAIN}"
    text += "".join(DATASET.format(name=d, path=path) for d in datasets)
    return text + "".join(METHOD.format(name=m) for m in methods)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_ellipse_dataset(root / "blobs", [(24, 30 + i, 10, 14) for i in range(4)], shape=(48, 64))
    return root


def write_plan(tmp_path: Path, text: str | bytes, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def refused(capsys, argv: list[str], *expected: str) -> str:
    """``main(argv)`` exits 2 with one line on stderr containing every ``expected`` text; returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, (text, err)
    return err


def fake_record(plan, run, value: float = 0.5) -> dict:
    """A finished run's record as the runner writes it (no training needed)."""
    return {
        "dataset": run.dataset.name,
        "method": run.method.name,
        "seed": run.seed,
        "metrics": {m: value for m in run.dataset.metrics},
        "steps": 1,
        "train_s": 0.1,
        "eval_s": 0.1,
        "fingerprint": run.fingerprint(),
        "settings": run.settings(),
    }


def store_fake_records(plan_path: Path, data_root: Path, out: Path) -> list:
    plan = load_plan(plan_path)
    runs = plan.runs(data_root)
    for run in runs:
        runner_module.write_json_atomic(runner_module.result_path(out, run), fake_record(plan, run))
    return runs


# ----------------------------------------------------------------------------------- 1: run-key collisions
def test_names_that_join_alike_get_distinct_run_keys(tmp_path, data_root, capsys):
    path = write_plan(tmp_path, plan_text(datasets=("a__b", "a"), methods=("c", "b__c")))
    runs = load_plan(path).runs(data_root)
    assert len({r.key for r in runs}) == len(runs) == 4
    # plain names keep their readable key (finished results of earlier versions stay found)
    plain = load_plan(write_plan(tmp_path, plan_text(datasets=("Leaf",), methods=("Adapter+InfoSAM",)), "plain.toml"))
    assert plain.runs(data_root)[0].key == "Leaf__Adapter+InfoSAM__seed0"
    # --report from stored records: 4 distinct rows, every cell at n=1 of 1
    out = tmp_path / "out"
    store_fake_records(path, data_root, out)
    assert main(["experiment", str(path), "--data-root", str(data_root), "--out", str(out), "--report"]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["dataset"], r["method"]) for r in rows) == [
        ("a", "b__c"),
        ("a", "c"),
        ("a__b", "b__c"),
        ("a__b", "c"),
    ]
    assert "n=" not in (out / "table.md").read_text() and "–" not in (out / "table.md").read_text()


# ------------------------------------------------------------------- 2: --data-root spellings agree
def test_data_root_spelling_does_not_change_fingerprints_or_reports(tmp_path, data_root, capsys, monkeypatch):
    path = write_plan(tmp_path, plan_text(methods=("m1", "m2"), seeds=(0, 1)))
    (data_root / "exp").mkdir(exist_ok=True)
    other_spelling = data_root / "exp" / ".." / "."
    link = tmp_path / "link-to-data"
    link.symlink_to(data_root)
    plan = load_plan(path)
    prints = [[r.fingerprint() for r in plan.runs(root)] for root in (data_root, other_spelling, link)]
    assert prints[0] == prints[1] == prints[2]
    monkeypatch.chdir(data_root)
    assert [r.fingerprint() for r in plan.runs(Path("."))] == prints[0] == [r.fingerprint() for r in plan.runs()]

    out = tmp_path / "out"
    store_fake_records(path, data_root, out)
    argv = ["experiment", str(path), "--out", str(out), "--data-root", str(other_spelling)]
    assert main([*argv, "--report"]) == 0
    assert "4/4 runs finished" in capsys.readouterr().out
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 4  # not rewritten as empty

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(runner_module, "train_and_save", no_training)
    monkeypatch.setattr(runner_module, "evaluate", no_training)
    assert main(argv) == 0  # resume with another spelling: nothing retrained


# ---------------------------------------------------------------- 3: the user's own results.csv / table.md
@pytest.mark.parametrize("name", ["results.csv", "table.md"])
def test_a_users_own_tables_in_out_are_never_overwritten(tmp_path, data_root, capsys, monkeypatch, name):
    path = write_plan(tmp_path, plan_text())
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("my own notes, not an experiment's\n")
    base = ["experiment", str(path), "--data-root", str(data_root), "--out", str(out)]
    monkeypatch.setattr(runner_module, "train_and_save", lambda *a, **k: pytest.fail("trained"))
    refused(capsys, [*base, "--report"], name, "not written by infosam experiment", "choose another --out")
    refused(capsys, base, name, "not written by infosam experiment")
    refused(capsys, [*base, "--gpus", "0"], name, "not written by infosam experiment")  # before any worker starts
    assert (out / name).read_text() == "my own notes, not an experiment's\n"
    assert not (out / "runs").exists()  # refused before any run


def test_tables_written_here_are_rewritten_and_a_folder_in_their_place_is_refused(tmp_path, data_root, capsys):
    path = write_plan(tmp_path, plan_text())
    out = tmp_path / "out"
    store_fake_records(path, data_root, out)
    argv = ["experiment", str(path), "--data-root", str(data_root), "--out", str(out), "--report"]
    assert main(argv) == 0 and main(argv) == 0  # its own files: rewritten
    (out / "table.md").unlink()
    (out / "table.md").mkdir()
    refused(capsys, argv, "table.md", "not overwritten")


# ------------------------------------------------------------------------------- 4, 5: exclusive claims
CLAIMER = """
import sys, time
from pathlib import Path
from infosam_core.experiments.plan import load_plan
from infosam_core.experiments.runner import claim_run
run = load_plan(sys.argv[1]).runs(sys.argv[2])[0]
tmp, trials = Path(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
held = []  # every lock won stays held until the process ends: a loser cannot win after the winner let go
for trial in range(trials):
    go = tmp / f"go{trial}"
    while not go.exists():
        time.sleep(0.001)
    lock = claim_run(tmp / f"out{trial}", run)
    held.append(lock)
    print("won" if lock is not None else "lost", flush=True)
while not (tmp / "done").exists():
    time.sleep(0.01)
"""


@pytest.mark.slow
def test_six_processes_claiming_one_run_at_once_give_one_winner(tmp_path, data_root):
    """Six processes claim one run at the same instant, three times (a fresh output folder each time; the
    processes start once: each start imports torch): exactly one winner each time."""
    path = write_plan(tmp_path, plan_text())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    trials = 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path), str(data_root), str(tmp_path), str(trials)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(6)
    ]
    try:
        assert all(p.stdout.readline().strip() == "ready" for p in procs)
        for trial in range(trials):
            (tmp_path / f"go{trial}").touch()
            answers = [p.stdout.readline().strip() for p in procs]
            assert sorted(answers) == ["lost"] * 5 + ["won"], (trial, answers)
    finally:
        (tmp_path / "done").touch()
        for p in procs:
            p.communicate(timeout=60)


def test_an_old_claim_file_naming_a_live_process_does_not_block_a_run(tmp_path, data_root, monkeypatch):
    path = write_plan(tmp_path, plan_text())
    out = tmp_path / "out"
    run = load_plan(path).runs(data_root)[0]
    (out / "runs").mkdir(parents=True)
    (out / "runs" / f"{run.key}.claim").write_text(json.dumps({"pid": 1, "host": os.uname().nodename}))
    (out / "runs" / f"{run.key}.lock").write_text("left by a dead runner")  # a lock file alone claims nothing
    trained = []
    monkeypatch.setattr(runner_module, "load_sam", lambda *a: object())
    monkeypatch.setattr(
        runner_module, "execute_run", lambda run, *a, **k: trained.append(run.key) or fake_record(None, run)
    )
    # as a --gpus worker (--claim-runs), which used to skip a run whose claim file named a live process for ever
    assert main(["experiment", str(path), "--data-root", str(data_root), "--out", str(out), "--claim-runs"]) == 0
    assert trained == [run.key]


def _runner(plan: Path, data_root: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    argv = [
        sys.executable,
        "-m",
        "infosam_core",
        "experiment",
        str(plan),
        "--data-root",
        str(data_root),
        "--out",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


SIX_RUNS = dict(methods=("Decoder-only", "Decoder again", "Decoder third"), seeds=(0, 1))


@pytest.mark.slow
def test_two_runners_on_one_out_train_each_run_exactly_once(tmp_path, data_root):
    path = write_plan(tmp_path, plan_text(**SIX_RUNS))
    out = tmp_path / "out"
    t0 = time.monotonic()
    procs = [_runner(path, data_root, out) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    took = time.monotonic() - t0
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [line for text in outputs for line in text.splitlines() if "] done in " in line]
    assert len(trained) == 6, outputs  # before: each runner trained all 6 (12)
    assert all("6/6 runs finished" in text for text in outputs)
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    assert len(records) == 6 and all(r.get("status", "ok") == "ok" for r in records)
    pids = {r["runner"]["pid"] for r in records}
    assert pids <= {p.pid for p in procs}
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 6
    print(
        f"two runners, 6 runs: {took:.1f} s; runs per runner {[sum(r['runner']['pid'] == p.pid for r in records) for p in procs]}"
    )


@pytest.mark.slow
def test_a_runner_killed_mid_run_leaves_the_other_to_finish_every_run(tmp_path, data_root):
    path = write_plan(tmp_path, plan_text(**SIX_RUNS))
    out = tmp_path / "out"
    victim = _runner(path, data_root, out)
    first = victim.stdout.readline()
    while "] " not in first or "..." not in first:  # wait until it has claimed and started a run
        first = victim.stdout.readline()
        assert first, "the runner ended before starting a run"
    survivor = _runner(path, data_root, out)
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    text = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, text
    assert "6/6 runs finished" in text
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    assert len(records) == 6 and all("metrics" in r for r in records)


# ------------------------------------------------------------------------------------ 10, 11: plan files
def _in_thread(function, timeout: float = 10.0):
    """``function()`` in a daemon thread: (finished, result or exception) after at most ``timeout`` s."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(_call(function)), daemon=True)
    thread.start()
    thread.join(timeout)
    return (not thread.is_alive()), (box[0] if box else None)


def _call(function):
    try:
        return function()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc


def test_a_fifo_or_a_device_as_the_plan_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "plan.toml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        finished, result = _in_thread(lambda p=path: load_plan(p))
        assert finished, f"{path}: load_plan hangs"
        assert isinstance(result, PlanError) and "not a regular file" in str(result)


def test_an_oversized_plan_is_refused_by_its_size(tmp_path, capsys):
    path = write_plan(tmp_path, plan_text() + "# " + "x" * MAX_PLAN_BYTES + "\n")
    refused(capsys, ["experiment", str(path), "--dry-run"], "over 1 MB")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'title = "\xff\xfe"\n' + plan_text().encode(), "not UTF-8"),
        ('datasets = "x"\n' + METHOD.format(name="m"), "'datasets' must be a list of tables"),
        ('datasets = ["x"]\n' + METHOD.format(name="m"), "'datasets' must be a list of tables"),
        (DATASET.format(name="d", path="p") + '[methods]\nname = "m"\npeft = "decoder"\n', "'methods' must be a list"),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
        ("seeds = " + "[" * 40 + "0" + "]" * 40 + "\n", "nested more than"),
    ],
    ids=["non-utf8", "datasets-string", "datasets-strings", "methods-table", "5000-deep", "40-deep"],
)
def test_plan_structure_errors_are_one_line(tmp_path, capsys, text, expected):
    path = write_plan(tmp_path, text)
    refused(capsys, ["experiment", str(path), "--dry-run"], expected)


def test_a_folder_as_the_plan_is_one_line(tmp_path, capsys):
    refused(capsys, ["experiment", str(tmp_path), "--dry-run"], "is a folder")


# -------------------------------------------------------------------------- 12, 21: plan values up front
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('device = "tpu9"\n', "'device' must be auto, cpu, mps, cuda or cuda:N"),
        ("device = 7\n", "'device'"),
        ("epochs = 1.5\n", "'epochs' must be a whole number"),
        ("epochs = inf\n", "'epochs' must be a whole number"),
        ('epochs = "3"\n', "'epochs' must be a whole number"),
        ("epochs = 0\n", "'epochs' must be a whole number >= 1"),
        ("batch_size = 2.5\n", "'batch_size' must be a whole number"),
        ("lr = nan\n", "'lr' must be a finite number"),
        ("bf16 = 1\n", "'bf16' must be true or false"),
        ("max_steps = true\n", "'max_steps' must be a whole number"),
    ],
)
def test_training_values_are_checked_when_the_plan_is_read(tmp_path, capsys, extra, expected):
    key = extra.split(" = ")[0]
    train = "".join(line + "\n" for line in TINY_TRAIN.splitlines() if not line.startswith(key + " "))
    text = plan_text().replace(TINY_TRAIN, train + extra)
    path = write_plan(tmp_path, text)
    refused(capsys, ["experiment", str(path), "--dry-run"], expected, "[train]")


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [("[true]", "'seeds'"), ("[-1]", "'seeds'"), ("[1.5]", "'seeds'"), ("[4294967296]", "'seeds'"), ('"0"', "'seeds'")],
)
def test_seeds_are_non_negative_whole_numbers(tmp_path, capsys, seeds, expected):
    path = write_plan(tmp_path, plan_text().replace("seeds = [0]", f"seeds = {seeds}"))
    refused(capsys, ["experiment", str(path), "--dry-run"], expected, "whole numbers from 0")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("x" * 260, "at most 100"), ("a|b", "may only use"), ("tab\there", "may only use"), (" padded", "may only use")],
)
def test_names_are_short_and_safe_before_any_training(tmp_path, data_root, capsys, monkeypatch, name, expected):
    path = write_plan(tmp_path, plan_text(methods=(name.replace("\t", "\\t"),)))
    monkeypatch.setattr(runner_module, "train_and_save", lambda *a, **k: pytest.fail("trained"))
    out = tmp_path / "out"
    refused(capsys, ["experiment", str(path), "--data-root", str(data_root), "--out", str(out)], expected, "methods[0]")
    assert not out.exists()


def test_unicode_and_punctuated_names_are_accepted(tmp_path, data_root):
    path = write_plan(tmp_path, plan_text(methods=("MobileSAM w/o RM", "InfoSAM λ=0.1 (α, β)")))
    keys = [r.key for r in load_plan(path).runs(data_root)]
    assert len(set(keys)) == 2 and all("/" not in k and len(k) < 120 for k in keys)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_cuda_device_without_a_gpu_is_refused_before_any_run(tmp_path, data_root, capsys, monkeypatch):
    path = write_plan(tmp_path, plan_text().replace("[train]\n", '[train]\ndevice = "cuda"\n'))
    monkeypatch.setattr(runner_module, "train_and_save", lambda *a, **k: pytest.fail("trained"))
    out = tmp_path / "out"
    refused(
        capsys,
        ["experiment", str(path), "--data-root", str(data_root), "--out", str(out)],
        "device = 'cuda'",
        "no CUDA",
    )
    assert not list(out.glob("runs/*.json"))
    assert main(["experiment", str(path), "--dry-run"]) == 0  # a plan for another machine can still be listed


# --------------------------------------------------------------------------------- paths in the plan
def test_relative_paths_stay_inside_the_data_root(tmp_path, capsys):
    for bad in ("../outside", "a/../../outside", ".."):
        path = write_plan(tmp_path, plan_text(path=bad))
        refused(capsys, ["experiment", str(path), "--dry-run"], "leaves --data-root", "datasets[0] (Blobs)")
    path = write_plan(tmp_path, plan_text(extra='checkpoint = "../sam.pth"\n'))
    refused(capsys, ["experiment", str(path), "--dry-run"], "'checkpoint'", "leaves --data-root")
    ok = write_plan(tmp_path, plan_text(path="a/../blobs"))  # stays inside
    assert load_plan(ok).runs(tmp_path)[0].dataset.train == str((tmp_path / "blobs").resolve())


def test_an_absolute_path_is_allowed_and_said(tmp_path, data_root, capsys):
    path = write_plan(tmp_path, plan_text(path=str(data_root / "blobs")))
    assert main(["experiment", str(path), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "is an absolute path: it is read from outside --data-root" in err  # train, test


# ------------------------------------------------------------------------------ 13: damaged run records
DAMAGED = {
    "not-utf8": b"\xff\xfe{}",
    "a-list": b"[1, 2]",
    "no-metrics": None,  # a record without "metrics"
    "string-metrics": "metrics",  # metrics as a string
    "a-folder": "folder",
    "not-json": b"{",
}


def _damage(record_path: Path, how: str, record: dict) -> None:
    value = DAMAGED[how]
    if value is None:
        record_path.write_text(json.dumps({k: v for k, v in record.items() if k != "metrics"}))
    elif value == "metrics":
        record_path.write_text(json.dumps({**record, "metrics": "iou 0.5"}))
    elif value == "folder":
        record_path.mkdir()
    else:
        record_path.write_bytes(value)


@pytest.mark.parametrize("how", list(DAMAGED))
def test_a_damaged_record_is_reported_and_left_out_by_dry_run_and_report(tmp_path, data_root, capsys, how):
    path = write_plan(tmp_path, plan_text(methods=("m1", "m2")))
    out = tmp_path / "out"
    runs = store_fake_records(path, data_root, out)
    bad = runner_module.result_path(out, runs[0])
    record = json.loads(bad.read_text())
    bad.unlink()
    _damage(bad, how, record)
    base = ["experiment", str(path), "--data-root", str(data_root), "--out", str(out)]
    assert main([*base, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("  todo  ") == 1 and captured.out.count("  done  ") == 1
    assert len(captured.err.strip().splitlines()) == 1 and bad.name in captured.err
    assert main([*base, "--report"]) == 0
    captured = capsys.readouterr()
    assert "1/2 runs finished" in captured.out and len(captured.err.strip().splitlines()) == 1
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 1


def test_a_damaged_record_is_moved_aside_and_its_run_redone(tmp_path, data_root, capsys, monkeypatch):
    path = write_plan(tmp_path, plan_text(methods=("m1", "m2")))
    out = tmp_path / "out"
    runs = store_fake_records(path, data_root, out)
    bad = runner_module.result_path(out, runs[1])
    bad.unlink()
    _damage(bad, "a-folder", {})
    trained = []
    monkeypatch.setattr(runner_module, "load_sam", lambda *a: object())
    monkeypatch.setattr(
        runner_module, "execute_run", lambda run, *a, **k: trained.append(run.key) or fake_record(None, run)
    )
    assert main(["experiment", str(path), "--data-root", str(data_root), "--out", str(out)]) == 0
    assert trained == [runs[1].key]
    assert bad.is_file() and len(list(bad.parent.glob(f"{bad.name}.corrupt-*"))) == 1
    err = capsys.readouterr().err
    assert bad.name in err and "redone" in err and "corrupt" in err
    assert len(err.strip().splitlines()) == 1, err  # one line per damaged file (it was reported twice)


# ------------------------------------------------------------------------- 12: one diverged run
def test_a_diverged_run_is_recorded_as_failed_and_the_others_go_on(tmp_path, data_root, capsys, monkeypatch):
    path = write_plan(tmp_path, plan_text(methods=("steady", "diverges", "steady too")))
    out = tmp_path / "out"
    argv = ["experiment", str(path), "--data-root", str(data_root), "--out", str(out)]
    monkeypatch.setattr(runner_module, "load_sam", lambda *a: object())

    def execute(run, *args, **kwargs):
        if run.method.name == "diverges":
            raise TrainingError("training stopped at step 1 (epoch 0): the loss is not finite")
        return fake_record(None, run)

    monkeypatch.setattr(runner_module, "execute_run", execute)
    assert main(argv) == 1  # not every run finished
    printed = capsys.readouterr().out
    assert "FAILED: training stopped at step 1" in printed and "2/3 runs finished, 1 failed" in printed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["method"] for r in rows] == ["steady", "steady too"]
    table = (out / "table.md").read_text()
    assert "Failed (left out): Blobs / diverges / seed 0: training stopped at step 1" in table
    failed = json.loads(next(p for p in (out / "runs").glob("*.json") if "diverges" in p.name).read_text())
    assert failed["status"] == "failed" and "not finite" in failed["error"]
    # a rerun keeps the failure (deterministic at the same seed): nothing is retrained
    monkeypatch.setattr(runner_module, "execute_run", lambda *a, **k: pytest.fail("retrained"))
    assert main(argv) == 1
    assert main([*argv, "--dry-run"]) == 0 and capsys.readouterr().out.count("  FAIL  ") == 1
