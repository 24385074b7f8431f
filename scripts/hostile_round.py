"""The hostile round of issue 32, end to end through the real CLI: every numbered case's crafted input, one child
process (``python -m infosam_core ...``) per call, measured.

For each call: the exit status, the number of lines on stderr, wall seconds, CPU seconds (user + system) and the
child's own peak memory (``ru_maxrss`` from ``os.wait4`` of that child: not of the round, which imports no torch,
and not the maximum over all children that ``RUSAGE_CHILDREN`` keeps). A call passes when it

* gives the expected result: exit status 2 with exactly one line on stderr naming what is wrong (refusals), or
  the right result for the cases whose fix is a result (a run redone, a CMYK image's colours, a training that
  now runs), checked on the files it wrote;
* prints no traceback, does not hang (a wall limit, then SIGKILL), stays under 1.5 GiB peak memory;
* for refusals, spends at most ``--cpu-slack`` CPU seconds more than the CLI's start with torch loaded (the
  command modules and torch imported, measured first: what any command that reads a checkpoint, an adapter or a
  model pays before it reads a byte; ``infosam --help`` alone no longer imports torch): "within a few seconds" of
  starting, whatever the machine's speed and load.

The experiment cases (1-5, 12, 13, 21) train for real, on the bundled tiny model (one step per run) and a data
root of two 48 x 64 images; case 4 starts two runners on one ``--out`` (6 runs, each trained exactly once), then
a kill -9 of one runner while the other finishes all 6. Case 23 (the library's ``Predictor``) runs in a child
``python -c`` snippet. Inputs are crafted by ``scripts/hostile_inputs.py`` in a child process.

    python scripts/hostile_round.py                     # all 24 cases, ~10 min on 2 busy cores
    python scripts/hostile_round.py --cases 6,7,8 --json round.json

Prints the table; exits 1 when any call fails its expectation."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from hostile_inputs import PLAN_STRUCTURES, PLAN_VALUES, PLAN_VALUES_AT_RUN  # noqa: E402

PEAK_LIMIT_MB = 1536.0  # 1.5 GiB
REFUSAL_WALL_S = 120.0  # a refusal taking longer is a hang: killed
WORK_WALL_S = 600.0  # a call that trains or segments
ALL_CASES = tuple(range(1, 25))
NEEDS = {2: (1,), 13: (1,)}  # cases that continue from another case's output folder


@dataclass
class Result:
    """One child process, measured."""

    exit: int | None
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float
    peak_mb: float
    timed_out: bool = False
    pid: int = 0

    @property
    def stderr_lines(self) -> int:
        return len([line for line in self.stderr.splitlines() if line.strip()])


@dataclass
class Row:
    case: int
    call: str
    what: str
    exit: str
    stderr_lines: int
    wall_s: float
    cpu_s: float
    peak_mb: float
    problems: list[str] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def verdict(self) -> str:
        return "ok" if not self.problems else "FAIL: " + "; ".join(self.problems)


class Child:
    """A started child process whose stdout and stderr go to files, reaped with ``os.wait4``."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path = Path(tempfile.mkstemp(dir=logs, suffix=".out")[1])
        self.err_path = Path(tempfile.mkstemp(dir=logs, suffix=".err")[1])
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.start = time.monotonic()
        self.result: Result | None = None

    def stdout_now(self) -> str:
        return self.out_path.read_text(errors="replace")

    def poll(self, timeout: float) -> Result | None:
        """The result once the child has ended (killed with SIGKILL past ``timeout`` wall seconds), else None."""
        if self.result is not None:
            return self.result
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        timed_out = False
        if pid == 0:
            if time.monotonic() - self.start < timeout:
                return None
            os.kill(self.proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(self.proc.pid, 0)
            timed_out = True
        wall = time.monotonic() - self.start
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # reaped here: Popen must not wait for it again
        self.result = Result(
            exit=None if timed_out else code,
            stdout=self.out_path.read_text(errors="replace"),
            stderr=self.err_path.read_text(errors="replace"),
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            peak_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
            timed_out=timed_out,
            pid=self.proc.pid,
        )
        return self.result

    def wait(self, timeout: float) -> Result:
        while (result := self.poll(timeout)) is None:
            time.sleep(0.02)
        return result

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)


def wait_all(children: Sequence[Child], timeout: float) -> list[Result]:
    while True:
        results = [c.poll(timeout) for c in children]
        if all(r is not None for r in results):
            return results  # type: ignore[return-value]
        time.sleep(0.02)


