"""Training samples of large images as native-resolution crops around each object.

Training resizes every sample's image to the encoder's input side, so an object annotated on a 2048^2 image
would be learnt at an eighth of the scale the user drew it at (and at which tiled prediction sees it).
:func:`object_crops` therefore replaces each sample whose image is larger than one tile with its halo by crops:
the mask is split into its objects (8-connected components; a project's objects are one sample each already),
and each object is cut out with the window tiled prediction would answer it from
(:func:`~infosam_core.inference.tiling.region_window`: the grid tile holding it, else a tile grown to hold it,
downscaled beyond twice a tile). Objects in the same tile window share one crop array, so the trainer's encoder
cache embeds each window once. Samples of images no larger than a tile are kept as they are.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from infosam_core.data.datasets import SegmentationSample
from infosam_core.inference.tiling import TilingConfig, region_window, tile_grid


def object_crops(samples: list[SegmentationSample], tiling: TilingConfig) -> list[SegmentationSample]:
    """``samples`` with every large image's objects as crops at native resolution (see the module docstring)."""
    out: list[SegmentationSample] = []
    crops: dict[tuple[int, tuple[int, int, int, int], int], np.ndarray] = {}
    grids: dict[tuple[int, int], list] = {}
    for sample in samples:
        size = (int(sample.image.shape[0]), int(sample.image.shape[1]))
        if not tiling.needs_tiling(size):
            out.append(sample)
            continue
        tiles = grids.setdefault(size, tile_grid(size, tiling))
        components, count = ndimage.label(sample.mask, structure=np.ones((3, 3), dtype=bool))
        boxes = ndimage.find_objects(components)
        for index, found in enumerate(boxes, start=1):
            if found is None:
                continue
            rows, cols = found
            extent = (float(rows.start), float(cols.start), float(rows.stop), float(cols.stop))
            window, step = region_window(tiles, tiling, size, extent)
            y0, x0, y1, x1 = window
            key = (id(sample.image), window, step)
            if key not in crops:
                crops[key] = np.ascontiguousarray(sample.image[y0:y1:step, x0:x1:step])
            mask = components[y0:y1:step, x0:x1:step] == index
            if not mask.any():  # a thin object missed by a downscaled view: keep its own pixels' bounding rows
                continue
            name = sample.name if count == 1 else f"{sample.name}#{index}"
            out.append(SegmentationSample(crops[key], mask, f"{name}@{y0},{x0}"))
    return out
