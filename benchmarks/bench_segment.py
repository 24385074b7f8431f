"""Automatic segmentation ("Segment all", ``infosam segment``) speed: seconds per image.

    python benchmarks/bench_segment.py                       # tiny (bundled) and random-init vit_b
    python benchmarks/bench_segment.py --skip-vit-b --json out.json

Per model, on the bundled nucleus sample (cropped to ``--size``): the time of
:func:`infosam_core.inference.automatic.segment_all` with the model's default settings
(``AutomaticConfig.for_model``: 16 x 16 prompts for tiny, SAM's 32 x 32 otherwise) -- cold (encoder pass
included) and on a cached embedding -- and, in the same run with the same settings, segment-anything's
``SamAutomaticMaskGenerator.generate`` (``ref.``; tiny only unless ``--ref-vit-b``: it takes minutes on
a CPU). Random-init ViT-B proposes nothing that passes the filters, so its figure is the prompts' cost.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _report import add_json_argument, write_report
from segment_anything import SamAutomaticMaskGenerator

from infosam_core.inference.automatic import AutomaticConfig, segment_all
from infosam_core.inference.predictor import Predictor
from infosam_core.io.images import load_rgb
from infosam_core.models.registry import load_sam
from infosam_core.resources import SAMPLES_DIR


def bench_model(model_type: str, image: np.ndarray, runs: int, reference: bool) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init vit_b warns; expected here
        sam = load_sam(model_type)
    config = AutomaticConfig.for_model(model_type)
    predictor = Predictor(sam, cache_size=1)
    start = time.perf_counter()
    result = segment_all(predictor, image, config)
    cold = time.perf_counter() - start
    cached = []
    for _ in range(runs):
        start = time.perf_counter()
        result = segment_all(predictor, image, config)
        cached.append(time.perf_counter() - start)
    row = {
        "model": model_type,
        "image": list(image.shape[:2]),
        "prompts": config.points_per_side**2,
        "proposals": len(result.proposals),
        "cold_s": cold,
        "cached_s": float(np.median(cached)) if cached else None,
    }
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
        row["reference_over_cold"] = row["reference_s"] / cold
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=2, help="cached-embedding runs per model (median; 0: cold only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-vit-b", action="store_true")
    parser.add_argument("--ref-vit-b", action="store_true", help="also time segment-anything's generator on vit_b")
    add_json_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = np.ascontiguousarray(load_rgb(SAMPLES_DIR / "nuclei_stained_rgb.png")[: args.size[0], : args.size[1]])
    rows = [bench_model("tiny", image, args.runs, reference=True)]
    if not args.skip_vit_b:
        rows.append(bench_model("vit_b", image, args.runs, reference=args.ref_vit_b))
    print(f"{'model':8} {'image':>9} {'prompts':>7} {'proposals':>9} {'cold s':>8} {'cached s':>8} {'ref. s':>8}")
    for r in rows:
        ref = f"{r['reference_s']:8.2f}" if "reference_s" in r else f"{'-':>8}"
        cached = f"{r['cached_s']:8.2f}" if r["cached_s"] is not None else f"{'-':>8}"
        size = "x".join(map(str, r["image"]))
        print(f"{r['model']:8} {size:>9} {r['prompts']:7d} {r['proposals']:9d} {r['cold_s']:8.2f} {cached} {ref}")
    write_report(args.json, "segment", {"rows": rows}, device="cpu")


if __name__ == "__main__":
    main()
