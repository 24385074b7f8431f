"""What every benchmark writes with ``--json PATH``: its figures plus the facts needed to compare them.

    {"benchmark": "predict", "figures": {...}, "machine": {...}, "command": "python benchmarks/bench_predict.py ..."}

``machine`` holds the CPU count (and how many CPUs this process may use), the load average at the end, torch's
version and intra-op threads, the device (CPU or the GPU's name), Python and the platform, the UTC date and
the git commit of the code measured (and whether it had uncommitted changes). Figures measured on a shared machine are only comparable with figures
from the same run (ratios) or with the load average in view.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures and machine facts here")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def device_description(device: str | None = None) -> str:
    """``"cpu"`` or ``"cuda: <GPU name>"`` for ``device`` (default: CUDA when available)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device}: {torch.cuda.get_device_name(torch.device(device))}"
    return str(device)


def machine_facts(device: str | None = None) -> dict[str, Any]:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device_description(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def command_line() -> str:
    """The command that ran, as typed (interpreter by name, script relative to the repository when inside it)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join([Path(sys.executable).name, str(shown), *sys.argv[1:]])


def write_report(path: Path | None, benchmark: str, figures: Any, device: str | None = None) -> dict | None:
    """Write ``figures`` with the machine facts and the command to ``path`` (atomically); None when no path."""
    if path is None:
        return None
    from infosam_core.io.atomic import write_json_atomic

    report = {"benchmark": benchmark, "figures": figures, "machine": machine_facts(device), "command": command_line()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)
    print(f"wrote {path}")
    return report
