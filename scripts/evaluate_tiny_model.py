"""Measure a tiny SAM's quality the way the model card reports it (anyone can re-run this).

    python scripts/evaluate_tiny_model.py [--checkpoint resources/models/sam_tiny.safetensors] [--write-card]
    python scripts/evaluate_tiny_model.py --choose runs/X/sam_tiny.safetensors runs/X/sam_tiny_ema.safetensors

``--choose`` picks among candidate weight files (a phase's last step and its weight average, say) on the
*validation* scenes (``reference_data.synthetic_validation``, another unused seed): the highest one-box mIoU,
one-point mIoU breaking a tie. The held-out figures the card reports are then measured on the chosen file
alone, so no choice is made on them. With ``--write-card`` too, the choice (each candidate's validation
figures and weight fingerprint, and whether ``--checkpoint`` holds the chosen weights) goes into the
results file as ``checkpoint_choice``.

Sets (no download needed):
* held-out synthetic scenes (``reference_data.synthetic_heldout``, a seed pretraining never uses);
  objects of at least ``--min-area`` pixels;
* scikit-image's ``coins`` with a classical ground truth (``reference_data.coins_instances``).
Prompts, through ``infosam_core.inference.predictor.Predictor`` exactly as the app uses it:
* one box: the object's tight box, single-mask output;
* one point: the object's centre (the pixel farthest from its boundary, as in SAM's paper), multimask output,
  the mask with the highest predicted IoU; ``point_best_of_3_miou`` is what a perfect choice among the three
  would give (the gap is the IoU head's); ``point_iou_head_error`` is the mean |predicted - true IoU| over
  all three masks.
For each set, ``box_by_kind`` splits the one-box mIoU by what the object is (see ``object_kinds``: its area,
whether occlusion left it in several pieces, how much of its box it fills), and ``box_best_of_3_miou`` is what
a perfect choice among the three masks of a multimask box prompt would give; ``box_precision`` and
``box_recall`` are the per-object means of |P & G| / |P| (0 for an empty P) and |P & G| / |G|, and
``box_miou_by_logit_threshold`` the one-box mIoU with the mask logits thresholded at -1, 0 (SAM's) and +1.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from infosam_core.data.prompt_sampling import box_from_mask
from infosam_core.data.reference_sets import (
    InstanceImage,
    coins_instances,
    object_masks,
    synthetic_heldout,
    synthetic_validation,
)
from infosam_core.evaluation.metrics import iou
from infosam_core.inference.predictor import Predictor
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.registry import load_sam
from infosam_core.resources import BUNDLED_TINY_CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
CARD_PATH = ROOT / "resources" / "models" / "sam_tiny.results.json"


def centre_point(mask: np.ndarray) -> np.ndarray:
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([[x, y]], dtype=np.float32)


#: Offsets from SAM's logit threshold (``Sam.mask_threshold``, 0) the one-box mIoU is measured at; offset 0
#: is the one-box figure itself.
BOX_THRESHOLD_OFFSETS = (-1.0, 0.0, 1.0)

#: ``box_by_kind`` groups: name -> (description, test on an object's ``object_kinds``). The three area
#: groups partition the objects, and so do the two piece groups and the two fill groups.
KIND_GROUPS: dict[str, tuple[str, Callable[[dict[str, float]], bool]]] = {
    "area_lt_400": ("fewer than 400 px", lambda k: k["area"] < 400),
    "area_400_2000": ("400 to 1,999 px", lambda k: 400 <= k["area"] < 2000),
    "area_ge_2000": ("2,000 px or more", lambda k: k["area"] >= 2000),
    "one_piece": ("one connected piece", lambda k: k["pieces"] == 1),
    "several_pieces": ("several pieces (split by occlusion)", lambda k: k["pieces"] > 1),
    "fill_lt_0.4": ("fills < 40 % of its tight box", lambda k: k["box_fill"] < 0.4),
    "fill_ge_0.4": ("fills >= 40 % of its tight box", lambda k: k["box_fill"] >= 0.4),
}


def object_kinds(mask: np.ndarray) -> dict[str, float]:
    """What makes an object easy or hard to segment from its box: ``area`` (pixels), ``pieces`` (8-connected
    components) and ``box_fill`` (area / area of its tight box, both ends of the box inclusive)."""
    mask = np.asarray(mask, dtype=bool)
    x0, y0, x1, y1 = box_from_mask(mask)
    area = int(mask.sum())
    _, pieces = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    return {"area": area, "pieces": int(pieces), "box_fill": area / float((x1 - x0 + 1) * (y1 - y0 + 1))}


def box_by_kind(box_ious: list[float], kinds: list[dict[str, float]]) -> dict[str, dict[str, float | int | str]]:
    """The one-box mIoU of each ``KIND_GROUPS`` group (groups with no object are left out)."""
    out: dict[str, dict[str, float | int | str]] = {}
    for name, (description, member) in KIND_GROUPS.items():
        ious = [value for value, kind in zip(box_ious, kinds) if member(kind)]
        if ious:
            out[name] = {"objects": len(ious), "box_miou": float(np.mean(ious)), "what": description}
    return out


def evaluate_set(predictor: Predictor, images: list[InstanceImage], min_area: int) -> dict[str, object]:
    box_best, box_precision, box_recall, point_ious, point_best = [], [], [], [], []
    box_ious_at: dict[float, list[float]] = {offset: [] for offset in BOX_THRESHOLD_OFFSETS}
    box_ious = box_ious_at[0.0]
    kinds: list[dict[str, float]] = []
    iou_head_errors: list[float] = []
    for item in images:
        predictor.set_image(item.image)
        for mask in object_masks(item.labels, min_area=min_area):
            kinds.append(object_kinds(mask))
            box = box_from_mask(mask)
            logits, _, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
            threshold = predictor.model.mask_threshold
            for offset in BOX_THRESHOLD_OFFSETS:
                box_ious_at[offset].append(iou((logits[0] > threshold + offset).astype(np.float32), mask))
            predicted = logits[0] > threshold
            hits = int(np.count_nonzero(predicted & mask))
            box_precision.append(hits / max(int(np.count_nonzero(predicted)), 1))
            box_recall.append(hits / int(np.count_nonzero(mask)))
            masks, _, _ = predictor.predict(box=box, multimask_output=True)
            box_best.append(max(iou(candidate.astype(np.float32), mask) for candidate in masks))
            masks, scores, _ = predictor.predict(
                point_coords=centre_point(mask), point_labels=np.array([1]), multimask_output=True
            )
            ious = [iou(candidate.astype(np.float32), mask) for candidate in masks]
            point_ious.append(ious[int(np.argmax(scores))])
            point_best.append(max(ious))
            iou_head_errors.extend(abs(float(score) - value) for score, value in zip(scores, ious))
    return {
        "objects": len(box_ious),
        "box_miou": float(np.mean(box_ious)),
        "point_miou": float(np.mean(point_ious)),
        "point_best_of_3_miou": float(np.mean(point_best)),
        "point_iou_head_error": float(np.mean(iou_head_errors)),
        "box_best_of_3_miou": float(np.mean(box_best)),
        "box_by_kind": box_by_kind(box_ious, kinds),
        "box_precision": float(np.mean(box_precision)),
        "box_recall": float(np.mean(box_recall)),
        "box_miou_by_logit_threshold": {f"{t:g}": float(np.mean(v)) for t, v in box_ious_at.items()},
    }


def choose_checkpoint(figures: dict[str, dict[str, float | int | str]]) -> str:
    """The candidate with the highest validation one-box mIoU; one-point mIoU breaks a tie."""
    if not figures:
        raise ValueError("no candidate checkpoints to choose from")
    return max(figures, key=lambda name: (figures[name]["box_miou"], figures[name]["point_miou"]))


def validation_choice(candidates: list[Path], images: int, min_area: int) -> dict[str, object]:
    """Each candidate's one-box / one-point mIoU on the validation scenes, and the chosen one."""
    scenes = synthetic_validation(images)
    if not any(object_masks(scene.labels, min_area=min_area) for scene in scenes):
        raise ValueError(f"the {images} validation scene(s) hold no object of >= {min_area} px: use more images")
    figures: dict[str, dict[str, float | int | str]] = {}
    for path in candidates:
        sam = load_sam("tiny", path)
        result = evaluate_set(Predictor(sam, cache_size=2), scenes, min_area)
        name = _shown(path)
        figures[name] = {
            "objects": result["objects"],
            "box_miou": result["box_miou"],
            "point_miou": result["point_miou"],
            "fingerprint": model_fingerprint(sam),
        }
        print(f"validation  {name}: box {result['box_miou']:.4f}  point {result['point_miou']:.4f}", flush=True)
    chosen = choose_checkpoint(figures)
    print(f"chosen: {chosen}", flush=True)
    return {
        "set": "synthetic_validation",
        "images": images,
        "min_area": min_area,
        "rule": "highest one-box mIoU, one-point mIoU breaking a tie",
        "candidates": figures,
        "chosen": chosen,
    }


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_TINY_CHECKPOINT)
    parser.add_argument("--images", type=int, default=40, help="held-out (and validation) synthetic scenes")
    parser.add_argument("--min-area", type=int, default=100)
    parser.add_argument(
        "--choose", type=Path, nargs="+", metavar="CKPT", help="choose among these on the validation scenes"
    )
    parser.add_argument("--write-card", action="store_true", help=f"write the figures to {CARD_PATH.name}")
    args = parser.parse_args()

    torch.manual_seed(0)
    choice = validation_choice(args.choose, args.images, args.min_area) if args.choose else None
    if choice is not None and not args.write_card:
        print(json.dumps(choice, indent=2))
        return 0
    sam = load_sam("tiny", args.checkpoint)
    predictor = Predictor(sam, cache_size=2)
    start = time.time()
    results = {
        "checkpoint": _shown(args.checkpoint),
        "synthetic_heldout": evaluate_set(predictor, synthetic_heldout(args.images), args.min_area),
        "synthetic_heldout_all_sizes": evaluate_set(predictor, synthetic_heldout(args.images), 24),
        "coins": evaluate_set(predictor, [coins_instances()], 100),
        "settings": {"images": args.images, "min_area": args.min_area},
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
        "eval_seconds": round(time.time() - start, 1),
    }
    if choice is not None:
        chosen = choice["candidates"][choice["chosen"]]
        choice["checkpoint_is_chosen"] = model_fingerprint(sam) == chosen["fingerprint"]
        results["checkpoint_choice"] = choice
    print(json.dumps(results, indent=2))
    if args.write_card:
        CARD_PATH.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {CARD_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