class Round:
    def __init__(self, work: Path, cpu_slack: float) -> None:
        self.work = work
        self.cpu_slack = cpu_slack
        self.rows: list[Row] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.env.setdefault("OMP_NUM_THREADS", "1")  # a shared 2-core machine: one intra-op thread per child
        self.facts: dict = {}
        self.baseline: Result | None = None

    # ------------------------------------------------------------------------------------------ children
    def start(self, args: Sequence[str]) -> Child:
        return Child([sys.executable, "-m", "infosam_core", *args], self.work, self.env, self.work / "logs")

    def snippet(self, code: str, *args: str) -> Child:
        return Child([sys.executable, "-c", code, *args], self.work, self.env, self.work / "logs")

    def measure_baseline(self) -> Result:
        code = "import torch, infosam_core.cli, infosam_core.models.registry"
        runs = [self.snippet(code).wait(REFUSAL_WALL_S) for _ in range(2)]
        best = min(runs, key=lambda r: r.cpu_s)
        self.baseline = best
        return best

    def craft(self, cases: Sequence[int]) -> None:
        argv = [sys.executable, str(HERE / "hostile_inputs.py"), str(self.work), *map(str, cases)]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            raise SystemExit(f"crafting the inputs failed:\n{done.stderr[-3000:]}")
        self.facts = json.loads((self.work / "facts.json").read_text())

    # -------------------------------------------------------------------------------------------- checks
    def judge(
        self,
        case: int,
        call: str,
        what: str,
        result: Result,
        *,
        exit: int = 2,
        lines: int | None = 1,
        err: Sequence[str] = (),
        out: Sequence[str] = (),
        not_err: Sequence[str] = (),
        refusal: bool | None = None,
        after: Callable[[Result], list[str]] | None = None,
    ) -> Result:
        """Record one call's row with every expectation it misses (an empty list: ok)."""
        problems: list[str] = []
        if result.timed_out:
            problems.append(f"hung: killed after {result.wall_s:.0f} s")
        elif result.exit != exit:
            problems.append(f"exit {result.exit}, expected {exit}")
        if "Traceback" in result.stderr:
            problems.append("a traceback on stderr")
        if lines is not None and result.stderr_lines != lines:
            problems.append(f"{result.stderr_lines} stderr lines, expected {lines}")
        problems += [f"stderr lacks {text!r}" for text in err if text not in result.stderr]
        problems += [f"stderr has {text!r}" for text in not_err if text in result.stderr]
        problems += [f"stdout lacks {text!r}" for text in out if text not in result.stdout]
        if result.peak_mb >= PEAK_LIMIT_MB:
            problems.append(f"peak {result.peak_mb:.0f} MB >= {PEAK_LIMIT_MB:.0f}")
        is_refusal = exit == 2 if refusal is None else refusal
        if is_refusal and self.baseline is not None and result.cpu_s > self.baseline.cpu_s + self.cpu_slack:
            problems.append(f"{result.cpu_s:.1f} CPU s: over the CLI's start ({self.baseline.cpu_s:.1f}) + slack")
        if after is not None and not result.timed_out:
            try:
                problems += after(result)
            except Exception as exc:  # noqa: BLE001 - a check that cannot read what it checks is a failure
                problems.append(f"check failed: {type(exc).__name__}: {exc}")
        tail = "\n".join(result.stderr.strip().splitlines()[-3:])
        self.rows.append(
            Row(case, call, what, str(result.exit) if not result.timed_out else "hung", result.stderr_lines,
                result.wall_s, result.cpu_s, result.peak_mb, problems, tail)
        )  # fmt: skip
        self.print_row(self.rows[-1])
        return result

    def cli(self, case: int, call: str, what: str, args: Sequence[str], *, timeout: float | None = None, **expect):
        work = expect.get("exit", 2) != 2
        limit = timeout or (WORK_WALL_S if work else REFUSAL_WALL_S)
        return self.judge(case, call, what, self.start([str(a) for a in args]).wait(limit), **expect)

    def skip(self, case: int, call: str, what: str, why: str) -> None:
        row = Row(case, call, what, "-", 0, 0.0, 0.0, 0.0, [], why)
        self.rows.append(row)
        self.print_row(row, verdict=f"n/a: {why}")

    # ------------------------------------------------------------------------------------------- output
    HEADER = f"{'case':>4} {'call':<4} {'what':<58} {'exit':>5} {'err':>3} {'wall s':>7} {'cpu s':>6} {'peak MB':>8}  verdict"

    @staticmethod
    def format_row(row: Row, verdict: str | None = None) -> str:
        what = row.what if len(row.what) <= 58 else row.what[:55] + "..."
        return (
            f"{row.case:>4} {row.call:<4} {what:<58} {row.exit:>5} {row.stderr_lines:>3} {row.wall_s:>7.1f} "
            f"{row.cpu_s:>6.1f} {row.peak_mb:>8.0f}  {verdict or row.verdict}"
        )

    def print_row(self, row: Row, verdict: str | None = None) -> None:
        print(self.format_row(row, verdict), flush=True)


# ======================================================================================================= cases
def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json")) if p.is_file()]


def csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def done_lines(text: str) -> int:
    return sum("] done in " in line for line in text.splitlines())


def experiment(plan: Path | str, data_root: Path | str, out: Path, *extra: str) -> list[str]:
    return ["experiment", str(plan), "--data-root", str(data_root), "--out", str(out), *extra]


