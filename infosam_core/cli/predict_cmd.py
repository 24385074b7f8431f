"""`infosam predict`: segment one object in one image from point and/or box prompts, write a mask PNG.

    infosam predict cells.tif --point 120,80 --point 10,10,0 --out cell.png
    infosam predict photo.jpg --model vit_b --checkpoint sam_vit_b_01ec64.pth --box 30,40,200,180 --out m.png
    infosam predict cells.tif --model sam2.1_hiera_tiny --checkpoint sam2.1_hiera_tiny.pt \
        --adapter runs/mine/adapter --box 30,40,200,180 --out m.png
    infosam predict photo.jpg --model vit_b --checkpoint sam_hq_vit_b.pth --box 30,40,200,180 --out m.png  # HQ-SAM

The mask is written atomically as an 8-bit PNG (0 background, 255 object) of the image's size, and the
model's predicted quality score is printed. Stacks (``--slice K``, ``--propagate``): see ``cli/stack_cli.py``.

An image larger than the model's input side (256 px for the bundled tiny model, 1024 px for SAM) is tiled
(``--tile-shape``, ``--halo``; ``--tile-shape 0``: off): the prompts are answered from the tile that holds them,
at the image's native resolution (a box larger than a tile: a grown tile, or a downscaled view).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from infosam_core.cli import CLIError, add_model_argument
from infosam_core.cli.common import (
    add_device_argument,
    add_embeddings_argument,
    add_precision_argument,
    check_device,
    check_precision,
    open_embedding_store,
)
from infosam_core.cli.stack_cli import add_predict_stack_arguments, run_predict_stack, wants_stack
from infosam_core.cli.tiling_options import add_tiling_arguments, check_tiling_values, load_input, tiling_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment one object from point/box prompts and write a mask PNG",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "image", type=Path, help="image file (PNG, JPEG, TIFF incl. 16-bit and tiled OME-TIFF, ...) or zarr / OME-Zarr"
    )
    add_model_argument(parser)
    parser.add_argument("--checkpoint", type=Path, help="weights file (.pth or .safetensors) for --model")
    parser.add_argument("--adapter", type=Path, help="adapter saved by `infosam train` or the app (for --model)")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="X,Y[,LABEL]",
        help="a point prompt in pixels; LABEL 1 = object (default), 0 = background. Repeat for more points.",
    )
    parser.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box prompt in pixels")
    parser.add_argument(
        "--multimask",
        action="store_true",
        help="let SAM propose 3 masks and keep the best-scored one (good for a single ambiguous click)",
    )
    parser.add_argument(
        "--hq-token-only",
        action="store_true",
        help="HQ-SAM models (a sam-hq checkpoint such as sam_hq_vit_b.pth, or an hq_sam adapter): the HQ token's mask alone, as sam-hq's "
        "hq_token_only=True (default: SAM's mask + the HQ mask, sam-hq's default)",
    )
    add_tiling_arguments(parser)
    add_device_argument(parser)
    add_precision_argument(parser)
    add_embeddings_argument(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="MASK.png", help="where to write the mask")
    add_predict_stack_arguments(parser)  # --slice, --propagate, --axes ... (z-stacks and time series)
    parser.set_defaults(func=run)


def parse_point(text: str) -> tuple[float, float, int]:
    """'X,Y' or 'X,Y,LABEL' -> (x, y, label)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or not np.isfinite(values).all():
        raise CLIError(f"--point {text!r}: expected X,Y or X,Y,LABEL (numbers), e.g. --point 120,80")
    label = 1 if len(values) == 2 else values[2]
    if label not in (0, 1):
        raise CLIError(f"--point {text!r}: LABEL must be 1 (object) or 0 (background)")
    return values[0], values[1], int(label)


def parse_box(text: str) -> np.ndarray:
    """'X0,Y0,X1,Y1' -> (4,) float."""
    try:
        values = np.array([float(p) for p in text.split(",")])
    except ValueError:
        values = np.array([])
    if values.shape != (4,) or not np.isfinite(values).all():
        raise CLIError(f"--box {text!r}: expected 4 numbers X0,Y0,X1,Y1, e.g. --box 30,40,200,180")
    if values[2] < values[0] or values[3] < values[1]:
        raise CLIError(f"--box {text!r}: X1 must be >= X0 and Y1 >= Y0 (top-left corner first)")
    return values


