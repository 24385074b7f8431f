"""Training speed and memory: plain PEFT vs PEFT + InfoSAM (teacher cache) vs PEFT + InfoSAM recomputing the
teacher every step (the reference code's behaviour, ``teacher_cache=False``), and PEFT + InfoSAM with
activation checkpointing (``grad_checkpoint=True``: the memory-saving setting for ViT-B on small GPUs).

    python benchmarks/bench_train.py                       # tiny (bundled weights) + reduced random-init vit_b
    python benchmarks/bench_train.py --models tiny --measure 6 --threads 1   # a CPU shared with other work
    python benchmarks/bench_train.py --models vit_b --device cuda --batch 4 --measure 10
    python benchmarks/bench_train.py --models tiny --distillers all --measure 4 --threads 1  # every distiller
    python benchmarks/bench_train.py --models sam2.1_hiera_tiny@256 --distillers vid,reviewkd --threads 1

``--distillers all`` (or a comma-separated list) times plain PEFT and PEFT + each registered distiller (its
default options; ``name:key=value`` for others, e.g. ``mobilesam:relation_module=true``) instead of the
InfoSAM settings, and prints each one's time and memory as a ratio to plain PEFT, all from one run.

Each (model, setting) runs in its own process, so peak memory is its own: CPU = peak resident set size
(``ru_maxrss``, whole process: model, data, activations); CUDA = ``torch.cuda.max_memory_allocated``.
Seconds per step are the median over ``--measure`` steps taken after one warm-up epoch (so every image is
in the teacher cache). Prints a table and the ratios InfoSAM / plain and recompute / InfoSAM.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import add_json_argument, write_report

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = {
    "plain": dict(distill="none"),
    "infosam": dict(distill="infosam", teacher_cache=True),
    "recompute": dict(distill="infosam", teacher_cache=False),
    "ckpt": dict(distill="infosam", teacher_cache=True, grad_checkpoint=True),  # + activation checkpointing
}


def make_samples(n: int, seed: int = 0):
    import numpy as np
    from skimage import draw

    from infosam_core.data.datasets import SegmentationSample

    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        image = rng.integers(0, 120, (192, 256, 3), dtype=np.uint8)
        mask = np.zeros((192, 256), bool)
        rr, cc = draw.ellipse(96, 128, 30 + 3 * i, 50, shape=mask.shape)
        mask[rr, cc] = True
        image[mask] += 100
        samples.append(SegmentationSample(image, mask, f"b{i}"))
    return samples


def distiller_setting(spec: str, batch: int) -> dict:
    """``name`` or ``name:key=value,key=value`` -> TrainConfig fields. A distiller built for one batch size
    (a ``batch_size`` option) gets the benchmark's."""
    from infosam_core.distill.registry import DISTILLERS, batch_size_problem

    name, _, opts = spec.partition(":")
    options = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        options[key] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
    fields = getattr(DISTILLERS[name].config_cls, "__dataclass_fields__", {})
    if "batch_size" in fields and batch_size_problem(name, options, batch):
        options["batch_size"] = batch
    return dict(distill=name, distill_options=options, teacher_cache=True)


def build_model(model: str):
    """A random-init model: a SAM type (``vit_b``), or a SAM2 type at an input size (``sam2.1_hiera_tiny@256``:
    ``build_sam2_base(..., image_size=256)``, the tests' fast SAM2; the config's 1024 without ``@``)."""
    import warnings

    from infosam_core.models.sam import build_sam
    from infosam_core.models.sam2 import SAM2_MODEL_TYPES, Sam2Model, build_sam2_base

    name, _, size = model.partition("@")
    if name not in SAM2_MODEL_TYPES:
        return build_sam(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam2Model(build_sam2_base(name, int(size) if size else None), name).eval()


def run_one(model: str, setting: str, peft: str, batch: int, measure: int, device: str) -> dict:
    """One measurement in this process; returns the figures as a dict."""
    import torch

    from infosam_core.models.registry import load_sam
    from infosam_core.training.config import TrainConfig
    from infosam_core.training.trainer import train

    torch.manual_seed(0)
    sam = load_sam("tiny") if model == "tiny" else build_model(model)
    samples = make_samples(batch)  # one step per epoch: epoch 1 warms the cache up
    fields = SETTINGS[setting] if setting in SETTINGS else distiller_setting(setting, batch)
    config = TrainConfig(peft=peft, batch_size=batch, epochs=1 + measure, hflip=False, device=device, seed=0, **fields)
    times: list[float] = []
    last = [time.monotonic()]

    def progress(p) -> None:
        now = time.monotonic()
        times.append(now - last[0])
        last[0] = now

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = train(config, sam, samples, progress=progress)
    steady = times[1:]
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "model": model,
        "setting": setting,
        "peft": peft,
        "batch": batch,
        "device": device,
        "first_step_s": times[0],
        "s_per_step": statistics.median(steady),
        "steps_measured": len(steady),
        "peak_mb": peak_mb,
        "teacher_encoder_images": result.teacher_encoder_images,
        "threads": torch.get_num_threads(),
    }


