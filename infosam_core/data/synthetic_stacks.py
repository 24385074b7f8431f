"""Synthetic stacks with known objects, for the propagation tests and measurements.

* :func:`ellipsoid_stack`: a (Z, Y, X) volume of bright ellipsoids on a noisy dark background (disjoint, each
  with its own id in the returned label volume);
* :func:`crossing_blobs_series`: a (T, Y, X) series of two discs that move past each other (they pass close
  but never touch), each with its own id through every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SyntheticStack:
    """``image`` (N, Y, X) uint8 and ``labels`` (N, Y, X) uint8 (0 background, 1..K objects)."""

    image: np.ndarray
    labels: np.ndarray

    def box(self, label: int, index: int) -> np.ndarray:
        """(x0, y0, x1, y1) of object ``label`` on slice ``index``."""
        ys, xs = np.nonzero(self.labels[index] == label)
        if len(ys) == 0:
            raise ValueError(f"object {label} is not on slice {index}")
        return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


def _render(labels: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    image = np.where(labels > 0, 200.0, 40.0) + rng.normal(0.0, noise, labels.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def ellipsoid_stack(
    seed: int, shape: tuple[int, int, int] = (32, 256, 256), n_objects: int = 3, noise: float = 12.0
) -> SyntheticStack:
    """``n_objects`` disjoint ellipsoids (semi-axes 8-14 slices in Z, 22-45 px in Y and X) centred in the volume's
    middle slices, so that the middle slice cuts every one."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    z, y, x = np.ogrid[:depth, :height, :width]
    labels = np.zeros(shape, dtype=np.uint8)
    placed: list[tuple[float, float, float]] = []
    attempts = 0
    while len(placed) < n_objects:
        attempts += 1
        if attempts > 10_000:
            raise ValueError(f"cannot place {n_objects} ellipsoids in {shape}; use fewer or a larger volume")
        ry, rx = rng.uniform(22, 45, size=2)
        rz = rng.uniform(min(8.0, depth / 4), min(14.0, depth / 2.3))
        cy, cx = rng.uniform(ry + 4, height - ry - 4), rng.uniform(rx + 4, width - rx - 4)
        cz = rng.uniform(depth / 2 - 2, depth / 2 + 2)
        radius = max(ry, rx)
        if any(np.hypot(cy - py, cx - px) < radius + pr + 6 for py, px, pr in placed):
            continue
        inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
        labels[inside] = len(placed) + 1
        placed.append((cy, cx, radius))
    return SyntheticStack(_render(labels, rng, noise), labels)


def crossing_blobs_series(
    seed: int, frames: int = 24, size: int = 192, radius: float = 18.0, gap: float = 8.0, noise: float = 12.0
) -> SyntheticStack:
    """Two discs crossing the field in opposite directions on rows ``2 * radius + gap`` apart at their
    closest, so they pass each other without touching; object 1 moves right, object 2 left."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:size, :size]
    labels = np.zeros((frames, size, size), dtype=np.uint8)
    centre = size / 2 + rng.uniform(-5, 5)
    offset = radius + gap / 2
    for t in range(frames):
        u = t / max(1, frames - 1)
        x1 = radius + 4 + u * (size - 2 * radius - 8)
        x2 = size - 1 - x1
        for label, (cy, cx) in enumerate(((centre - offset, x1), (centre + offset, x2)), start=1):
            labels[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = label
    return SyntheticStack(_render(labels, rng, noise), labels)


def iou_3d(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean volumes (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