def run(args: argparse.Namespace) -> int:
    check_device(args.device)
    check_precision(args.precision, args.device)
    if wants_stack(args):
        box = parse_box(args.box) if args.box is not None else None
        return run_predict_stack(args, [parse_point(p) for p in args.point], box)
    store = open_embedding_store(args.embeddings)
    if not args.point and args.box is None:
        raise CLIError("give a prompt: --point X,Y (repeatable) and/or --box X0,Y0,X1,Y1")
    if args.out.suffix.lower() != ".png":
        raise CLIError(f"--out {args.out}: the mask is written as PNG; use a .png file name")
    points = [parse_point(p) for p in args.point]
    box = parse_box(args.box) if args.box is not None else None
    check_tiling_values(args)
    # the model's modules (torch) only once the arguments are known good: a refusal above stays fast
    from infosam_core.adapter_files.loading import load_model_with_adapter
    from infosam_core.inference.predictor import Predictor, box_outside_image
    from infosam_core.io.atomic import atomic_path
    from infosam_core.io.images import ImageError

    try:
        sam = load_model_with_adapter(args.model, args.checkpoint, args.adapter, args.device)
    except ValueError as exc:  # CheckpointError, PeftCheckpointError, ModelDeviceError: one line each
        raise CLIError(str(exc)) from None
    tiling = tiling_from_args(args, sam)
    try:
        image = load_input(args.image, tiling)  # a lazy region source when it is tiled and a zarr / TIFF
    except ImageError as exc:
        raise CLIError(str(exc)) from None
    height, width = image.shape[:2]
    for x, y, _ in points:
        if not (0 <= x < width and 0 <= y < height):
            raise CLIError(f"--point {x:g},{y:g} lies outside the {width}x{height} image")
    if box is not None and box_outside_image(box, width, height):
        raise CLIError(f"--box {args.box} reaches outside the {width}x{height} image (0..{width}, 0..{height})")

    if args.hq_token_only:
        if not hasattr(sam.mask_decoder, "hq_token_only"):
            raise CLIError(
                f"--hq-token-only needs an HQ-SAM model (a sam-hq checkpoint such as sam_hq_vit_b.pth, or an hq_sam "
                "adapter); "
                f"{args.checkpoint or args.model} has SAM's plain decoder"
            )
        sam.mask_decoder.hq_token_only = True
    coords = np.array([p[:2] for p in points], dtype=np.float64) if points else None
    labels = np.array([p[2] for p in points], dtype=np.int64) if points else None
    if tiling is not None and tiling.needs_tiling((height, width)):
        from infosam_core.inference.tiling_predictor import TiledPredictor

        tiled = TiledPredictor(Predictor(sam, cache_size=0, precision=args.precision, embedding_store=store), tiling)
        tiled.set_image(image)
        region = tiled.predict_region(coords, labels, box, multimask_output=args.multimask)
        scores, best = region.scores, int(np.argmax(region.scores))
        y0, x0, y1, x1 = region.window
        mask = np.zeros((height, width), dtype=np.uint8)  # the only image-sized array: the mask written
        mask[y0:y1, x0:x1] = region.masks[best].astype(np.uint8) * 255
    else:
        predictor = Predictor(sam, cache_size=0, precision=args.precision, embedding_store=store)
        predictor.set_image(image)
        masks, scores, _ = predictor.predict(coords, labels, box, multimask_output=args.multimask)
        best = int(np.argmax(scores))
        mask = masks[best].astype(np.uint8) * 255

    import imageio.v3 as iio

    try:
        with atomic_path(args.out) as tmp:
            iio.imwrite(tmp, mask, extension=".png")
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write the mask ({exc.strerror or exc})") from None
    print(f"score {float(scores[best]):.3f}  {int(np.count_nonzero(mask))} px  -> {args.out}")
    return 0
