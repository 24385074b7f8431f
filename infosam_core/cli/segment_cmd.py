"""`infosam segment`: segment every object of many images automatically (SAM's grid of point prompts).

    infosam segment cells/ --out labels/
    infosam segment a.png b.png --adapter project/adapters/run1/adapter --format png --out labels/
    infosam segment images/ --truth masks/ --out labels/     # also prints F1 at IoU 0.5

Writes ``<stem>_labels.<fmt>`` per image (0 background, 1..N objects, the image's size) and one COCO file
``coco.json`` (RLE masks) for the set. Each label image is written last and atomically, so a re-run skips
the images already done. ``--truth`` takes a folder of ground-truth masks named like the images (a binary
mask is split into objects by connected components; a label image is used as is) and prints instance F1
at IoU 0.5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infosam_core.cli import CLIError, add_model_argument
from infosam_core.cli.common import add_device_argument, check_device

FORMATS = ("tif", "png")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment all objects of images or folders automatically; label images + COCO",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER", help="images and/or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_model_argument(parser)
    parser.add_argument("--checkpoint", type=Path, help="weights file (.pth or .safetensors) for --model")
    parser.add_argument("--adapter", type=Path, help="adapter saved by `infosam train` or the app")
    parser.add_argument("--points-per-side", type=int, help="grid of N x N point prompts (default: 16 tiny, 32 SAM)")
    parser.add_argument("--pred-iou-thresh", type=float, help="keep masks with predicted IoU above this")
    parser.add_argument("--stability-thresh", type=float, help="keep masks with stability score at least this")
    parser.add_argument("--format", choices=FORMATS, default="tif", help="label image format (default: tif)")
    parser.add_argument("--truth", type=Path, help="folder of ground-truth masks named like the images: print F1")
    add_device_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from infosam_core.adapter_files.loading import load_model_with_adapter
    from infosam_core.annotation.export import coco_from_label_images, read_label_image, write_label_image
    from infosam_core.annotation.project import find_images
    from infosam_core.annotation.records import ProjectError
    from infosam_core.inference.automatic import AutomaticConfig, segment_all
    from infosam_core.inference.predictor import Predictor
    from infosam_core.io.atomic import write_json_atomic
    from infosam_core.io.images import ImageError, load_rgb

    check_device(args.device)
    try:
        images = find_images(args.inputs)
    except ProjectError as exc:
        raise CLIError(str(exc)) from None
    if not images:
        raise CLIError(f"no images found in {', '.join(map(str, args.inputs))} (.png, .jpg, .tif, .bmp)")
    by_stem: dict[str, Path] = {}
    for path in images:
        if path.stem in by_stem:
            raise CLIError(
                f"{path} and {by_stem[path.stem]} share the name {path.stem!r}: their label files would collide; "
                "segment them into different --out folders"
            )
        by_stem[path.stem] = path
    truth = _truth_files(args.truth, images) if args.truth is not None else None
    overrides = {
        key: value
        for key, value in (
            ("points_per_side", args.points_per_side),
            ("pred_iou_thresh", args.pred_iou_thresh),
            ("stability_score_thresh", args.stability_thresh),
        )
        if value is not None
    }
    try:
        config = AutomaticConfig.for_model(args.model, **overrides)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    try:
        sam = load_model_with_adapter(args.model, args.checkpoint, args.adapter, args.device)
    except ValueError as exc:  # CheckpointError, PeftCheckpointError, ModelDeviceError: one line each
        raise CLIError(str(exc)) from None

    args.out.mkdir(parents=True, exist_ok=True)
    label_paths = {path: args.out / f"{path.stem}_labels.{args.format}" for path in images}
    todo = [path for path in images if not label_paths[path].exists()]
    if len(todo) < len(images):
        print(f"{len(images) - len(todo)} of {len(images)} images already segmented in {args.out}: skipped")
    predictor = Predictor(sam, cache_size=1)
    failed = []
    for path in tqdm(todo, desc="segment", unit="image", disable=None):
        try:
            image = load_rgb(path)
        except ImageError as exc:
            failed.append(str(exc))
            continue
        result = segment_all(predictor, image, config)
        write_label_image(label_paths[path], result.labels())

    done = [path for path in images if label_paths[path].exists()]
    labels = {path: read_label_image(label_paths[path]) for path in done}
    coco = coco_from_label_images((path.name, labels[path], None) for path in done)
    write_json_atomic(args.out / "coco.json", coco)
    n_objects = len(coco["annotations"])
    print(f"{len(done)} images, {n_objects} objects -> {args.out} ({args.format} label images + coco.json)")
    if truth is not None:
        from infosam_core.evaluation.instances import InstanceScore, load_instances, match_instances

        total = InstanceScore(0, 0, 0)
        for path in done:
            total = total + match_instances(labels[path], load_instances(truth[path]))
        print(
            f"F1@0.5 {total.f1:.3f}  precision {total.precision:.3f}  recall {total.recall:.3f}  "
            f"({total.true_positives} matched, {total.false_positives} extra, {total.false_negatives} missed)"
        )
    for message in failed:
        print(f"skipped: {message}", file=sys.stderr)
    return 1 if failed else 0


def _truth_files(folder: Path, images: list[Path]) -> dict[Path, Path]:
    """The ground-truth file for every image (same stem, any image suffix); CLIError naming those missing."""
    if not folder.is_dir():
        raise CLIError(f"--truth {folder}: not a folder")
    by_stem = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    missing = [image.name for image in images if image.stem not in by_stem]
    if missing:
        raise CLIError(f"--truth {folder}: no mask for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return {image: by_stem[image.stem] for image in images}