def case_1(r: Round) -> None:
    w = r.work
    out = w / "c01" / "out"

    def after(res: Result) -> list[str]:
        p = []
        if len(records(out)) != 4:
            p.append(f"{len(records(out))} records, not 4")
        pairs = sorted((row["dataset"], row["method"]) for row in csv_rows(out / "results.csv"))
        if pairs != [("a", "b__c"), ("a", "c"), ("a__b", "b__c"), ("a__b", "c")]:
            p.append(f"results.csv rows {pairs}")
        table = (out / "table.md").read_text()
        if "n=" in table or "–" in table:
            p.append("table.md has a cell with n= or –")
        if done_lines(res.stdout) != 4:
            p.append(f"{done_lines(res.stdout)} runs trained, not 4")
        return p

    r.cli(1, "a", "run keys: datasets a__b, a x methods c, b__c: 4 runs", experiment(w / "c01/plan.toml", "data", out),
          exit=0, lines=0, out=["4/4 runs finished"], after=after)  # fmt: skip


def case_2(r: Round) -> None:
    w = r.work
    out = w / "c01" / "out"
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}

    def unchanged(res: Result) -> list[str]:
        now = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
        p = [] if now == before else ["run records changed (retrained)"]
        return p + ([f"{done_lines(res.stdout)} runs retrained"] if done_lines(res.stdout) else [])

    r.cli(2, "a", "resume with --data-root data/exp/.. (another spelling)",
          experiment(w / "c01/plan.toml", "data/exp/..", out), exit=0, lines=0, out=["4/4 runs finished"],
          after=unchanged)  # fmt: skip

    def four_rows(res: Result) -> list[str]:
        n = len(csv_rows(out / "results.csv"))
        return unchanged(res) + ([] if n == 4 else [f"results.csv has {n} rows, not 4"])

    r.cli(2, "b", "--report with --data-root through a symlink",
          experiment(w / "c01/plan.toml", w / "c02/link-to-data", out, "--report"), exit=0, lines=0,
          out=["4/4 runs finished"], after=four_rows)  # fmt: skip


def case_3(r: Round) -> None:
    w = r.work
    for call, name, extra in (("a", "results.csv", ["--report"]), ("b", "table.md", [])):
        out = w / "c03" / name / "out"

        def untouched(res: Result, out: Path = out, name: str = name) -> list[str]:
            p = [] if (out / name).read_text() == "my own notes, not an experiment's\n" else [f"{name} changed"]
            return p + (["runs/ made"] if (out / "runs").exists() else [])

        r.cli(3, call, f"the user's own {name} in --out ({'--report' if extra else 'a real run'})",
              experiment(w / "c03/plan.toml", "data", out, *extra), err=[name, "not written by infosam experiment"],
              after=untouched)  # fmt: skip


def case_4(r: Round) -> None:
    w = r.work
    plan = w / "c04" / "plan.toml"

    # a: two runners started at once
    out = w / "c04" / "at-once"
    children = [r.start(experiment(plan, "data", out)) for _ in range(2)]
    results = wait_all(children, WORK_WALL_S)
    recs = records(out)
    per_runner = [sum(rec.get("runner", {}).get("pid") == res.pid for rec in recs) for res in results]
    problems = [f"runner {i}: exit {res.exit}" for i, res in enumerate(results) if res.exit != 0]
    problems += [
        f"runner {i}: no '6/6 runs finished'" for i, res in enumerate(results) if "6/6 runs finished" not in res.stdout
    ]
    trained = sum(done_lines(res.stdout) for res in results)
    if trained != 6:
        problems.append(f"{trained} trainings for 6 runs")
    if len(recs) != 6 or sum(per_runner) != 6:
        problems.append(f"{len(recs)} records, {per_runner} by the two runners")
    if len(csv_rows(out / "results.csv")) != 6:
        problems.append("results.csv has not 6 rows")
    _concurrent_row(
        r,
        4,
        "a",
        f"2 runners at once, 1 --out, 6 runs: {trained} trained {per_runner}",
        results,
        problems,
    )

    # b: kill -9 of the first runner in the middle of a run, just after the second started; c: both started at
    # once, kill -9 of the second once it is in a run. Either way the other finishes every run.
    _kill_one_of_two(r, "b", plan, w / "c04" / "kill-first", kill_first=True)
    _kill_one_of_two(r, "c", plan, w / "c04" / "kill-second", kill_first=False)


def _in_a_run(child: Child) -> bool:
    return any("] " in line and "..." in line for line in child.stdout_now().splitlines())


def _kill_one_of_two(r: Round, call: str, plan: Path, out: Path, kill_first: bool) -> None:
    first = r.start(experiment(plan, "data", out))
    if kill_first:
        _wait_until(lambda: _in_a_run(first), first)
    second = r.start(experiment(plan, "data", out))
    victim, survivor = (first, second) if kill_first else (second, first)
    if kill_first:
        time.sleep(0.5)
    else:
        _wait_until(lambda: _in_a_run(victim), victim)
    problems = []
    if victim.poll(WORK_WALL_S) is None:
        victim.kill()
    else:
        problems.append("the runner to kill ended before the kill")
    killed, finished = wait_all([victim, survivor], WORK_WALL_S)
    recs = records(out)
    by_victim = sum(rec.get("runner", {}).get("pid") == killed.pid for rec in recs)
    by_survivor = sum(rec.get("runner", {}).get("pid") == finished.pid for rec in recs)
    if finished.exit != 0 or "6/6 runs finished" not in finished.stdout:
        problems.append(f"survivor: exit {finished.exit}, {finished.stdout.strip().splitlines()[-1:]}")
    if len(recs) != 6 or not all("metrics" in rec for rec in recs) or by_victim + by_survivor != 6:
        problems.append(f"{len(recs)} records ({by_victim} by the killed runner, {by_survivor} by the survivor)")
    if done_lines(finished.stdout) != by_survivor or done_lines(killed.stdout) < by_victim:
        problems.append(f"trained {done_lines(finished.stdout)} + {done_lines(killed.stdout)}, recorded "
                        f"{by_survivor} + {by_victim}")  # fmt: skip
    which = "first" if kill_first else "second"
    _concurrent_row(r, 4, call, f"kill -9 of the {which} runner: survivor {by_survivor} + killed {by_victim} runs",
                    [killed, finished], problems, exits=f"{killed.exit},{finished.exit}")  # fmt: skip


