"""Step time of DDP training (torchrun) from 1 process to N: weak scaling, a fixed batch per process.

    python benchmarks/ddp_scaling.py --device cuda --model vit_b --per-process-batch 4 --processes 1,2,4,8
    python benchmarks/ddp_scaling.py --device cpu --processes 1,2        # gloo: shows it runs, not speed

Each process count runs as its own ``torchrun --nproc-per-node N`` (global batch = N x per-process batch,
random-init weights for the big models: speed does not depend on them). Seconds per step are the median
over ``--measure`` steps after ``--warmup`` steps (the teacher cache is filled in the warm-up epoch). Prints a
table: processes, global batch, s/step, images/s, speed-up and efficiency against 1 process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_samples(n: int):
    import numpy as np
    from skimage import draw

    from infosam_core.data.datasets import SegmentationSample

    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        image = rng.integers(0, 120, (192, 256, 3), dtype=np.uint8)
        mask = np.zeros((192, 256), bool)
        rr, cc = draw.ellipse(96, 128, 30 + i % 20, 50, shape=mask.shape)
        mask[rr, cc] = True
        image[mask] += 100
        samples.append(SegmentationSample(image, mask, f"b{i}"))
    return samples


def worker(args: argparse.Namespace) -> None:
    """One rank of one measurement (run by torchrun)."""
    import torch

    from infosam_core.models.registry import load_sam
    from infosam_core.models.sam import build_sam
    from infosam_core.training import distributed
    from infosam_core.training.config import TrainConfig
    from infosam_core.training.trainer import train

    device = torch.device(args.device, distributed.local_rank()) if args.device == "cuda" else torch.device("cpu")
    context = distributed.init_from_environment(device)
    sam = load_sam() if args.model == "tiny" else build_sam(args.model)
    batch = args.per_process_batch * context.world_size
    steps = args.warmup + args.measure
    samples = make_samples(max(batch * steps // 2, batch))  # two epochs: the second runs on the filled cache
    stamps: list[float] = []

    def progress(p) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    config = TrainConfig(
        peft="adapter", distill="infosam", batch_size=batch, epochs=2, max_steps=steps, device=str(device)
    )
    train(config, sam, samples, progress=progress if context.is_main else None)
    if context.is_main:
        times = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup - 1 :]
        print("RESULT " + json.dumps({"processes": context.world_size, "batch": batch, "s_per_step": times}))
    distributed.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--per-process-batch", type=int, default=4)
    parser.add_argument("--processes", default="", help="e.g. 1,2,4 (default: 1 to the GPU count, doubling)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--measure", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.processes:
        counts = [int(n) for n in args.processes.split(",")]
    else:
        import torch

        gpus = torch.cuda.device_count() if args.device == "cuda" else 2
        counts = [n for n in (1, 2, 4, 8, 16) if n <= gpus] or [1]
    rows = []
    for n in counts:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port", str(port)]
        cmd += [__file__, "--worker", "--device", args.device, "--model", args.model]
        cmd += ["--per-process-batch", str(args.per_process_batch), "--warmup", str(args.warmup)]
        cmd += ["--measure", str(args.measure)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{n} processes: no result (exit {out.returncode})")
        rows.append(json.loads(line[len("RESULT ") :]))
    base = statistics.median(rows[0]["s_per_step"]) / rows[0]["batch"]
    print(f"{args.model} on {args.device}, {args.per_process_batch} images per process, median of {args.measure}")
    print(f"{'processes':>9} {'batch':>5} {'s/step':>8} {'images/s':>9} {'speed-up':>8} {'efficiency':>10}")
    for r in rows:
        step = statistics.median(r["s_per_step"])
        speedup = base / (step / r["batch"])
        print(
            f"{r['processes']:>9} {r['batch']:>5} {step:>8.3f} {r['batch'] / step:>9.1f} {speedup:>8.2f} "
            f"{speedup / r['processes']:>10.2f}"
        )


if __name__ == "__main__":
    main()
