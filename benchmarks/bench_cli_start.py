"""How fast ``infosam`` starts and refuses bad arguments: this tree against another (e.g. main before a
change), side by side in one run.

    git archive <commit> infosam_core | tar -x -C /tmp/before     # the code to compare with
    python benchmarks/bench_cli_start.py --before /tmp/before     # 5 rounds
    python benchmarks/bench_cli_start.py --before /tmp/before --rounds 3 --json out.json

Each call is its own process (``python -m infosam_core ...`` with ``PYTHONPATH`` naming the tree), trees
alternating call by call (before, after, before, after ...) so a change of load hits both alike. Per call:
wall time, CPU time (user + system) and peak RSS from ``os.wait4``; medians are printed with before / after
ratios. The calls: ``--help``, a bad option (argparse refuses it), a bad ``--box`` (the command refuses it,
one line, exit 2), a damaged checkpoint and a device as an experiment's plan (both refused once torch is loaded)
and a whole ``predict`` (bundled tiny model, one point on the coins sample): the last three show what not
importing torchvision (``infosam_core.segment_anything_import``) and the experiment runner before the plan is
read save.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import add_json_argument, write_report

ROOT = Path(__file__).resolve().parent.parent
COINS = str(ROOT / "resources" / "samples" / "coins.png")
CALLS = {  # name: (arguments, expected exit status); run in a folder holding cut.pth (damaged)
    "--help": (["--help"], 0),
    "bad option": (["predict", "a.png", "--bogus"], 2),
    "bad --box": (["predict", "missing.png", "--box", "1,2,3", "--out", "x.png"], 2),
    "damaged .pth": (["info", "--checkpoint", "cut.pth"], 2),
    "bad plan": (["experiment", "/dev/zero", "--dry-run"], 2),
    "predict": (["predict", COINS, "--point", "100,100", "--out", "x.png", "--precision", "float32"], 0),
}


def measure(tree: Path, arguments: list[str], expected: int, cwd: Path) -> dict[str, float]:
    """One ``python -m infosam_core ARGUMENTS`` run with ``tree`` first on the path: wall s, CPU s, peak RSS MB."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infosam_core", *arguments],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != expected:
        raise SystemExit(f"{tree}: infosam {' '.join(arguments)} exited {proc.returncode}: {stderr.decode()[-500:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree holding the infosam_core to compare")
    parser.add_argument("--rounds", type=int, default=5)
    add_json_argument(parser)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": ROOT}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {c: {t: [] for t in trees} for c in CALLS}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cut.pth").write_bytes(b"PK\x03\x04" + bytes(200))  # a zip's start, cut short
        for _ in range(args.rounds):
            for call, (arguments, expected) in CALLS.items():
                for tree_name, tree in trees.items():
                    runs[call][tree_name].append(measure(tree, arguments, expected, Path(tmp)))
    figures: dict[str, dict[str, float]] = {}
    print(f"{'call':13} {'figure':12} {'before':>9} {'after':>9} {'before/after':>13}   (medians of {args.rounds})")
    for call, per_tree in runs.items():
        for figure in ("wall_s", "cpu_s", "peak_rss_mb"):
            before = statistics.median(r[figure] for r in per_tree["before"])
            after = statistics.median(r[figure] for r in per_tree["after"])
            figures[f"{call} {figure}"] = {"before": before, "after": after, "ratio": before / after}
            print(f"{call:13} {figure:12} {before:9.2f} {after:9.2f} {before / after:12.1f}x")
    if args.json:
        write_report(args.json, "cli_start", figures)


if __name__ == "__main__":
    main()