def _wait_until(condition: Callable[[], bool], child: Child) -> None:
    deadline = time.monotonic() + WORK_WALL_S
    while not condition() and child.poll(WORK_WALL_S) is None and time.monotonic() < deadline:
        time.sleep(0.05)


def _concurrent_row(r: Round, case: int, call: str, what: str, results: list[Result], problems: list[str],
                    exits: str | None = None) -> None:  # fmt: skip
    for res in results:
        if "Traceback" in res.stderr:
            problems.append("a traceback on stderr")
        if res.peak_mb >= PEAK_LIMIT_MB:
            problems.append(f"peak {res.peak_mb:.0f} MB")
    row = Row(case, call, what, exits or ",".join(str(res.exit) for res in results),
              sum(res.stderr_lines for res in results), max(res.wall_s for res in results),
              sum(res.cpu_s for res in results), max(res.peak_mb for res in results), problems)  # fmt: skip
    r.rows.append(row)
    r.print_row(row)


def case_5(r: Round) -> None:
    w = r.work
    r.cli(5, "a", "an old claim naming a live process (pid 1) + a stale lock",
          experiment(w / "c05/plan.toml", "data", w / "c05/out"), exit=0, lines=0, out=["1/1 runs finished"],
          after=lambda res: [] if done_lines(res.stdout) == 1 else ["the run was not trained"])  # fmt: skip


def case_6(r: Round) -> None:
    w = r.work
    tensors_fifo = w / "c06/tensors-fifo/a.json"
    img = w / "common/img.png"
    err = ["not a regular file"]
    r.cli(
        6,
        "a",
        "predict: a FIFO as the adapter's tensors file",
        ["predict", img, "--adapter", tensors_fifo, "--point", "32,30", "--out", w / "c06/m.png"],
        err=err,
    )
    r.cli(6, "b", "segment: the same", ["segment", w / "common/seg", "--adapter", tensors_fifo, "--out", w / "c06/seg"],
          err=err)  # fmt: skip
    r.cli(6, "c", "eval: the same", ["eval", "--data", "data/blobs", "--adapter", tensors_fifo, "--out", w / "c06/ev"],
          err=err)  # fmt: skip
    r.cli(6, "d", "predict: a FIFO as the adapter's JSON",
          ["predict", img, "--adapter", w / "c06/json-fifo/a.json", "--point", "32,30", "--out", w / "c06/m.png"],
          err=err)  # fmt: skip


def case_7(r: Round) -> None:
    w = r.work
    r.cli(
        7,
        "a",
        "predict: 33 KB APNG, 280 frames of 4000 x 4000",
        ["predict", w / "c07/bomb.png", "--point", "1,1", "--out", w / "c07/m.png"],
        err=["bomb.png", "limit"],
    )
    r.cli(
        7,
        "b",
        "predict: 276 KB GIF, 12000 frames of 1500 x 1500",
        ["predict", w / "c07/bomb.gif", "--point", "1,1", "--out", w / "c07/m.png"],
        err=["bomb.gif", "limit"],
    )
    # a folder: each image that cannot be read is skipped with one line, and the exit status says some were
    r.cli(
        7,
        "c",
        "segment: a folder holding the APNG (skipped, exit 1)",
        ["segment", w / "c07/seg", "--out", w / "c07/seg-out"],
        exit=1,
        refusal=True,
        err=["skipped: ", "bomb.png", "limit"],
    )


def case_8(r: Round) -> None:
    w = r.work
    img, mask = w / "common/img.png", w / "c08/m.png"
    r.cli(8, "a", "info --model auto: 1 MB zip-bomb .pth (1 GiB inflated)", ["info", "--checkpoint", w / "c08/zip.pth"],
          err=["zip.pth", "decompression bomb"])  # fmt: skip
    r.cli(8, "b", "predict --model tiny: the zip bomb",
          ["predict", img, "--model", "tiny", "--checkpoint", w / "c08/zip.pth", "--point", "32,30", "--out", mask],
          err=["zip.pth", "decompression bomb"])  # fmt: skip
    r.cli(8, "c", "info --model auto: 1.6 KB stride-0 tensor of 2^30", ["info", "--checkpoint", w / "c08/stride.pth"],
          err=["stride.pth", "storage holds 1 "])  # fmt: skip
    r.cli(
        8,
        "d",
        "info --model tiny: stride-0 tensor of 2^36",
        ["info", "--model", "tiny", "--checkpoint", w / "c08/stride-huge.pth"],
        err=["stride-huge.pth", "storage holds 1 "],
    )
    r.cli(8, "e", "info: pre-1.6 torch file declaring a 1 TiB storage", ["info", "--checkpoint", w / "c08/legacy.pth"],
          err=["legacy.pth", "declare"])  # fmt: skip


