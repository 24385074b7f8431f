"""Images the app has read, and when to read and embed the next one ahead of time."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infosam_core.io.images import read_image, to_rgb_uint8

ImagePair = tuple[np.ndarray, np.ndarray]  # (raw pixels as stored, RGB uint8 (H, W, 3) for SAM)

IMAGE_CACHE_SIZE = 4
PREFETCH_MAX_EMBED_S = 3.0


def read_image_pair(path: Path) -> ImagePair:
    """Read ``path`` once: the raw array (shown as is) and its RGB uint8 version (what SAM embeds)."""
    raw = read_image(path)
    return raw, to_rgb_uint8(raw, name=path.name)


class ImageStore:
    """The last ``capacity`` images read, by project image key (least recently used dropped first)."""

    def __init__(self, capacity: int = IMAGE_CACHE_SIZE):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._pairs: OrderedDict[str, ImagePair] = OrderedDict()

    def get(self, key: str) -> ImagePair | None:
        pair = self._pairs.get(key)
        if pair is not None:
            self._pairs.move_to_end(key)
        return pair

    def remember(self, key: str, pair: ImagePair) -> None:
        self._pairs[key] = pair
        self._pairs.move_to_end(key)
        while len(self._pairs) > self.capacity:
            self._pairs.popitem(last=False)

    def clear(self) -> None:
        self._pairs.clear()

    def forget(self, key: str) -> None:
        self._pairs.pop(key, None)

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
