"""scripts/hostile_round.py on a fast subset of issue 32's cases (no training): every crafted file through the real
CLI gives one line on stderr and exit status 2, no hang, under 1.5 GiB peak memory (the full round, all 24 cases,
is in the README's Safety section)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST_CASES = (6, 7, 8, 10, 15, 16, 18, 19)


@pytest.mark.slow
def test_the_fast_cases_of_the_hostile_round_pass(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    report = tmp_path / "round.json"
    cases = ",".join(map(str, FAST_CASES))
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "hostile_round.py"), "--cases", cases, "--dir", str(tmp_path / "w")]
        + ["--json", str(report)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    rows = json.loads(report.read_text())["rows"]
    assert {row["case"] for row in rows} == set(FAST_CASES)
    assert len(rows) >= 30 and all(row["verdict"] == "ok" for row in rows)
    refusals = [row for row in rows if row["exit"] == "2"]
    assert all(row["stderr_lines"] == 1 and row["peak_mb"] < 1536 for row in refusals)


def test_the_round_refuses_an_unknown_case():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "hostile_round.py"), "--cases", "25"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "the cases are 1-24" in done.stderr