def case_9(r: Round) -> None:
    w = r.work
    train = ["train", "--data", "data/blobs"]
    for call, distill, option in (("a", "semckd", "mid_channels=3000"), ("b", "semckd", "mid_channels=1e5"),
                                  ("c", "ibd", "qk_dim=2e5")):  # fmt: skip
        out = w / "c09" / f"train-{call}"
        r.cli(9, call, f"train --distill {distill} --distill-option {option}",
              [*train, "--out", out, "--distill", distill, "--distill-option", option], err=["must be in [1,"],
              after=lambda res, out=out: ["--out made"] if out.exists() else [])  # fmt: skip
    r.cli(9, "d", "predict: adapter JSON with semckd mid_channels=3000",
          ["predict", w / "common/img.png", "--adapter", w / "c09/adapter/a.json", "--point", "32,30", "--out",
           w / "c09/m.png"], err=["a.json", "must be in [1,"])  # fmt: skip
    r.cli(
        9,
        "e",
        "experiment: a method with semckd mid_channels=3000",
        ["experiment", w / "c09/plan.toml", "--dry-run"],
        err=["mid_channels"],
    )


def case_10(r: Round) -> None:
    w = r.work
    r.cli(10, "a", "experiment /dev/zero (a device as the plan)", ["experiment", "/dev/zero", "--dry-run"],
          err=["not a regular file"])  # fmt: skip
    r.cli(10, "b", "experiment FIFO (a named pipe as the plan)", ["experiment", w / "c10/fifo.toml", "--dry-run"],
          err=["not a regular file"])  # fmt: skip
    r.cli(10, "c", "experiment: a 1 MB + plan", ["experiment", w / "c10/big.toml", "--dry-run"], err=["over 1 MB"])


def case_11(r: Round) -> None:
    w = r.work
    expected = {
        "non-utf8": "not UTF-8",
        "datasets-string": "'datasets' must be a list of tables",
        "datasets-strings": "'datasets' must be a list of tables",
        "methods-table": "'methods' must be a list",
        "5000-deep": "nested",
    }
    for call, name in zip("abcde", PLAN_STRUCTURES):
        r.cli(11, call, f"plan structure: {name}", ["experiment", w / f"c11/{name}.toml", "--dry-run"],
              err=[expected[name]])  # fmt: skip
    r.cli(11, "f", "plan structure: a folder", ["experiment", w / "c11/folder.toml", "--dry-run"], err=["is a folder"])


def case_12(r: Round) -> None:
    w = r.work
    calls = iter("abcdefghij")
    for name, (_, expected) in PLAN_VALUES.items():
        call = next(calls)
        what = f"plan value: {name}"
        if name == "device-cuda":
            if r.facts.get("cuda"):
                r.skip(12, call, what, "this machine has a CUDA GPU")
                continue
            out = w / "c12" / "out-cuda"
            r.cli(
                12,
                call,
                what + " (a real run, no GPU)",
                experiment(w / f"c12/{name}.toml", "data", out),
                err=[expected, "no CUDA"],
                after=lambda res, out=out: ["records written"] if records_exist(out) else [],
            )
            continue  # fmt: skip
        r.cli(12, call, what, ["experiment", w / f"c12/{name}.toml", "--dry-run"], err=[expected, "[train]"])
    r.cli(12, next(calls), "plan value: seeds = [true]", ["experiment", w / "c12/seeds-true.toml", "--dry-run"],
          err=["'seeds'"])  # fmt: skip
    out = w / "c12" / "out-diverged"

    def failed_recorded(res: Result) -> list[str]:
        recs = records(out)
        statuses = sorted(rec.get("status", "ok") for rec in recs)
        rows = csv_rows(out / "results.csv")
        p = [] if statuses == ["failed", "ok"] else [f"record statuses {statuses}"]
        return p + ([] if [row["method"] for row in rows] == ["steady"] else [f"results.csv {rows}"])

    r.cli(12, next(calls), "plan value: infosam alpha = 1e308", ["experiment", w / "c12/alpha.toml", "--dry-run"],
          err=["option alpha must be in"])  # fmt: skip
    r.cli(12, next(calls), "one run diverges (lr 1e30, loss NaN): recorded, the other runs",
          experiment(w / "c12/diverged.toml", "data", out), exit=1, lines=None,
          out=["FAILED", "1/2 runs finished, 1 failed"], after=failed_recorded)  # fmt: skip


def records_exist(out: Path) -> bool:
    return any((out / "runs").glob("*.json")) if (out / "runs").exists() else False


DAMAGES = ("not-utf8", "a-list", "no-metrics", "string-metrics", "a-folder")


