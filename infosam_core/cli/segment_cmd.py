"""`infosam segment`: segment every object of many images automatically (SAM's grid of point prompts).

    infosam segment cells/ --out labels/
    infosam segment a.png b.png --adapter project/adapters/run1/adapter --format png --out labels/
    infosam segment images/ --truth masks/ --out labels/     # also prints F1 at IoU 0.5

Writes ``<stem>_labels.<fmt>`` per image (0 background, 1..N objects, the image's size) and one COCO file
``coco.json`` (RLE masks) for the set. Each label image is written last and atomically, so a re-run skips
the images already done (a label file there that cannot be read is made again). Label files in ``--out``
are never taken as input images, so ``--out`` may be an input folder. An image larger than the model's input side
(256 px for the bundled tiny model, 1024 px for SAM) is segmented tile by tile at native resolution and stitched
(``--tile-shape``, ``--halo``; ``--tile-shape 0``: off); objects crossing a seam get one label. ``--truth`` takes a folder of ground-truth masks named like the images (a binary
mask is split into objects by connected components; a label image is used as is) and prints instance F1
at IoU 0.5. Stacks (multi-page TIFF, zarr, ``--stack``): one 3D label TIFF each, see ``cli/stack_cli.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.cli import CLIError, add_model_argument
from infosam_core.cli.common import (
    add_device_argument,
    add_embeddings_argument,
    add_precision_argument,
    check_device,
    check_out_dir,
    check_precision,
    open_embedding_store,
)
from infosam_core.cli.stack_cli import add_segment_stack_arguments, run_segment_stacks, stack_inputs
from infosam_core.cli.tiling_options import add_tiling_arguments, check_tiling_values, load_input, tiling_from_args
from infosam_core.io.paths import paths_by_stem

FORMATS = ("tif", "png", "zarr")


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
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="tif",
        help="label image format (default: tif); zarr: an OME-Zarr label group per image (large images)",
    )
    parser.add_argument("--truth", type=Path, help="folder of ground-truth masks named like the images: print F1")
    add_tiling_arguments(parser)
    parser.add_argument(
        "--scheduler",
        metavar="local|ADDRESS",
        help="segment the tiles of large images on Dask: 'local' starts a LocalCluster of --workers processes, "
        "an address (tcp://host:8786) joins an existing cluster; each worker loads the model once",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes of --scheduler local (default 2)")
    add_device_argument(parser)
    add_segment_stack_arguments(parser)  # --stack, --link-iou, --axes (z-stacks and time series)
    add_precision_argument(parser)
    add_embeddings_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_device(args.device)
    check_precision(args.precision, args.device)
    check_tiling_values(args)
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    # the model's modules (torch) only once the arguments are known good: a refusal above stays fast
    from infosam_core.adapter_files.loading import load_model_with_adapter
    from infosam_core.annotation.export import coco_from_label_images, read_label_image, write_label_image
    from infosam_core.annotation.project import find_images
    from infosam_core.annotation.records import ProjectError
    from infosam_core.inference.automatic import AutomaticConfig, segment_all
    from infosam_core.inference.predictor import Predictor
    from infosam_core.inference.tiling_segment import segment_all_tiled
    from infosam_core.io.atomic import write_json_atomic
    from infosam_core.io.images import ImageError
    from infosam_core.io.large_images import is_zarr_path, read_labels_zarr, write_labels_zarr

    store = open_embedding_store(args.embeddings)
    check_out_dir(args.out)
    stacks = stack_inputs(args)
    if stacks is not None:
        return run_segment_stacks(args, stacks)
    stores = [Path(p).resolve() for p in args.inputs if is_zarr_path(p)]  # zarr / OME-Zarr: one image each
    try:
        images = find_images([p for p in args.inputs if not is_zarr_path(p)]) + stores
    except ProjectError as exc:
        raise CLIError(str(exc)) from None
    out_folder = args.out.resolve()
    images = [path for path in images if not _is_label_file(path, out_folder)]  # this command's own output
    if not images:
        raise CLIError(f"no images found in {', '.join(map(str, args.inputs))} (.png, .jpg, .tif, .bmp)")
    _, clash = paths_by_stem(images)
    if clash is not None:
        path, first = clash
        raise CLIError(
            f"{path} and {first} share the name {path.stem!r}: their label files would collide; "
            "segment them into different --out folders"
        )
    truth = _truth_files(args.truth, images) if args.truth is not None else None
    if truth is not None:
        _check_truth_sizes(truth)
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
    labels: dict[Path, Any] = {}
    for path in images:  # a re-run: the label images already made; one that cannot be read is made again
        if label_paths[path].exists():
            try:
                label_path = label_paths[path]
                labels[path] = (
                    read_labels_zarr(label_path) if is_zarr_path(label_path) else read_label_image(label_path)
                )
            except Exception as exc:  # noqa: BLE001 - whatever the reader's complaint: segment the image again
                print(f"{label_paths[path]}: unreadable ({type(exc).__name__}): segmenting again", file=sys.stderr)
    todo = [path for path in images if path not in labels]
    if len(todo) < len(images):
        print(f"{len(images) - len(todo)} of {len(images)} images already segmented in {args.out}: skipped")
    tiling = tiling_from_args(args, sam)
    predictor = Predictor(sam, cache_size=1, precision=args.precision, embedding_store=store)
    client = _dask_client(args) if args.scheduler and todo else None
    failed = []
    for number, path in enumerate(todo, start=1):  # one line per image on stderr (progress, also when piped)
        started = time.perf_counter()
        try:
            image = load_input(path, tiling)  # a lazy region source when it is tiled and a zarr / TIFF
        except ImageError as exc:
            failed.append(str(exc))  # one line with the reason, at once: the run goes on with the others
            print(f"segment [{number}/{len(todo)}] {path.name}: skipped: {exc}", file=sys.stderr, flush=True)
            continue
        height, width = image.shape[:2]
        print(f"segment [{number}/{len(todo)}] {path.name} ({width} x {height}) ...", file=sys.stderr, flush=True)
        if tiling is not None and tiling.needs_tiling(image.shape[:2]) and client is not None:
            from infosam_core.inference.tiling_dask import ModelSpec, segment_all_tiled_dask

            spec = ModelSpec(args.model, _text(args.checkpoint), _text(args.adapter), args.device)
            labels[path] = segment_all_tiled_dask(client, spec, image, config, tiling).labels
        elif tiling is not None and tiling.needs_tiling(image.shape[:2]):
            labels[path] = segment_all_tiled(predictor, image, config, tiling).labels
        else:
            labels[path] = segment_all(predictor, image, config).labels()
        if args.format == "zarr":
            write_labels_zarr(label_paths[path], labels[path])
        else:
            write_label_image(label_paths[path], labels[path])
        n_found = len(set(np.unique(labels[path]).tolist()) - {0})
        print(
            f"segment [{number}/{len(todo)}] {path.name}: {n_found} objects in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    if client is not None:
        client.close()
    done = [path for path in images if path in labels]
    coco = coco_from_label_images((path.name, labels[path], None) for path in done)
    write_json_atomic(args.out / "coco.json", coco)
    n_objects = len(coco["annotations"])
    unread = f"; {len(failed)} not readable, skipped (named above)" if failed else ""
    print(f"{len(done)} images, {n_objects} objects -> {args.out} ({args.format} label images + coco.json){unread}")
    if truth is not None:
        from infosam_core.evaluation.instances import InstanceScore, load_instances, match_instances

        total = InstanceScore(0, 0, 0)
        for path in done:
            try:
                total = total + match_instances(labels[path], load_instances(truth[path]))
            except ValueError as exc:  # ImageError, or sizes that differ (a header the size check could not read)
                raise CLIError(f"--truth {truth[path]}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        print(
            f"F1@0.5 {total.f1:.3f}  precision {total.precision:.3f}  recall {total.recall:.3f}  "
            f"({total.true_positives} matched, {total.false_positives} extra, {total.false_negatives} missed)"
        )
    return 1 if failed else 0


def _text(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


def _dask_client(args: argparse.Namespace) -> Any:
    """The Dask client ``--scheduler`` asks for (CLIError when it cannot be reached or started)."""
    from infosam_core.inference.tiling_dask import connect

    try:
        return connect(args.scheduler, args.workers)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CLIError(f"--scheduler {args.scheduler}: cannot reach or start a Dask scheduler ({exc})") from None


def _is_label_file(path: Path, out_folder: Path) -> bool:
    """A label image this command wrote (``<stem>_labels.<fmt>`` in ``--out``): never an input."""
    return path.parent == out_folder and any(path.name.endswith(f"_labels.{fmt}") for fmt in FORMATS)


def _check_truth_sizes(truth: dict[Path, Path]) -> None:
    """Every ground-truth mask has its image's size (from the files' headers), before any segmenting."""
    from infosam_core.io.images import ImageError, image_size
    from infosam_core.io.large_images import is_zarr_path

    for image, mask in truth.items():
        if is_zarr_path(image):  # a zarr store's size: checked when its labels are compared
            continue
        try:
            want, got = image_size(image), image_size(mask)
        except ImageError as exc:
            raise CLIError(str(exc)) from None
        if want is not None and got is not None and want != got:
            raise CLIError(
                f"--truth {mask}: the mask is {got[0]} x {got[1]} but {image.name} is {want[0]} x {want[1]} "
                "(height x width); give the masks of these images"
            )


def _truth_files(folder: Path, images: list[Path]) -> dict[Path, Path]:
    """The ground-truth file for every image (same stem, any image suffix); CLIError naming those missing."""
    if not folder.is_dir():
        raise CLIError(f"--truth {folder}: not a folder")
    by_stem = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    missing = [image.name for image in images if image.stem not in by_stem]
    if missing:
        raise CLIError(f"--truth {folder}: no mask for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return {image: by_stem[image.stem] for image in images}
