"""A synthetic large fluorescence scene: many small bright ellipses (nuclei-sized) on a noisy dark background.

Used to measure tiling (``benchmarks/bench_tiling.py``) and in its tests: at 1024 x 1024 with 300 objects of
7-12 px radius, an image resized whole to the bundled tiny model's 256 px input shrinks every object to 2-3 px.
Objects do not touch (each keeps a gap of at least 2 px), so the truth is one label per ellipse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import draw


@dataclass(frozen=True)
class NucleiSceneConfig:
    """size: (H, W); n_objects: ellipses placed (fewer if they do not fit); radius: semi-axes range (pixels)."""

    size: tuple[int, int] = (1024, 1024)
    n_objects: int = 300
    radius: tuple[float, float] = (7.0, 12.0)
    gap: int = 2
    background: float = 0.08
    noise: float = 0.04


def nuclei_scene(config: NucleiSceneConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image (H, W) uint8, labels (H, W) int32)``: bright ellipses on noise, one label per ellipse."""
    rng = np.random.default_rng(seed)
    height, width = config.size
    labels = np.zeros((height, width), dtype=np.int32)
    intensity = np.zeros((height, width), dtype=np.float32)
    occupied = np.zeros((height, width), dtype=bool)
    low, high = config.radius
    placed = 0
    for _ in range(config.n_objects * 50):
        if placed >= config.n_objects:
            break
        ry, rx = rng.uniform(low, high, size=2)
        angle = rng.uniform(-np.pi, np.pi)
        margin = int(np.ceil(high)) + 1
        cy, cx = rng.uniform(margin, height - margin), rng.uniform(margin, width - margin)
        rr, cc = draw.ellipse(cy, cx, ry, rx, shape=(height, width), rotation=angle)
        if len(rr) == 0:
            continue
        grown = draw.ellipse(cy, cx, ry + config.gap, rx + config.gap, shape=(height, width), rotation=angle)
        if occupied[grown].any():
            continue
        placed += 1
        occupied[grown] = True
        labels[rr, cc] = placed
        intensity[rr, cc] = rng.uniform(0.5, 0.95)
    image = ndi.gaussian_filter(intensity, 1.0) + config.background
    image = image + rng.normal(0.0, config.noise, size=image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), labels
