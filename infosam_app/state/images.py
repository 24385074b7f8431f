"""Images the app has read, and when to read and embed the next one ahead of time."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infosam_core.io.images import read_image, to_rgb_uint8
from infosam_core.io.pyramid import pyramid_levels

ImagePair = tuple[np.ndarray, np.ndarray]  # (raw pixels as stored, RGB uint8 (H, W, 3) for SAM)

IMAGE_CACHE_SIZE = 4
PREFETCH_MAX_EMBED_S = 3.0


def read_image_pair(path: Path) -> ImagePair:
    """Read ``path`` once: the raw array (shown as is) and its RGB uint8 version (what SAM embeds)."""
    raw = read_image(path)
    return raw, to_rgb_uint8(raw, name=path.name)


def display_levels(pair: ImagePair) -> list[np.ndarray]:
    """What the image layer shows of ``pair``: its RGB image, and for a large one the smaller levels of its
    display pyramid (:func:`~infosam_core.io.pyramid.pyramid_levels`; a background task computes them, as
    they cost seconds for an 8192^2 image)."""
    return pyramid_levels(pair[1])


class ImageStore:
    """The last ``capacity`` images read, by project image key (least recently used dropped first)."""

    def __init__(self, capacity: int = IMAGE_CACHE_SIZE):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._pairs: OrderedDict[str, ImagePair] = OrderedDict()
        self._levels: dict[str, list[np.ndarray]] = {}  # display pyramids of the images kept (when computed)

    def get(self, key: str) -> ImagePair | None:
        pair = self._pairs.get(key)
        if pair is not None:
            self._pairs.move_to_end(key)
        return pair

    def remember(self, key: str, pair: ImagePair, levels: list[np.ndarray] | None = None) -> None:
        """Keep ``pair`` (and its display pyramid ``levels``, level 0 being ``pair``'s RGB image)."""
        if self._pairs.get(key) is not pair:
            self._levels.pop(key, None)
        self._pairs[key] = pair
        self._pairs.move_to_end(key)
        if levels is not None and levels[0] is pair[1]:
            self._levels[key] = levels
        while len(self._pairs) > self.capacity:
            dropped, _ = self._pairs.popitem(last=False)
            self._levels.pop(dropped, None)

    def levels(self, key: str) -> list[np.ndarray] | None:
        """The display pyramid of the image kept under ``key`` (None: not computed yet)."""
        return self._levels.get(key)

    def clear(self) -> None:
        self._pairs.clear()
        self._levels.clear()

    def forget(self, key: str) -> None:
        self._pairs.pop(key, None)
        self._levels.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._pairs

    def __len__(self) -> int:
        return len(self._pairs)

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._pairs)


@dataclass
class PrefetchPolicy:
    """Embed the next image ahead of time only when an embedding is cheap (the tiny model, a GPU).

    ``last_embed_seconds`` is the latest measured embedding time of the active model; unknown means "not yet".
    """

    enabled: bool = True
    max_embed_seconds: float = PREFETCH_MAX_EMBED_S
    last_embed_seconds: float | None = None

    def next_index(self, index: int, count: int) -> int | None:
        """The image to prefetch after showing ``index`` of ``count`` images, or None for none."""
        if not self.enabled or count < 2 or index < 0:
            return None
        if self.last_embed_seconds is None or self.last_embed_seconds > self.max_embed_seconds:
            return None
        return (index + 1) % count
