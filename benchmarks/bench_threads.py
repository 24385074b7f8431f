"""Segment-all under load: 1 vs 2 torch threads, OpenMP passive (ours) vs spinning (OpenMP's default) waits, and
segment-anything's ``SamAutomaticMaskGenerator`` with the same settings -- side by side in one run.

    python benchmarks/bench_threads.py                     # tiny, 256^2 nucleus crop, 16 x 16 prompts
    python benchmarks/bench_threads.py --busy 1 --rounds 2 --json out.json

Each variant runs in its own process (OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads), one run per
process per round, variants alternating (A B C ... A B C) so a change of load hits all alike; medians are
printed. ``--busy N`` keeps N extra processes spinning on the CPU for the whole run (a training run beside the
app, another program). Figures per variant: ``segment_all`` on a cached embedding (``cached_s``), with the
encoder pass (``cold_s``), and the reference generator (``reference_s``, encoder included), so
``reference_s / cold_s`` is the like-for-like ratio. ``floor_s``: segment-all's matrix products
(``matmul_gflop``, counted by ``torch.utils.flop_counter`` on a cached pass) at the rate of a 2048^2 float32
matmul on the same threads in the same process (``matmul_gflops``): segment-all cannot run faster than its own
products at that rate, so ``reference_s / floor_s`` is the most its arithmetic allows on this CPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import add_json_argument, write_report

VARIANTS = {  # name: (threads, OMP_WAIT_POLICY)
    "1 thread": (1, "PASSIVE"),
    "2 threads": (2, "PASSIVE"),
    "2 threads, spinning waits": (2, "ACTIVE"),
}


def _spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def worker(threads: int, size: int, reference: bool) -> dict:
    """One run in this process: cached and cold segment-all, and the reference generator."""
    import warnings

    import numpy as np
    import torch
    from segment_anything import SamAutomaticMaskGenerator
    from torch.utils.flop_counter import FlopCounterMode

    from infosam_core.inference.automatic import AutomaticConfig, segment_all
    from infosam_core.inference.predictor import Predictor
    from infosam_core.io.images import load_rgb
    from infosam_core.models.registry import load_sam
    from infosam_core.resources import SAMPLES_DIR

    torch.set_num_threads(threads)
    image = np.ascontiguousarray(load_rgb(SAMPLES_DIR / "nuclei_stained_rgb.png")[:size, :size])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = load_sam("tiny")
    config = AutomaticConfig.for_model("tiny")
    predictor = Predictor(sam, cache_size=1, precision="float32")
    start = time.perf_counter()
    result = segment_all(predictor, image, config)
    row = {"cold_s": time.perf_counter() - start, "proposals": len(result.proposals)}
    start = time.perf_counter()
    segment_all(predictor, image, config)
    row["cached_s"] = time.perf_counter() - start
    # the floor: segment-all's matrix products (counted) at the rate of a large matmul on the same threads
    with FlopCounterMode(display=False) as counter:
        segment_all(predictor, image, config)
    row["matmul_gflop"] = counter.get_total_flops() / 1e9
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(3):
        a @ b
    row["matmul_gflops"] = 3 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9
    row["floor_s"] = row["matmul_gflop"] / row["matmul_gflops"]
    if reference:
        generator = SamAutomaticMaskGenerator(
            sam,
            points_per_side=config.points_per_side,
            points_per_batch=config.points_per_batch,
            pred_iou_thresh=config.pred_iou_thresh,
            stability_score_thresh=config.stability_score_thresh,
            box_nms_thresh=config.box_nms_thresh,
        )
        start = time.perf_counter()
        generator.generate(image)
        row["reference_s"] = time.perf_counter() - start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="crop of the nucleus sample (pixels per side)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--busy", type=int, default=0, help="extra processes spinning on the CPU meanwhile")
    parser.add_argument("--no-reference", action="store_true")
    add_json_argument(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker), args.size, not args.no_reference)))
        return

    spinners = [
        multiprocessing.Process(target=_spin, args=(time.time() + 3600,), daemon=True) for _ in range(args.busy)
    ]
    for process in spinners:
        process.start()
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    try:
        for _ in range(args.rounds):
            for name, (threads, policy) in VARIANTS.items():
                env = {**os.environ, "OMP_WAIT_POLICY": policy, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
                command = [sys.executable, __file__, "--worker", str(threads), "--size", str(args.size)]
                if args.no_reference:
                    command.append("--no-reference")
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        for process in spinners:
            process.terminate()
    print(f"segment-all, tiny, {args.size}^2 nucleus crop, {os.cpu_count()} CPUs, {args.busy} busy processes beside:")
    figures = {}
    for name, rows in runs.items():
        med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        figures[name] = med
        line = f"  {name:27s} cached {med['cached_s']:7.2f} s   cold {med['cold_s']:7.2f} s"
        if "reference_s" in med:
            line += (
                f"   reference {med['reference_s']:7.2f} s   reference / cold x{med['reference_s'] / med['cold_s']:.1f}"
            )
        print(line)
    for name, med in figures.items():
        line = (
            f"  {name:27s} matrix products {med['matmul_gflop']:.1f} GFLOP at {med['matmul_gflops']:.0f} GFLOPS"
            f" (2048^2 matmul): floor {med['floor_s']:.2f} s, cached at x{med['cached_s'] / med['floor_s']:.2f} of it"
        )
        if "reference_s" in med:
            line += f"; reference / floor x{med['reference_s'] / med['floor_s']:.1f} (the most this arithmetic allows)"
        print(line)
    one, two = figures["1 thread"], figures["2 threads"]
    print(f"  2 threads / 1 thread (cached): x{two['cached_s'] / one['cached_s']:.2f}")
    spin = figures["2 threads, spinning waits"]
    print(f"  spinning / passive waits, 2 threads (cached): x{spin['cached_s'] / two['cached_s']:.2f}")
    write_report(args.json, "threads", {"busy": args.busy, "size": args.size, "variants": figures})


if __name__ == "__main__":
    main()
