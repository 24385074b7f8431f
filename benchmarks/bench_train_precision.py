"""CPU training in bf16 autocast vs float32: seconds per step and the loss reached, side by side in one run.

    python benchmarks/bench_train_precision.py                      # tiny model, adapter + InfoSAM, batch 4
    python benchmarks/bench_train_precision.py --measure 8 --threads 1 --json benchmarks/results/train_precision.json

The trainer uses bf16 autocast where bf16 is native (:func:`infosam_core.inference.precision.native_bf16`:
CUDA GPUs with bf16, CPUs with AMX); on other CPUs it trains in float32. This script forces each precision
(the ``bf16`` row patches ``native_bf16`` to True in its own process) so the choice can be checked on any CPU:
the row it prints as ``auto`` says what the trainer picks here. Each precision runs in its own process, on the
same samples, seed and steps; seconds per step are the median after the warm-up epoch; the loss is the last
epoch's mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import add_json_argument, write_report

ROOT = Path(__file__).resolve().parent.parent


def run_one(precision: str, batch: int, measure: int) -> dict:
    import torch
    from bench_train import make_samples

    import infosam_core.training.trainer as trainer_module
    from infosam_core.inference.precision import cpu_features
    from infosam_core.models.registry import load_sam
    from infosam_core.training.config import TrainConfig

    if precision == "bfloat16":
        trainer_module.native_bf16 = lambda device: True  # type: ignore[assignment]  # forced: see the docstring
    torch.manual_seed(0)
    config = TrainConfig(
        peft="adapter",
        distill="infosam",
        batch_size=batch,
        epochs=1 + measure,
        hflip=False,
        device="cpu",
        seed=0,
        bf16=precision == "bfloat16",
    )
    times: list[float] = []
    last = [time.monotonic()]

    def progress(_p) -> None:
        now = time.monotonic()
        times.append(now - last[0])
        last[0] = now

    result = trainer_module.train(config, load_sam("tiny"), make_samples(batch), progress=progress)
    history = result.history
    return {
        "precision": precision,
        "s_per_step": statistics.median(times[1:]),
        "first_loss": float(history[0]["loss"]),
        "last_loss": float(history[-1]["loss"]),
        "last_seg_loss": float(history[-1]["seg_loss"]),
        "threads": torch.get_num_threads(),
        "cpu": dataclasses.asdict(cpu_features()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--measure", type=int, default=6, help="steps measured after the warm-up epoch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--one", choices=("float32", "bfloat16"), help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(args.one, args.batch, args.measure)))
        return 0
    rows = []
    for precision in ("float32", "bfloat16"):
        command = [sys.executable, __file__, "--one", precision, "--batch", str(args.batch)]
        command += ["--measure", str(args.measure), "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    from infosam_core.inference.precision import native_bf16

    auto = "bfloat16" if native_bf16("cpu") else "float32"
    f32, bf16 = rows
    print(f"{'precision':10} {'s/step':>8} {'first loss':>11} {'last loss':>10} {'last seg':>9}")
    for row in rows:
        mark = "  <- auto here" if row["precision"] == auto else ""
        print(
            f"{row['precision']:10} {row['s_per_step']:8.3f} {row['first_loss']:11.4f} {row['last_loss']:10.4f} "
            f"{row['last_seg_loss']:9.4f}{mark}"
        )
    ratio = f32["s_per_step"] / bf16["s_per_step"]
    print(f"bf16 speed-up over float32: x{ratio:.2f}; last-loss difference {bf16['last_loss'] - f32['last_loss']:+.4f}")
    write_report(args.json, "train_precision", {"rows": rows, "auto": auto, "bf16_speedup": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
