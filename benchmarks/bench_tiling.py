"""Tiling on a large image: instance F1, seam splits and box IoU before and after, bundled tiny model.

    python benchmarks/bench_tiling.py                    # 1024^2, 300 nuclei, tiles 256 + halo 32
    python benchmarks/bench_tiling.py --seed 7 --size 2048 --objects 1200 --json out.json

On a synthetic fluorescence scene (:func:`infosam_core.data.nuclei_scene.nuclei_scene`: bright ellipses of
7-12 px radius on noise), side by side in one run:

* **whole**: segment all on the whole image (shrunk to the model's 256 px input), tiling off;
* **crops**: the image cut into ``tile`` x ``tile`` crops, each segmented alone and pasted back (no halo, no
  seam resolution: the naive way);
* **tiled**: :func:`~infosam_core.inference.tiling_segment.segment_all_tiled` (tile + halo, seams resolved).

For each: instance F1 at IoU 0.5, objects found, true objects split between two or more labels and extra
fragments (:mod:`infosam_core.evaluation.seams`), seconds. Then box prompts around ``--boxes`` objects: mask IoU
of the whole-image :class:`Predictor` vs :class:`TiledPredictor`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _report import add_json_argument, write_report

from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
from infosam_core.evaluation.instances import match_instances
from infosam_core.evaluation.seams import seam_score
from infosam_core.inference.automatic import AutomaticConfig, segment_all
from infosam_core.inference.predictor import Predictor
from infosam_core.inference.tiling import TilingConfig
from infosam_core.inference.tiling_predictor import TiledPredictor
from infosam_core.inference.tiling_segment import segment_all_tiled
from infosam_core.models.registry import load_sam


def naive_crops(predictor: Predictor, image: np.ndarray, tile: int, config: AutomaticConfig) -> np.ndarray:
    """Each tile x tile crop segmented alone, its labels pasted back (offset so labels stay distinct)."""
    labels = np.zeros(image.shape[:2], dtype=np.int32)
    next_label = 0
    for y in range(0, image.shape[0], tile):
        for x in range(0, image.shape[1], tile):
            crop_labels = segment_all(predictor, image[y : y + tile, x : x + tile], config).labels().astype(np.int32)
            labels[y : y + tile, x : x + tile] = np.where(crop_labels > 0, crop_labels + next_label, 0)
            next_label += int(crop_labels.max())
    return labels


def score(name: str, labels: np.ndarray, truth: np.ndarray, seconds: float) -> dict:
    f1 = match_instances(labels, truth)
    seams = seam_score(labels, truth)
    row = {
        "f1": round(f1.f1, 3),
        "found": int(len(np.unique(labels)) - 1),
        "matched": f1.true_positives,
        "split": seams.split,
        "fragments": seams.fragments,
        "extra": f1.false_positives,
        "seconds": round(seconds, 1),
    }
    print(
        f"{name:6s} F1@0.5 {row['f1']:.3f}  found {row['found']:4d}  matched {row['matched']:4d}  "
        f"split {row['split']:3d}  fragments {row['fragments']:3d}  extra {row['extra']:4d}  {row['seconds']:7.1f} s"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--halo", type=int, default=32)
    parser.add_argument("--boxes", type=int, default=40, help="objects prompted with their box")
    parser.add_argument("--threads", type=int, default=1)
    add_json_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    image, truth = nuclei_scene(NucleiSceneConfig(size=(args.size, args.size), n_objects=args.objects), args.seed)
    print(
        f"scene {args.size}x{args.size}, {int(truth.max())} objects (seed {args.seed}); tiles {args.tile} + halo {args.halo}"
    )
    sam = load_sam("tiny").eval()
    config = AutomaticConfig.for_model("tiny")
    tiling = TilingConfig(args.tile, args.halo)
    figures: dict = {"size": args.size, "objects": int(truth.max()), "tile": args.tile, "halo": args.halo}

    start = time.perf_counter()
    whole = segment_all(Predictor(sam, cache_size=1), image, config).labels()
    figures["whole"] = score("whole", whole, truth, time.perf_counter() - start)
    start = time.perf_counter()
    crops = naive_crops(Predictor(sam, cache_size=1), image, args.tile, config)
    figures["crops"] = score("crops", crops, truth, time.perf_counter() - start)
    start = time.perf_counter()
    tiled = segment_all_tiled(Predictor(sam, cache_size=1), image, config, tiling).labels
    figures["tiled"] = score("tiled", tiled, truth, time.perf_counter() - start)

    predictor = Predictor(sam, cache_size=64)
    predictor.set_image(image)
    tiled_predictor = TiledPredictor(predictor.fork(), tiling)
    tiled_predictor.set_image(image)
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(np.arange(1, int(truth.max()) + 1), size=min(args.boxes, int(truth.max())), replace=False)
    ious: dict[str, list[float]] = {"whole": [], "tiled": []}
    for index in chosen:
        mask = truth == index
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
        for name, answer in (("whole", predictor), ("tiled", tiled_predictor)):
            masks, _, _ = answer.predict(box=box, multimask_output=False)
            ious[name].append(float((masks[0] & mask).sum() / (masks[0] | mask).sum()))
    for name, values in ious.items():
        figures[f"box_iou_{name}"] = {
            "mean": round(float(np.mean(values)), 3),
            "min": round(float(np.min(values)), 3),
            "max": round(float(np.max(values)), 3),
        }
        print(f"box IoU {name:6s} mean {np.mean(values):.3f}  min {np.min(values):.3f}  max {np.max(values):.3f}")
    write_report(args.json, "tiling", figures)


if __name__ == "__main__":
    main()