def damage(record: Path, how: str) -> None:
    data = json.loads(record.read_text())
    record.unlink()
    if how == "not-utf8":
        record.write_bytes(b"\xff\xfe{}")
    elif how == "a-list":
        record.write_text("[1, 2]")
    elif how == "no-metrics":
        record.write_text(json.dumps({k: v for k, v in data.items() if k != "metrics"}))
    elif how == "string-metrics":
        record.write_text(json.dumps({**data, "metrics": "iou 0.5"}))
    else:
        record.mkdir()


def case_13(r: Round) -> None:
    w = r.work
    plan = w / "c01" / "plan.toml"
    outs = {}
    for how in DAMAGES:
        out = w / "c13" / how
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(w / "c01" / "out", out, symlinks=True)
        bad = sorted((out / "runs").glob("*.json"))[0]
        damage(bad, how)
        outs[how] = (out, bad)
    for call, how in zip("abcde", DAMAGES):
        out, bad = outs[how]
        r.cli(13, call, f"--dry-run with a damaged record: {how}", experiment(plan, "data", out, "--dry-run"),
              exit=0, err=[bad.name], refusal=True,
              after=lambda res: [] if res.stdout.count("  todo  ") == 1 else ["not 1 run listed as todo"])  # fmt: skip
    out, bad = outs["a-list"]
    r.cli(
        13,
        "f",
        "--report with a damaged record (a list)",
        experiment(plan, "data", out, "--report"),
        exit=0,
        err=[bad.name],
        out=["3/4 runs finished"],
        refusal=True,
        after=lambda res: [] if len(csv_rows(out / "results.csv")) == 3 else ["results.csv has not 3 rows"],
    )

    out, bad = outs["a-folder"]

    def redone(res: Result) -> list[str]:
        p = [] if bad.is_file() else ["the damaged record was not replaced"]
        p += [] if len(list(bad.parent.glob(f"{bad.name}.corrupt-*"))) == 1 else ["not moved aside"]
        return p + ([] if done_lines(res.stdout) == 1 else [f"{done_lines(res.stdout)} runs trained, not 1"])

    r.cli(13, "g", "a real run with a damaged record (a folder): redone", experiment(plan, "data", out), exit=0,
          err=[bad.name, "redone"], out=["4/4 runs finished"], after=redone)  # fmt: skip


def case_14(r: Round) -> None:
    w = r.work
    r.cli(14, "ok", "control: the bundled tiny weights as a .pth, auto", ["info", "--checkpoint", w / "common/tiny.pth"],
          exit=0, lines=0, refusal=True)  # fmt: skip
    r.cli(14, "a", "auto: tiny + image_encoder.blocks.x.weight", ["info", "--checkpoint", w / "c14/crafted.pth"],
          err=["crafted.pth", "cannot tell which model"])  # fmt: skip
    r.cli(14, "b", "--model tiny: the same", ["info", "--model", "tiny", "--checkpoint", w / "c14/crafted.pth"],
          err=["crafted.pth", "does not match SAM tiny"])  # fmt: skip
    r.cli(14, "c", "auto: a scalar SAM2 patch_embed", ["info", "--checkpoint", w / "c14/sam2ish.pth"],
          err=["sam2ish.pth"])  # fmt: skip
    r.cli(
        14,
        "d",
        "--model sam2.1_hiera_tiny: the same",
        ["info", "--model", "sam2.1_hiera_tiny", "--checkpoint", w / "c14/sam2ish.pth"],
        err=["sam2ish.pth"],
    )


def case_15(r: Round) -> None:
    w = r.work
    f8, img = w / "c15/f8.pth", w / "common/img.png"
    err = ["f8.pth", "dtype"]
    r.cli(15, "a", "predict: a float8 weight", ["predict", img, "--checkpoint", f8, "--point", "32,30", "--out",
                                                w / "c15/m.png"], err=err)  # fmt: skip
    r.cli(15, "b", "info: the same", ["info", "--checkpoint", f8], err=err)
    r.cli(
        15, "c", "eval: the same", ["eval", "--data", "data/blobs", "--checkpoint", f8, "--out", w / "c15/ev"], err=err
    )
    r.cli(15, "d", "segment: the same", ["segment", w / "common/seg", "--checkpoint", f8, "--out", w / "c15/seg"],
          err=err)  # fmt: skip
    r.cli(15, "e", "predict: a float8 adapter tensor",
          ["predict", img, "--adapter", w / "c15/adapter/a.json", "--point", "32,30", "--out", w / "c15/m.png"],
          err=["has dtype"])  # fmt: skip


def case_16(r: Round) -> None:
    w = r.work
    adapter = w / "c16/adapter/a.json"
    r.cli(16, "a", "predict: the adapter's tensors file is a folder",
          ["predict", w / "common/img.png", "--adapter", adapter, "--point", "32,30", "--out", w / "c16/m.png"],
          err=["not a regular file"])  # fmt: skip
    r.cli(16, "b", "eval: the same", ["eval", "--data", "data/blobs", "--adapter", adapter, "--out", w / "c16/ev"],
          err=["not a regular file"])  # fmt: skip


