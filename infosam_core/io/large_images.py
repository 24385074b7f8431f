"""Images read by region: what tiled prediction and segment-all read their tiles from.

A :class:`RegionSource` has a ``shape`` (H, W) and ``read_rgb(y0, x0, y1, x1, step)`` -> RGB uint8 of that
region (every ``step``-th pixel: a downscaled view). :class:`ArrayRegions` wraps an image already in memory
(converted once with :func:`~infosam_core.io.images.to_rgb_uint8`); the lazy sources for zarr / OME-Zarr and
tiled OME-TIFF files are added below by :func:`open_regions`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from infosam_core.io.images import to_rgb_uint8


@runtime_checkable
class RegionSource(Protocol):
    """An image read one region at a time."""

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) at full resolution."""
        ...

    def read_rgb(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        """RGB uint8 (h, w, 3) of rows y0:y1:step and columns x0:x1:step (ends exclusive)."""
        ...


class ArrayRegions:
    """A :class:`RegionSource` over an in-memory image (any array ``to_rgb_uint8`` accepts)."""

    def __init__(self, image: np.ndarray, name: str | None = None) -> None:
        self.rgb = to_rgb_uint8(image, name)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    def read_rgb(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        _check_region(self.shape, y0, x0, y1, x1, step)
        return np.ascontiguousarray(self.rgb[y0:y1:step, x0:x1:step])


def as_regions(image: np.ndarray | RegionSource) -> RegionSource:
    """``image`` as a :class:`RegionSource` (an array is wrapped in :class:`ArrayRegions`)."""
    if isinstance(image, np.ndarray):
        return ArrayRegions(image)
    if isinstance(image, RegionSource):
        return image
    return ArrayRegions(np.asarray(image))


def _check_region(shape: tuple[int, int], y0: int, x0: int, y1: int, x1: int, step: int) -> None:
    height, width = shape
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width) or step < 1:
        raise ValueError(
            f"region rows {y0}:{y1}, columns {x0}:{x1} (step {step}) is not inside the {height}x{width} image"
        )
