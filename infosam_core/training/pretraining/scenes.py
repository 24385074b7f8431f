"""A stream of synthetic training scenes for pretraining (one generator per DataLoader worker)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset

from infosam_core.data.synthetic import SceneConfig, SceneGenerator


def draw_training_scene(
    generator: SceneGenerator, rng: np.random.Generator, masks_per_image: int, p_pad: float
) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor] | None:
    """One training sample: image (3, S, S) uint8, its valid (h, w) and up to ``masks_per_image`` object masks.

    With probability ``p_pad`` the scene is cut to a random non-square (h, w) at the top-left, the rest to be
    padded like ``Sam.preprocess`` pads; the objects' masks are cut alike. None when no object is visible.
    """
    image, labels = generator.generate(rng)
    s = generator.config.image_size
    h = w = s
    if rng.random() < p_pad:
        h, w = (int(rng.integers(s // 2, s)), s) if rng.random() < 0.5 else (s, int(rng.integers(s // 2, s)))
        labels = labels.copy()
        labels[h:, :] = 0
        labels[:, w:] = 0
    ids, counts = np.unique(labels, return_counts=True)
    ids = ids[(ids > 0) & (counts >= generator.config.min_visible_area)]
    if ids.size == 0:
        return None
    chosen = rng.choice(ids, size=min(masks_per_image, ids.size), replace=False)
    target = torch.from_numpy(labels[None] == chosen[:, None, None])
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(), (h, w), target


class SceneStream(IterableDataset):
    """An endless stream of training scenes; each DataLoader worker draws its own, seeded by (seed, worker)."""

    def __init__(self, scene: SceneConfig, masks_per_image: int, p_pad: float, seed: int, start_step: int):
        self.scene = scene
        self.masks_per_image = masks_per_image
        self.p_pad = p_pad
        self.seed = seed
        self.start_step = start_step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.start_step, worker])
        generator = SceneGenerator(self.scene)
        while True:
            sample = draw_training_scene(generator, rng, self.masks_per_image, self.p_pad)
            if sample is not None:
                yield sample