def case_17(r: Round) -> None:
    w = r.work
    images = w / "c17/images"
    r.cli(17, "a", "segment --out a file", ["segment", images, "--out", w / "c17/a-file"], err=["is a file"])
    r.cli(
        17,
        "b",
        "segment --truth masks of the wrong size",
        ["segment", images, "--out", w / "c17/o1", "--truth", w / "c17/truth"],
        err=["the mask is 20 x 20"],
    )
    r.cli(17, "c", "segment --points-per-side 100000", ["segment", images, "--out", w / "c17/o1", "--points-per-side",
                                                        "100000"], err=["points_per_side must be in"])  # fmt: skip
    out = w / "c17/o2"
    first = r.start(["segment", images, "--out", out, "--points-per-side", "8"]).wait(WORK_WALL_S)
    labels = sorted(out.glob("*_labels.tif"))
    if first.exit != 0 or not labels:
        r.judge(17, "d", "segment (to have label files to damage)", first, exit=0, lines=None)
        return
    labels[0].write_bytes(b"not a tiff")

    def remade(res: Result) -> list[str]:
        head = labels[0].read_bytes()[:4]
        return [] if head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") else ["the damaged label file stayed"]

    r.cli(17, "d", "segment again with an unreadable *_labels.tif in --out",
          ["segment", images, "--out", out, "--points-per-side", "8"], exit=0, lines=None, err=["unreadable"],
          after=remade)  # fmt: skip


def case_18(r: Round) -> None:
    w = r.work
    cases = [
        ("a", "cut.pth", "a truncated download", "not a readable PyTorch checkpoint (truncated or corrupt"),
        ("b", "bad.safetensors", "a corrupt safetensors header", "not a readable safetensors file (corrupt header"),
        ("c", "code.pth", "a pickle with code", "refused: the file contains pickled Python objects"),
        ("d", "plain.pkl", "a plain protocol-4 pickle", "plain.pkl"),
        ("e", "fifo.pth", "a FIFO", "not a regular file"),
    ]
    for call, name, what, expected in cases:
        r.cli(18, call, f"auto: {what}", ["info", "--checkpoint", w / "c18" / name], err=[name, expected],
              not_err=["cannot tell which model"] if name != "plain.pkl" else [])  # fmt: skip
    r.cli(18, "f", "auto: /dev/zero", ["info", "--checkpoint", "/dev/zero"], err=["/dev/zero", "is a device"])


def case_19(r: Round) -> None:
    w = r.work
    img = w / "common/img.png"
    r.cli(
        19,
        "a",
        "predict (auto): int32 weight",
        ["predict", img, "--checkpoint", w / "c19/int32.pth", "--point", "32,30", "--out", w / "c19/m.png"],
        err=["int32.pth", "dtype"],
    )
    r.cli(19, "b", "info --model tiny: bool weight", ["info", "--model", "tiny", "--checkpoint", w / "c19/bool.pth"],
          err=["bool.pth", "dtype"])  # fmt: skip
    r.cli(
        19,
        "c",
        "predict (auto): uint8 weight",
        ["predict", img, "--checkpoint", w / "c19/uint8.pth", "--point", "32,30", "--out", w / "c19/m.png"],
        err=["uint8.pth", "dtype"],
    )
    r.cli(
        19,
        "d",
        "predict: a bool adapter tensor",
        ["predict", img, "--adapter", w / "c19/adapter/a.json", "--point", "32,30", "--out", w / "c19/m.png"],
        err=["has dtype"],
    )


CMYK_CHECK = """
import sys
import numpy as np
from infosam_core.io.images import load_rgb
jpg = load_rgb(sys.argv[1]).astype(int)
tif = load_rgb(sys.argv[2]).astype(int)
problems = []
if np.abs(jpg[2:-2, 2:6] - (229, 100, 50)).max() > 6 or np.abs(jpg[2:-2, 10:14] - (20, 200, 240)).max() > 6:
    problems.append(f"CMYK JPEG loads as {jpg[8, 4].tolist()} / {jpg[8, 12].tolist()}")
if tuple(tif[6, 0]) != (0, 255, 255) or tuple(tif[0, 0]) != (0, 127, 127):
    problems.append(f"CMYK TIFF loads as {tif[6, 0].tolist()} / {tif[0, 0].tolist()}")
print("; ".join(problems) or f"ok: {jpg[8, 4].tolist()} {jpg[8, 12].tolist()} {tif[6, 0].tolist()}")
sys.exit(1 if problems else 0)
"""


def case_20(r: Round) -> None:
    w = r.work
    r.cli(20, "a", "predict on a CMYK JPEG", ["predict", w / "c20/print.jpg", "--box", "0,0,15,15", "--out",
                                              w / "c20/m.png"], exit=0, lines=0,
          after=lambda res: [] if (w / "c20/m.png").is_file() else ["no mask written"])  # fmt: skip
    res = r.snippet(CMYK_CHECK, str(w / "c20/print.jpg"), str(w / "c20/print.tif")).wait(REFUSAL_WALL_S)
    r.judge(20, "b", "load_rgb: CMYK JPEG (229,100,50) and TIFF colours", res, exit=0, lines=0)


