"""benchmarks/_report.py: what every benchmark writes with --json (figures, machine facts, the command)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _report_module():
    spec = importlib.util.spec_from_file_location("_report", BENCHMARKS / "_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_report_holds_figures_machine_and_command(tmp_path, monkeypatch):
    report = _report_module()
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "bench_x.py"), "--runs", "3", "--json", "out dir/x.json"])
    path = tmp_path / "results" / "x.json"
    assert report.write_report(None, "x", {"a": 1}) is None and not path.exists()
    report.write_report(path, "x", {"median_ms": 1.5}, device="cpu")
    written = json.loads(path.read_text())
    assert written["benchmark"] == "x" and written["figures"] == {"median_ms": 1.5}
    machine = written["machine"]
    assert machine["torch"] == torch.__version__ and machine["torch_threads"] == torch.get_num_threads()
    assert machine["cpu_count"] >= 1 and machine["device"] == "cpu" and machine["date_utc"].endswith("+00:00")
    assert written["command"].endswith("benchmarks/bench_x.py --runs 3 --json 'out dir/x.json'")


def test_every_benchmark_takes_json():
    scripts = sorted(BENCHMARKS.glob("bench_*.py"))
    assert len(scripts) >= 4
    for script in scripts:
        text = script.read_text()
        assert "add_json_argument(" in text and "write_report(" in text, f"{script.name} does not write --json"
