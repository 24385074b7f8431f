"""`infosam eval`: prompted evaluation of SAM (optionally with an adapter) on a dataset.

    infosam eval --data my_dataset --prompt box --out runs/base_eval
    infosam eval --data my_dataset --adapter runs/mine/adapter --prompt box --out runs/mine/eval

One seeded prompt per image (box: a jittered box, the paper's protocol; point; points5: 2 foreground +
3 background points). Prints the mean of each metric and writes ``<out>/metrics.csv`` (per image + mean)
and ``<out>/metrics.json``.

Images larger than one tile with its halo (``--tile-shape`` / ``--halo``, as ``predict`` and ``train``) are
evaluated as ``infosam train`` trains on them and tiled prediction answers them: each object (connected
component of the mask) in its native-resolution tile window, one row per object. ``--tile-shape 0``
evaluates whole images resized to the model's input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infosam_core.cli import CLIError, add_model_argument, defer_arguments
from infosam_core.cli.common import (
    add_device_argument,
    add_precision_argument,
    check_device,
    check_out_dir,
    check_precision,
)
from infosam_core.cli.tiling_options import add_tiling_arguments, check_tiling_values, tiling_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate SAM (+ adapter) on a dataset with seeded prompts", description=__doc__.split("\n\n")[0]
    )
    defer_arguments(parser, _add_arguments)  # the prompt protocols and metrics import torch and sklearn
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from infosam_core.data.prompt_sampling import PROTOCOLS
    from infosam_core.evaluation.metrics import METRICS

    parser.add_argument(
        "--data", type=Path, required=True, help="dataset: folder with images/ + masks/, or a CSV image,label"
    )
    add_model_argument(parser)
    parser.add_argument("--checkpoint", type=Path, help="weights file for --model")
    parser.add_argument("--adapter", type=Path, help="adapter saved by `infosam train` (.json/.safetensors pair)")
    parser.add_argument("--prompt", choices=PROTOCOLS, default="box", help="prompt protocol (default: box)")
    parser.add_argument("--metrics", nargs="+", choices=list(METRICS), help="metrics to compute (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="prompt seed (default 0)")
    add_device_argument(parser)
    add_precision_argument(parser)
    add_tiling_arguments(parser)  # images larger than a tile: each object in its native-resolution window
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from infosam_core.adapter_files.loading import check_adapter_file, load_model_with_adapter
    from infosam_core.data.datasets import load_folder_dataset
    from infosam_core.evaluation.prompted import evaluate, save_eval
    from infosam_core.inference.tiling_crops import object_crops

    check_tiling_values(args)
    check_device(args.device)
    check_precision(args.precision, args.device)
    check_out_dir(args.out)
    try:
        if args.adapter:
            check_adapter_file(args.adapter, args.model, args.checkpoint)  # reported before the data is read
        samples = load_folder_dataset(args.data)
        sam = load_model_with_adapter(args.model, args.checkpoint, args.adapter, args.device)
        tiling = tiling_from_args(args, sam)
    except ValueError as exc:  # DatasetError, CheckpointError, PeftCheckpointError, ModelDeviceError
        raise CLIError(str(exc)) from None

    if tiling is not None:
        n_images = len(samples)
        large = sum(tiling.needs_tiling(sample.image.shape[:2]) for sample in samples)
        samples = object_crops(samples, tiling)
        if large:
            print(
                f"{large} of {n_images} images larger than a tile ({tiling.tile_shape[0]} + halo {tiling.halo[0]}): "
                f"evaluated per object in native-resolution windows, {len(samples)} samples "
                "(--tile-shape 0 evaluates whole images)"
            )

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    result = evaluate(
        sam,
        samples,
        prompt=args.prompt,
        seed=args.seed,
        metrics=args.metrics,
        progress=progress,
        precision=args.precision,
    )
    name = f"SAM {args.model}" + (f" + {args.adapter}" if args.adapter else "")
    print(name)
    print(result.table())
    try:
        csv_path, json_path = save_eval(result, args.out)
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write the results ({exc.strerror or exc})") from None
    print(f"per-image metrics -> {csv_path}; summary -> {json_path}")
    return 0
