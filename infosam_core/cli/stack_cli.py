"""Stack options of ``infosam predict`` and ``infosam segment`` (z-stacks and time series), and what they run.

    infosam predict stack.tif --slice 16 --box 30,40,90,100 --propagate --out mask.tif    # 3D mask (N, Y, X)
    infosam predict series.ome.tif --slice 0 --point 50,60 --propagate --out track.zarr
    infosam predict plain.tif --axes TYX --slice 3 --box ... --propagate --out m.tif      # axes not in the file
    infosam segment stack.tif --out labels/          # labels/stack_labels.tif: every object, linked by overlap
    infosam segment slices/ --stack --axes ZYX --out labels/   # a folder of numbered slices is one stack

A TIFF is taken as a stack when its metadata names a Z or T axis with several planes, or when it has more planes
than a 2-D image can (see ``infosam_core.io.stacks.is_stack_file``); a ``.zarr`` always; a folder with
``--stack``. Masks and label volumes have the stack's (N, Y, X) shape and are written atomically as TIFF or zarr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.cli import CLIError

STACK_OUT_SUFFIXES = (".tif", ".tiff", ".zarr")


# ----------------------------------------------------------------------------------------------- options
def add_predict_stack_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("z-stacks and time series")
    group.add_argument("--slice", type=int, metavar="K", help="the prompts are on slice (or frame) K of a stack")
    group.add_argument(
        "--propagate",
        action="store_true",
        help="follow the object through the stack from --slice (SAM2: its video memory; other models: projection "
        "slice to slice) and write the 3D mask (--out .tif or .zarr)",
    )
    group.add_argument(
        "--direction",
        choices=("both", "forward", "backward"),
        default="both",
        help="propagate which way (default both)",
    )
    group.add_argument(
        "--iou-threshold", type=float, help="projection stops where the predicted IoU falls below this (default 0.7)"
    )
    group.add_argument(
        "--overlap-threshold",
        type=float,
        help="projection stops where a slice's mask overlaps the previous one less than this (IoU, default 0.3)",
    )
    _add_axes(group)


def add_segment_stack_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("z-stacks and time series")
    group.add_argument(
        "--stack",
        action="store_true",
        help="every input is one stack (a folder is a stack of numbered slices); multi-page TIFFs are found anyway",
    )
    group.add_argument(
        "--link-iou",
        type=float,
        default=0.3,
        help="objects of neighbouring slices with at least this IoU get one id (default 0.3)",
    )
    _add_axes(group)


def _add_axes(group: Any) -> None:
    group.add_argument(
        "--axes",
        metavar="AXES",
        help="the stack's axes where the file does not name them, one letter per dimension: ZYX, TYX, ZCYX, TYXC ...",
    )


# ---------------------------------------------------------------------------------------------- predict
def wants_stack(args: argparse.Namespace) -> bool:
    """`infosam predict` on a stack: --slice / --propagate / --axes given, or a stack source."""
    from infosam_core.io.stacks import is_stack_file, is_stack_source

    if args.slice is not None or args.propagate or args.axes is not None:
        return True
    return is_stack_source(args.image) or is_stack_file(args.image)


def _open_stack(path: Path, axes: str | None) -> Any:
    from infosam_core.io.stacks import StackError, read_stack

    try:
        return read_stack(path, axes)
    except StackError as exc:
        raise CLIError(str(exc)) from None


def _check_out(out: Path, propagate: bool) -> None:
    suffix = out.suffix.lower()
    if suffix in STACK_OUT_SUFFIXES:
        return
    if suffix == ".png" and not propagate:
        return
    raise CLIError(f"--out {out}: a stack's mask is written as .tif or .zarr (a 2-D .png only without --propagate)")


def run_predict_stack(args: argparse.Namespace, points: list[tuple[float, float, int]], box: np.ndarray | None) -> int:
    """`infosam predict` on a stack, with the prompts ``predict_cmd`` parsed: (x, y, label) points and a box."""
    from infosam_core.adapter_files.loading import load_model_with_adapter
    from infosam_core.inference.predictor import Predictor, box_outside_image
    from infosam_core.inference.propagation import PropagationConfig, SlicePrompt, propagate
    from infosam_core.io.stacks import write_label_stack

    if not points and box is None:
        raise CLIError("give a prompt: --point X,Y (repeatable) and/or --box X0,Y0,X1,Y1")
    _check_out(args.out, args.propagate)
    stack = _open_stack(args.image, args.axes)
    if args.slice is None:
        raise CLIError(
            f"{args.image} is a stack of {stack.n_planes} {'frames' if stack.kind == 'T' else 'slices'}: say which one "
            "the prompts are on with --slice K (and add --propagate to follow the object through the stack)"
        )
    if not 0 <= args.slice < stack.n_planes:
        raise CLIError(f"--slice {args.slice}: the stack has {stack.n_planes} planes (0..{stack.n_planes - 1})")
    height, width = stack.plane_shape
    for x, y, _ in points:
        if not (0 <= x < width and 0 <= y < height):
            raise CLIError(f"--point {x:g},{y:g} lies outside the {width}x{height} slices")
    if box is not None and box_outside_image(box, width, height):
        raise CLIError(f"--box {args.box} reaches outside the {width}x{height} slices (0..{width}, 0..{height})")
    directions = ("forward", "backward") if args.direction == "both" else (args.direction,)
    overrides = {
        key: value
        for key, value in (("iou_threshold", args.iou_threshold), ("overlap_threshold", args.overlap_threshold))
        if value is not None
    }
    try:
        config = PropagationConfig(directions=directions, max_planes=None if args.propagate else 0, **overrides)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if stack.axes_guessed:
        print(
            f"{args.image}: axes not in the file: read as {stack.axes} (give --axes to say otherwise)", file=sys.stderr
        )
    try:
        sam = load_model_with_adapter(args.model, args.checkpoint, args.adapter, args.device)
    except ValueError as exc:  # CheckpointError, PeftCheckpointError, ModelDeviceError: one line each
        raise CLIError(str(exc)) from None
    prompt = SlicePrompt(
        np.array([p[:2] for p in points], dtype=np.float64) if points else None,
        np.array([p[2] for p in points], dtype=np.int64) if points else None,
        box,
    )
    result = propagate(
        Predictor(sam, cache_size=0, precision=getattr(args, "precision", "auto")), stack, args.slice, prompt, config
    )
    try:
        if args.out.suffix.lower() == ".png":
            import imageio.v3 as iio

            from infosam_core.io.atomic import atomic_path

            with atomic_path(args.out) as tmp:
                iio.imwrite(tmp, result.masks[args.slice].astype(np.uint8) * 255, extension=".png")
        else:
            write_label_stack(args.out, result.masks.astype(np.uint8) * 255, axes=stack.kind + "YX")
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write the mask ({exc.strerror or exc})") from None
    slices = result.slices
    span = f"slices {slices[0]}..{slices[-1]}" if slices else "no slice"
    stops = "; ".join(f"{d}: {why}" for d, why in result.stopped.items())
    print(
        f"{span} ({len(slices)} of {stack.n_planes}), {int(result.masks.sum())} voxels, "
        f"{result.seconds_per_slice:.2f} s per slice ({result.engine}){'  [' + stops + ']' if stops else ''} -> {args.out}"
    )
    return 0


# ---------------------------------------------------------------------------------------------- segment
def stack_inputs(args: argparse.Namespace) -> list[Path] | None:
    """The stacks `infosam segment` was given (None: plain images, the 2-D path). CLIError for a mix."""
    from infosam_core.io.stacks import is_stack_file, is_stack_source

    inputs = [Path(p) for p in args.inputs]
    if args.stack:
        missing = [p for p in inputs if not p.exists()]
        if missing:
            raise CLIError(f"{missing[0]}: no such file or folder.")
        return inputs
    stacks = [p for p in inputs if (p.suffix.lower() == ".zarr" and is_stack_source(p)) or is_stack_file(p)]
    if not stacks:
        return None
    if len(stacks) != len(inputs):
        others = [str(p) for p in inputs if p not in stacks]
        raise CLIError(
            f"{stacks[0]} is a stack but {others[0]} is not: segment stacks and images in separate runs "
            "(or give --stack to read every input as a stack)"
        )
    return stacks


def run_segment_stacks(args: argparse.Namespace, stacks: list[Path]) -> int:
    from tqdm import tqdm

    from infosam_core.adapter_files.loading import load_model_with_adapter
    from infosam_core.inference.automatic import AutomaticConfig
    from infosam_core.inference.predictor import Predictor
    from infosam_core.inference.stack_segmentation import segment_stack
    from infosam_core.io.stacks import write_label_stack

    if args.truth is not None:
        raise CLIError("--truth compares 2-D images; it does not apply to stacks")
    if not 0.0 < args.link_iou <= 1.0:
        raise CLIError(f"--link-iou {args.link_iou}: must be within (0, 1]")
    suffix = ".tif"  # 3D labels: TIFF whatever --format says (PNG holds one plane)
    opened = [(path, _open_stack(path, args.axes)) for path in stacks]
    outputs = {path: args.out / f"{path.name.split('.')[0]}_labels{suffix}" for path, _ in opened}
    if len(set(outputs.values())) != len(outputs):
        raise CLIError("two stacks share a name: their label files would collide; segment them into different --out")
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
        sam = load_model_with_adapter(args.model, args.checkpoint, args.adapter, args.device)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    predictor = Predictor(sam, cache_size=1, precision=getattr(args, "precision", "auto"))
    args.out.mkdir(parents=True, exist_ok=True)
    for path, stack in opened:
        out = outputs[path]
        if out.exists():
            print(f"{out}: exists, skipped (delete it to segment {path.name} again)")
            continue
        with tqdm(total=stack.n_planes, desc=path.name, unit="slice", disable=None) as bar:
            labels = segment_stack(predictor, stack, config, args.link_iou, progress=_advance(bar))
        write_label_stack(out, labels, axes=stack.kind + "YX")
        objects = int(len(np.unique(labels[labels > 0])))
        print(f"{path.name}: {stack.n_planes} slices, {objects} objects linked through them -> {out}")
    return 0


def _advance(bar: Any) -> Callable[[int, int], None]:
    """A progress callback that moves a tqdm bar one step per slice."""

    def advance(_done: int, _total: int) -> None:
        bar.update(1)

    return advance
