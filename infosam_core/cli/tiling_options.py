"""``--tile-shape`` and ``--halo``: the tiling options ``infosam predict`` and ``infosam segment`` share.

Without ``--tile-shape`` an image larger than one tile with its halo (the model's input side: 256 px for the
bundled tiny model, 1024 px for SAM) is tiled with the model's defaults
(:meth:`~infosam_core.inference.tiling.TilingConfig.for_model`: tiny 192 + 2 x 32, SAM 768 + 2 x 128);
``--tile-shape 0`` turns tiling off (the image is shrunk whole to the model's input side, as before).
"""

from __future__ import annotations

import argparse
from typing import Any

from infosam_core.cli import CLIError


def add_tiling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tile-shape",
        metavar="N|H,W",
        help="tile size in pixels (micro-sam's tile_shape; default: from the model's input side, used only for "
        "images larger than one tile with its halo); 0 turns tiling off",
    )
    parser.add_argument(
        "--halo",
        metavar="N|H,W",
        help="context in pixels added on every side of a tile (default: 1/8 of the model's input side); "
        "make it larger than half the largest object",
    )


def tiling_from_args(args: argparse.Namespace, model: Any) -> Any:
    """The :class:`~infosam_core.inference.tiling.TilingConfig` the options ask for (None: tiling off)."""
    from infosam_core.inference.tiling import TilingConfig, parse_tile_shape

    default = TilingConfig.for_model(model)
    try:
        tile = parse_tile_shape(args.tile_shape) if args.tile_shape is not None else default.tile_shape
    except ValueError as exc:
        raise CLIError(f"--tile-shape {exc}") from None
    if tile == (0, 0):
        if args.halo is not None:
            raise CLIError("--halo needs tiling: leave out --tile-shape 0, or drop --halo")
        return None
    try:
        halo = parse_tile_shape(args.halo) if args.halo is not None else default.halo
    except ValueError as exc:
        raise CLIError(f"--halo {str(exc).replace('; 0 turns tiling off', '')}") from None
    try:
        return TilingConfig(tile, halo)
    except ValueError as exc:
        raise CLIError(f"--tile-shape / --halo: {exc}") from None


def check_tiling_values(args: argparse.Namespace) -> None:
    """Refuse malformed ``--tile-shape`` / ``--halo`` text before any image or model is loaded."""
    from infosam_core.inference.tiling import TilingConfig, parse_tile_shape

    for flag, value in (("--tile-shape", args.tile_shape), ("--halo", args.halo)):
        if value is not None:
            try:
                parse_tile_shape(value)
            except ValueError as exc:
                raise CLIError(f"{flag} {exc}") from None
    if args.tile_shape is not None and parse_tile_shape(args.tile_shape) != (0, 0):
        try:
            TilingConfig(parse_tile_shape(args.tile_shape), parse_tile_shape(args.halo or "0"))
        except ValueError as exc:
            raise CLIError(f"--tile-shape / --halo: {exc}") from None


def load_input(path: Any, tiling: Any) -> Any:
    """An input image for predict / segment: a lazy region source when it will be tiled and can be read by region
    (zarr / OME-Zarr, TIFF), else the whole image as RGB uint8. ImageError naming the file on failure."""
    from infosam_core.io.images import TIFF_SUFFIXES, image_size, load_rgb
    from infosam_core.io.large_images import is_zarr_path, open_regions

    if is_zarr_path(path):
        source = open_regions(path)
        if tiling is not None and tiling.needs_tiling(source.shape):
            return source
        height, width = source.shape
        return source.read_rgb(0, 0, height, width)
    if tiling is not None and path.suffix.lower() in TIFF_SUFFIXES:
        size = image_size(path)
        if size is not None and tiling.needs_tiling(size):
            return open_regions(path)
    return load_rgb(path)
