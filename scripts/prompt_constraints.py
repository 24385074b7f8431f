"""How much a negative point and a box constrain the bundled tiny model's mask, on the held-out synthetic scenes.

    python scripts/prompt_constraints.py [--images 40] [--min-area 64] [--checkpoint F] [--json out.json]

Prompts go through :class:`infosam_core.inference.predictor.Predictor` as the app gives them:

* negative point: one positive point at the object's centre (the pixel farthest from its boundary), multimask
  output, the best-scored mask (what the app shows for one point). Where that mask spills outside the object
  (at least ``--min-spill`` pixels), a negative point goes on the spill pixel farthest from the object (where a
  user clicks to remove it), and the two points are predicted again (single-mask output, as the app does for
  several prompts). Reported: how often the negative point's own pixel is still in the new mask, how much of
  the spill is left, and the IoU before and after.
* box: the object's tight box, single-mask output. Reported: the mean fraction of the mask's pixels outside the
  box, and how many masks have any pixel more than 2 px outside it.

Prints a table and, with ``--json``, writes the figures (the model card's "Prompts" section quotes them).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from infosam_core.data.prompt_sampling import box_from_mask
from infosam_core.data.reference_sets import InstanceImage, object_masks, synthetic_heldout
from infosam_core.evaluation.metrics import iou
from infosam_core.inference.predictor import Predictor


@dataclass
class ConstraintFigures:
    """What the prompts did, summed over the objects measured."""

    images: int = 0
    objects: int = 0
    negative_cases: int = 0  # objects whose one-point mask spilled enough for a negative point
    negative_pixel_kept: int = 0  # ... where the negative point's own pixel stayed in the mask
    spill_left: list[float] = field(default_factory=list)  # spill after / spill before, per case
    iou_before: list[float] = field(default_factory=list)
    iou_after: list[float] = field(default_factory=list)
    box_outside_fraction: list[float] = field(default_factory=list)  # per object: mask pixels outside the box
    box_spilling: int = 0  # masks with a pixel more than 2 px outside the box

    def summary(self) -> dict[str, float | int]:
        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else float("nan")

        return {
            "images": self.images,
            "objects": self.objects,
            "negative_cases": self.negative_cases,
            "negative_pixel_kept_rate": self.negative_pixel_kept / self.negative_cases
            if self.negative_cases
            else float("nan"),
            "spill_left_mean": mean(self.spill_left),
            "spill_left_median": float(np.median(self.spill_left)) if self.spill_left else float("nan"),
            "spill_removed_rate": float(np.mean([v < 0.5 for v in self.spill_left]))
            if self.spill_left
            else float("nan"),
            "iou_one_point": mean(self.iou_before),
            "iou_with_negative_point": mean(self.iou_after),
            "box_outside_fraction_mean": mean(self.box_outside_fraction),
            "box_spilling_rate": self.box_spilling / self.objects if self.objects else float("nan"),
        }


def centre_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel farthest from the mask's boundary."""
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return float(x), float(y)


def measure(
    predictor: Predictor, scenes: list[InstanceImage], min_area: int = 64, min_spill: int = 20
) -> ConstraintFigures:
    figures = ConstraintFigures()
    for scene in scenes:
        predictor.set_image(scene.image)
        figures.images += 1
        for truth in object_masks(scene.labels, min_area):
            figures.objects += 1
            # a box
            box = np.asarray(box_from_mask(truth), dtype=np.float32)
            masks, _, _ = predictor.predict(box=box, multimask_output=False)
            mask = masks[0]
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            inside = np.zeros_like(mask)
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            figures.box_outside_fraction.append(float((mask & ~inside).sum() / max(int(mask.sum()), 1)))
            grown = np.zeros_like(mask)
            grown[max(0, y0 - 2) : y1 + 3, max(0, x0 - 2) : x1 + 3] = True
            figures.box_spilling += bool((mask & ~grown).any())
            # a positive point, then a negative one on the spill
            x, y = centre_point(truth)
            masks, scores, _ = predictor.predict(
                point_coords=np.array([[x, y]], np.float32), point_labels=np.array([1]), multimask_output=True
            )
            first = masks[int(np.argmax(scores))]
            spill = first & ~truth
            if int(spill.sum()) < min_spill:
                continue
            dist = ndi.distance_transform_edt(~truth)
            ny, nx = np.unravel_index(int(np.argmax(np.where(spill, dist, -1))), spill.shape)
            masks, _, _ = predictor.predict(
                point_coords=np.array([[x, y], [nx, ny]], np.float32),
                point_labels=np.array([1, 0]),
                multimask_output=False,
            )
            second = masks[0]
            figures.negative_cases += 1
            figures.negative_pixel_kept += bool(second[ny, nx])
            figures.spill_left.append(float((second & ~truth).sum() / spill.sum()))
            figures.iou_before.append(float(iou(first, truth)))
            figures.iou_after.append(float(iou(second, truth)))
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40, help="held-out synthetic scenes (default 40)")
    ap.add_argument("--min-area", type=int, default=64, help="objects of at least this many pixels")
    ap.add_argument("--min-spill", type=int, default=20, help="spill pixels needed for a negative point")
    ap.add_argument("--checkpoint", help="tiny weights (default: the bundled ones)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    from infosam_core.models.registry import load_sam

    sam = load_sam("tiny", args.checkpoint)
    figures = measure(Predictor(sam, cache_size=1), synthetic_heldout(args.images), args.min_area, args.min_spill)
    summary = figures.summary()
    for name, value in summary.items():
        print(f"{name:28s} {value:.4f}" if isinstance(value, float) else f"{name:28s} {value}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "per_case": asdict(figures)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
