"""Image pyramids for display: full resolution first, each level half the previous, until one fits a screen.

A viewer shows a large image (a 2048 x 2048 field, a whole-slide scan) zoomed out most of the time; drawing it
from full resolution uploads and resamples every pixel. A *multiscale* viewer layer (a list of levels, largest
first) is drawn from the level that matches the zoom. :func:`pyramid_levels` builds that list cheaply: each level
is the 2 x 2 block mean of the previous one (an odd side repeats its last row / column), computed from the
previous level, so the whole pyramid costs about a third of one pass over the image. Level 0 is the image
itself (not copied): coordinates stay those of the full-resolution image.
"""

from __future__ import annotations

import numpy as np

#: levels are added until the longer side is at most this (a screen's worth of pixels)
DISPLAY_MAX_SIDE = 1024


def pyramid_levels(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> list[np.ndarray]:
    """``image`` (H, W) or (H, W, C) and its 2 x 2 block-mean reductions, largest first, until the longer side
    is <= ``max_side``. One level (the image itself) when it is already that small."""
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    levels = [image]
    while max(levels[-1].shape[:2]) > max_side:
        levels.append(downsample_2x(levels[-1]))
    return levels


def downsample_2x(image: np.ndarray) -> np.ndarray:
    """The 2 x 2 block mean of an (H, W) or (H, W, C) image, shape (ceil(H/2), ceil(W/2)[, C]), same dtype
    (integers rounded to nearest)."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        pad = ((0, height % 2), (0, width % 2)) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, pad, mode="edge")
    if np.issubdtype(image.dtype, np.integer):
        wide = np.int64 if image.dtype.itemsize > 2 or np.issubdtype(image.dtype, np.signedinteger) else np.uint32
        total: np.ndarray = image[0::2, 0::2].astype(wide)
        total = total + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2]
        return ((total + 2) // 4).astype(image.dtype)
    if image.dtype == np.bool_:
        return downsample_2x(image.astype(np.uint8)) >= 1
    quarter = (image[0::2, 0::2].astype(np.float64) + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2]) / 4
    return quarter.astype(image.dtype)
