"""Measure a tiny SAM's quality the way the model card reports it (anyone can re-run this).

    python scripts/evaluate_tiny_model.py [--checkpoint resources/models/sam_tiny.safetensors] [--write-card]

Sets (no download needed):
* held-out synthetic scenes (``reference_data.synthetic_heldout``, a seed pretraining never uses);
  objects of at least ``--min-area`` pixels;
* scikit-image's ``coins`` with a classical ground truth (``reference_data.coins_instances``).
Prompts, through ``infosam_core.predict.Predictor`` exactly as the app uses it:
* one box: the object's tight box, single-mask output;
* one point: the object's centre (the pixel farthest from its boundary, as in SAM's paper), multimask output,
  the mask with the highest predicted IoU; ``point_best_of_3_miou`` is what a perfect choice among the three
  would give (the gap is the IoU head's).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infosam_core.metrics import iou  # noqa: E402
from infosam_core.models import BUNDLED_TINY_CHECKPOINT, load_sam  # noqa: E402
from infosam_core.predict import Predictor  # noqa: E402
from infosam_core.prompts import box_from_mask  # noqa: E402
from infosam_core.reference_data import InstanceImage, coins_instances, object_masks, synthetic_heldout  # noqa: E402

CARD_PATH = ROOT / "resources" / "models" / "sam_tiny.results.json"


def centre_point(mask: np.ndarray) -> np.ndarray:
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([[x, y]], dtype=np.float32)


def evaluate_set(predictor: Predictor, images: list[InstanceImage], min_area: int) -> dict[str, float]:
    box_ious, point_ious, point_best = [], [], []
    for item in images:
        predictor.set_image(item.image)
        for mask in object_masks(item.labels, min_area=min_area):
            masks, _, _ = predictor.predict(box=box_from_mask(mask), multimask_output=False)
            box_ious.append(iou(masks[0].astype(np.float32), mask))
            masks, scores, _ = predictor.predict(
                point_coords=centre_point(mask), point_labels=np.array([1]), multimask_output=True
            )
            ious = [iou(candidate.astype(np.float32), mask) for candidate in masks]
            point_ious.append(ious[int(np.argmax(scores))])
            point_best.append(max(ious))
    return {
        "objects": len(box_ious),
        "box_miou": float(np.mean(box_ious)),
        "point_miou": float(np.mean(point_ious)),
        "point_best_of_3_miou": float(np.mean(point_best)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_TINY_CHECKPOINT)
    parser.add_argument("--images", type=int, default=40, help="held-out synthetic scenes")
    parser.add_argument("--min-area", type=int, default=100)
    parser.add_argument("--write-card", action="store_true", help=f"write the figures to {CARD_PATH.name}")
    args = parser.parse_args()

    torch.manual_seed(0)
    sam = load_sam("tiny", args.checkpoint)
    predictor = Predictor(sam, cache_size=2)
    start = time.time()
    results = {
        "checkpoint": str(args.checkpoint.relative_to(ROOT) if args.checkpoint.is_relative_to(ROOT) else args.checkpoint),
        "synthetic_heldout": evaluate_set(predictor, synthetic_heldout(args.images), args.min_area),
        "synthetic_heldout_all_sizes": evaluate_set(predictor, synthetic_heldout(args.images), 24),
        "coins": evaluate_set(predictor, [coins_instances()], 100),
        "settings": {"images": args.images, "min_area": args.min_area},
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
        "eval_seconds": round(time.time() - start, 1),
    }
    print(json.dumps(results, indent=2))
    if args.write_card:
        CARD_PATH.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {CARD_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