def measure_all(args: argparse.Namespace, device: str, settings: list[str] | None = None) -> list[dict]:
    """Every (model, setting) in its own process (so its peak memory is its own); one row each."""
    rows = []
    for model in args.models.split(","):
        small_cpu = model != "tiny" and device == "cpu"
        batch = args.batch or (2 if small_cpu else 4)
        measure = args.measure or (2 if small_cpu else 5)
        for setting in settings or list(SETTINGS):
            cmd = [sys.executable, __file__, "--one", model, setting, "--peft", args.peft, "--device", device]
            cmd += ["--batch", str(batch), "--measure", str(measure)]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{model:>6} {setting:>12}: {row['s_per_step']:.3f} s/step (first step {row['first_step_s']:.2f} s), "
                f"peak {row['peak_mb']:.0f} MB, teacher encoder ran on {row['teacher_encoder_images']} images",
                flush=True,
            )
    return rows


def setting_ratios(rows: list[dict], model: str) -> dict:
    """Time and memory ratios between settings of one model, measured in the same run."""
    by = {r["setting"]: r for r in rows if r["model"] == model}
    return {
        f"{a}/{b}": {"time": by[a]["s_per_step"] / by[b]["s_per_step"], "memory": by[a]["peak_mb"] / by[b]["peak_mb"]}
        for a, b in (("infosam", "plain"), ("recompute", "infosam"), ("ckpt", "infosam"))
    }


def ratios_to_plain(rows: list[dict], model: str) -> dict:
    """Each setting's time and memory as a ratio to plain PEFT, for one model (measured in the same run)."""
    by = {r["setting"]: r for r in rows if r["model"] == model}
    plain = by["plain"]
    return {
        f"{name}/plain": {"time": r["s_per_step"] / plain["s_per_step"], "memory": r["peak_mb"] / plain["peak_mb"]}
        for name, r in by.items()
    }


def split_specs(text: str) -> list[str]:
    """'vid,mobilesam:relation_module=true,weight=2,pkt' -> ['vid', 'mobilesam:relation_module=true,weight=2',
    'pkt'] (an item with '=' belongs to the previous name's options)."""
    specs: list[str] = []
    for item in text.split(","):
        if "=" in item and specs:
            specs[-1] += ("," if ":" in specs[-1] else ":") + item
        else:
            specs.append(item)
    return specs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default="tiny,vit_b",
        help="comma-separated: tiny, vit_b (random init), sam2.1_hiera_tiny@256 (SAM2, random init, input size)",
    )
    parser.add_argument("--peft", default="adapter")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="default: 4 for tiny / on CUDA, 2 for vit_b on CPU")
    parser.add_argument("--measure", type=int, default=None, help="measured steps (default: 5 tiny, 2 vit_b on CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--distillers",
        help="'all' or name[:key=value,...] list (comma-separated names; options after ':'): time each distiller "
        "as a ratio to plain PEFT instead of the InfoSAM settings",
    )
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.one:
        model, setting = args.one
        print(json.dumps(run_one(model, setting, args.peft, args.batch, args.measure, device)))
        return 0

    settings = list(SETTINGS)
    if args.distillers:
        from infosam_core.distill.registry import DISTILLERS

        wanted = list(DISTILLERS) if args.distillers == "all" else split_specs(args.distillers)
        settings = ["plain", *wanted]
    rows = measure_all(args, device, settings)
    mem = "peak MB (CUDA allocated)" if device.startswith("cuda") else "peak RSS MB"
    print()
    print(f"{'model':>6} {'setting':>12} {'batch':>5} {'s/step':>8} {mem:>24} {'time/plain':>11} {'mem/plain':>10}")
    for r in rows:
        ratio = ratios_to_plain(rows, r["model"])[f"{r['setting']}/plain"]
        print(
            f"{r['model']:>6} {r['setting']:>12} {r['batch']:>5} {r['s_per_step']:>8.3f} {r['peak_mb']:>24.0f} "
            f"{ratio['time']:>10.2f}x {ratio['memory']:>9.2f}x"
        )
    print()
    if args.distillers:
        ratios = {model: ratios_to_plain(rows, model) for model in dict.fromkeys(r["model"] for r in rows)}
        write_report(
            args.json,
            "train_distillers",
            {"peft": args.peft, "memory": mem, "rows": rows, "ratios": ratios},
            device=device,
        )
        return 0
    ratios = {model: setting_ratios(rows, model) for model in dict.fromkeys(r["model"] for r in rows)}
    for model, r in ratios.items():
        threads = next(row["threads"] for row in rows if row["model"] == model)
        print(
            f"{model} ({args.peft}, {device}, {threads} threads): "
            f"InfoSAM / plain = {r['infosam/plain']['time']:.2f}x time, {r['infosam/plain']['memory']:.2f}x memory; "
            f"recompute / InfoSAM = {r['recompute/infosam']['time']:.2f}x time, "
            f"{r['recompute/infosam']['memory']:.2f}x memory; "
            f"checkpointing / InfoSAM = {r['ckpt/infosam']['time']:.2f}x time, "
            f"{r['ckpt/infosam']['memory']:.2f}x memory"
        )
    figures = {"peft": args.peft, "memory": mem, "rows": rows, "ratios": ratios}
    write_report(args.json, "train", figures, device=device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
