"""Propagation through stacks, measured (issue 27): 3D IoU of one box propagated through synthetic stacks, and
seconds per slice.

    python scripts/measure_propagation.py                    # tiny (projection) + random SAM2.1-tiny at 256 px
    python scripts/measure_propagation.py --seeds 1 2 3 --sam2-size 512 --json out.json

* ellipsoids: (32, 256, 256), three bright ellipsoids per seed, one box on slice 16 around each in turn;
  3D IoU against that ellipsoid, voxels on the other two, the slices reached;
* crossing blobs: a (24, 192, 192) series of two discs passing each other, one box on frame 0: mean per-frame
  IoU, frames where the mask touched the other disc;
* SAM2: a random-weight SAM2.1-tiny (no checkpoint is used at run time: weights would need a download) on the
  same stacks, timed; its IoU is printed too but random weights segment nothing meaningful.

Seconds per slice are wall time of the propagation (model loaded, embeddings not cached) on the device given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from infosam_core.data.synthetic_stacks import crossing_blobs_series, ellipsoid_stack, iou_3d
from infosam_core.inference.predictor import Predictor
from infosam_core.inference.propagation import PropagationResult, SlicePrompt, propagate
from infosam_core.io.stacks import stack_from_array


def _ellipsoids(predictor: Predictor, seeds: list[int], every_object: bool) -> list[dict]:
    rows = []
    for seed in seeds:
        data = ellipsoid_stack(seed)
        stack = stack_from_array(data.image, "ZYX")
        for target in (1, 2, 3) if every_object else (1,):
            result = propagate(predictor, stack, 16, SlicePrompt(box=data.box(target, 16)))
            truth = data.labels == target
            others = int((result.masks & (data.labels > 0) & ~truth).sum())
            rows.append(_row("ellipsoids", seed, target, result, iou_3d(result.masks, truth), others))
    return rows


def _blobs(predictor: Predictor, seeds: list[int]) -> list[dict]:
    rows = []
    for seed in seeds:
        data = crossing_blobs_series(seed)
        result = propagate(predictor, stack_from_array(data.image, "TYX"), 0, SlicePrompt(box=data.box(1, 0)))
        ious = [iou_3d(result.masks[t], data.labels[t] == 1) for t in range(len(data.image))]
        jumps = int((result.masks & (data.labels == 2)).reshape(len(ious), -1).any(axis=1).sum())
        rows.append(_row("crossing_blobs", seed, 1, result, float(np.mean(ious)), jumps))
    return rows


def _row(kind: str, seed: int, target: int, result: PropagationResult, iou: float, other: int) -> dict:
    slices = result.slices
    return {
        "stack": kind,
        "seed": seed,
        "object": target,
        "iou": round(iou, 4),
        "other_object": other,
        "slices": [slices[0], slices[-1]] if slices else [],
        "seconds": round(result.seconds, 2),
        "seconds_per_slice": round(result.seconds / max(1, len(result.masks) - 1), 3),
        "engine": result.engine,
    }


def _summary(name: str, rows: list[dict]) -> dict:
    out: dict = {"model": name}
    for kind in ("ellipsoids", "crossing_blobs"):
        part = [r for r in rows if r["stack"] == kind]
        if part:
            out[kind] = {
                "mean_iou": round(float(np.mean([r["iou"] for r in part])), 4),
                "min_iou": round(float(np.min([r["iou"] for r in part])), 4),
                "runs": len(part),
                "other_object_total": int(sum(r["other_object"] for r in part)),
                "seconds_per_slice": round(float(np.median([r["seconds_per_slice"] for r in part])), 3),
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 202, 303])
    parser.add_argument("--sam2-size", type=int, default=256, help="SAM2's input side (a multiple of 64; Meta: 1024)")
    parser.add_argument("--no-sam2", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from infosam_core.models.registry import load_sam

    results: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "device": args.device},
        "load_average": os.getloadavg()[0],
        "models": [],
        "runs": [],
    }
    tiny = load_sam("tiny").to(args.device)
    predictor = Predictor(tiny, cache_size=0)
    rows = _ellipsoids(predictor, args.seeds, every_object=True) + _blobs(predictor, args.seeds)
    for row in rows:
        row["model"] = "tiny"
    results["runs"] += rows
    results["models"].append(_summary("tiny (projection)", rows))

    if not args.no_sam2:
        import warnings

        from infosam_core.models.sam2 import Sam2Model, build_sam2_base

        warnings.filterwarnings("ignore")
        torch.manual_seed(0)
        model = Sam2Model(build_sam2_base("sam2.1_hiera_tiny", args.sam2_size), "sam2.1_hiera_tiny").eval()
        model = model.to(args.device)
        predictor = Predictor(model, cache_size=0)
        started = time.perf_counter()
        rows = _ellipsoids(predictor, args.seeds[:1], every_object=False) + _blobs(predictor, args.seeds[:1])
        for row in rows:
            row["model"] = f"sam2.1_hiera_tiny random @{args.sam2_size}"
        results["runs"] += rows
        summary = _summary(f"sam2.1_hiera_tiny, random weights, {args.sam2_size} px (SAM2 video memory)", rows)
        summary["wall_seconds"] = round(time.perf_counter() - started, 1)
        results["models"].append(summary)

    for summary in results["models"]:
        print(summary["model"])
        for kind in ("ellipsoids", "crossing_blobs"):
            if kind in summary:
                s = summary[kind]
                print(
                    f"  {kind:15s} 3D IoU mean {s['mean_iou']:.3f} (min {s['min_iou']:.3f}, {s['runs']} runs), "
                    f"voxels/frames on the other object {s['other_object_total']}, {s['seconds_per_slice']:.3f} s per slice"
                )
    print(f"load average at start {results['load_average']:.1f}, {args.threads} thread(s), {args.device}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
