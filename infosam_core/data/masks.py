"""Binary-mask helpers: the tight box of a mask, resizing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear (anti-aliased when shrinking) resize of a bool mask, thresholded at 0.5: -> bool ``shape``."""
    if mask.shape == shape:
        return mask.astype(bool, copy=True)
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy() >= 0.5


def mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tight box of a 2-D mask as inclusive pixel indices ``(x0, y0, x1, y1)``; None for an empty mask."""
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.asarray(mask).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