def case_21(r: Round) -> None:
    w = r.work
    calls = iter("abcd")
    runs = [(name, expected) for name, (_, expected) in PLAN_VALUES_AT_RUN.items()]
    runs += [("seeds-negative", "'seeds'"), ("name-260", "at most 100")]
    for name, expected in runs:
        out = w / "c21" / f"out-{name}"
        r.cli(21, next(calls), f"a real run: {name}, refused before any work",
              experiment(w / f"c21/{name}.toml", "data", out), err=[expected],
              after=lambda res, out=out: ["records written"] if records_exist(out) else [])  # fmt: skip


def case_22(r: Round) -> None:
    w = r.work
    images = w / "c22/images"
    args = ["segment", images, "--out", images, "--points-per-side", "8"]
    r.cli(22, "a", "segment --out = the input folder", args, exit=0, lines=None)

    def clean(res: Result) -> list[str]:
        p = [f"made {x.name}" for x in images.glob("*_labels_labels.*")]
        coco = json.loads((images / "coco.json").read_text())
        names = sorted(im["file_name"] for im in coco["images"])
        expected = sorted(x.name for x in images.glob("*.png") if "_labels" not in x.name)
        return p + ([] if names == expected else [f"coco.json lists {names}"])

    r.cli(22, "b", "the same again: its own label files are not inputs", args, exit=0, lines=None, after=clean)


PREDICTOR_BOX = """
import sys
import numpy as np
from infosam_core.inference.predictor import Predictor
from infosam_core.models.registry import load_sam
predictor = Predictor(load_sam("tiny"), cache_size=0)
predictor.set_image(np.zeros((64, 64, 3), np.uint8))
try:
    predictor.predict(box=np.array([0, 0, 1e6, 1e6]))
except ValueError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
print("accepted")
"""


def case_23(r: Round) -> None:
    w = r.work
    res = r.snippet(PREDICTOR_BOX).wait(REFUSAL_WALL_S)
    r.judge(23, "a", "library Predictor: box [0, 0, 1e6, 1e6] on 64 x 64", res, err=["reaches outside the 64x64 image"])
    r.cli(23, "b", "predict --box 0,0,1e6,1e6 on 64 x 64", ["predict", w / "common/img.png", "--box", "0,0,1e6,1e6",
                                                             "--out", w / "c23/m.png"], err=["outside"])  # fmt: skip


def case_24(r: Round) -> None:
    w = r.work
    out = w / "c24/out"
    r.cli(24, "a", "train --distill semckd --batch-size 2 (no option repeated)",
          ["train", "--data", "data/blobs", "--distill", "semckd", "--batch-size", "2", "--max-steps", "1", "--out",
           out], exit=0, lines=None,
          after=lambda res: [] if (out / "adapter.json").is_file() else ["no adapter.json"])  # fmt: skip


CASES: dict[int, Callable[[Round], None]] = {n: globals()[f"case_{n}"] for n in ALL_CASES}


# ======================================================================================================== main
def parse_cases(text: str) -> list[int]:
    chosen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = (int(x) for x in part.split("-"))
            chosen.update(range(low, high + 1))
        elif part:
            chosen.add(int(part))
    bad = sorted(n for n in chosen if n not in CASES)
    if bad:
        raise argparse.ArgumentTypeError(f"no case {bad}: the cases are 1-24")
    for n in list(chosen):
        chosen.update(NEEDS.get(n, ()))
    return sorted(chosen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=parse_cases, default=list(ALL_CASES), help="e.g. 6,7,8 or 1-5 (default all)")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary folder, removed at the end)")
    parser.add_argument("--cpu-slack", type=float, default=5.0,
                        help="CPU seconds a refusal may spend beyond the CLI's start (default 5)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every row and the machine facts here")
    args = parser.parse_args(argv)

    temporary = args.dir is None
    work = Path(tempfile.mkdtemp(prefix="hostile-round-")) if temporary else args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    round_ = Round(work, args.cpu_slack)
    t0 = time.monotonic()
    try:
        print(f"crafting cases {','.join(map(str, args.cases))} in {work} ...", flush=True)
        round_.craft(args.cases)
        base = round_.measure_baseline()
        print(f"the CLI's start with torch: {base.wall_s:.1f} s wall, {base.cpu_s:.1f} CPU s, "
              f"{base.peak_mb:.0f} MB peak; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")  # fmt: skip
        print(Round.HEADER, flush=True)
        for number in args.cases:
            CASES[number](round_)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    failed = [row for row in round_.rows if row.problems]
    took = time.monotonic() - t0
    peak = max((row.peak_mb for row in round_.rows), default=0.0)
    print(f"\n{len(round_.rows)} calls, {len(failed)} failed; largest peak {peak:.0f} MB; {took:.0f} s in all")
    for row in failed:
        print(f"FAILED {row.case}{row.call}: {row.what}: {row.verdict}\n    stderr: {row.stderr_tail}")
    if args.json:
        facts = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "cli_start": asdict(base) | {"stdout": "", "stderr": ""},
            "cpu_slack_s": args.cpu_slack,
            "peak_limit_mb": PEAK_LIMIT_MB,
            "command": " ".join(sys.argv),
            "seconds": took,
        }
        rows = [asdict(row) | {"verdict": row.verdict} for row in round_.rows]
        args.json.write_text(json.dumps({"facts": facts, "rows": rows}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
