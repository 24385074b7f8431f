"""Small evaluation sets that need no download: held-out synthetic scenes and scikit-image's coins.

Two synthetic sets, drawn from seeds pretraining never uses: ``synthetic_heldout`` (``HELDOUT_SEED``) is the
one the model card reports; ``synthetic_validation`` (``VALIDATION_SEED``) is the one to choose between
checkpoints on (last step or weight average, one phase or another), so that the reported figure is not also
the one a choice was made on.

``coins_instances`` derives the coins' ground truth classically (Sobel elevation map, intensity-threshold
markers, watershed, hole filling): 24 coins, one label each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import data as skdata
from skimage import filters, measure, morphology, segmentation

from infosam_core.data.synthetic import SceneConfig, SceneGenerator

HELDOUT_SEED = 2025_0721  # never used by pretraining (which seeds its stream with --seed, default 0)


VALIDATION_SEED = 2026_1202  # likewise; for choosing between checkpoints, never for reported figures


@dataclass(frozen=True)
class InstanceImage:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) int32, 0 = background


def coins_instances() -> InstanceImage:
    coins = skdata.coins()
    elevation = filters.sobel(coins)
    markers = np.zeros_like(coins, dtype=np.int32)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    foreground = segmentation.watershed(elevation, markers) == 2
    foreground = morphology.remove_small_objects(ndi.binary_fill_holes(foreground), 100)
    labels = measure.label(foreground).astype(np.int32)
    return InstanceImage("coins", np.repeat(coins[..., None], 3, axis=2), labels)


def synthetic_heldout(
    n_images: int = 40, seed: int = HELDOUT_SEED, config: SceneConfig | None = None
) -> list[InstanceImage]:
    generator = SceneGenerator(config)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        image, labels = generator.generate(rng)
        out.append(InstanceImage(f"synthetic_{i:03d}", image, labels))
    return out


def synthetic_validation(n_images: int = 40, config: SceneConfig | None = None) -> list[InstanceImage]:
    """Synthetic scenes like ``synthetic_heldout``'s, from another seed: choose checkpoints on these."""
    return synthetic_heldout(n_images, seed=VALIDATION_SEED, config=config)


def object_masks(labels: np.ndarray, min_area: int = 24) -> list[np.ndarray]:
    """One boolean mask per label id with at least ``min_area`` pixels, in id order."""
    ids, counts = np.unique(labels, return_counts=True)
    return [labels == i for i, n in zip(ids, counts) if i > 0 and n >= min_area]
