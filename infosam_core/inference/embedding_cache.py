"""The image-embedding cache of :class:`~infosam_core.inference.predictor.Predictor`: in memory (LRU) and,
optionally, on disk (one safetensors file per key, written atomically, checked on read).

A key is ``"<image hash>-<encoder fingerprint>"``: the same image under other encoder weights is another
entry, so an adapted or swapped model never reuses a stale embedding. A damaged or foreign cache file is a
cache miss (logged), never an error. Thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from infosam_core.io.atomic import atomic_path

logger = logging.getLogger(__name__)

_CACHE_FORMAT = "infosam-embedding-1"


@dataclass(frozen=True, eq=False)
class ImageEmbedding:
    """The image encoder's output for one image, and what is needed to predict masks from it.

    features: (1, C, h, w) tensor (C = 256; h = w = 64 for SAM, 32 for tiny), on the model's device.
    extra_features: further feature maps the decoder needs (SAM2's high-resolution features
    (1, 32, 256, 256) and (1, 64, 128, 128)); empty for SAM.
    original_size: (H, W) of the image given. input_size: (h, w) after resizing the longest side to the
    encoder's input size (before padding). key: ``"<image sha256>-<model fingerprint>"``.
    image: the RGB uint8 (H, W, 3) image it was computed from (kept so a model swap can re-embed it).
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    key: str
    image: np.ndarray | None = field(default=None, repr=False)
    extra_features: tuple[torch.Tensor, ...] = ()

    @property
    def model_fingerprint(self) -> str:
        return self.key.rsplit("-", 1)[-1]

    @property
    def nbytes(self) -> int:
        """Bytes of the feature maps (what the memory cache holds of it)."""
        tensors = (self.features, *self.extra_features)
        return int(sum(t.numel() * t.element_size() for t in tensors))


def image_hash(image: np.ndarray) -> str:
    """sha256 of an array's bytes, shape and dtype (hex, 32 characters)."""
    image = np.ascontiguousarray(image)
    h = hashlib.sha256(image.data.cast("B"))
    h.update(f"{image.shape}{image.dtype.str}".encode())
    return h.hexdigest()[:32]


class EmbeddingCache:
    """``size`` embeddings in memory (least recently used dropped first; 0 = none) and, with ``cache_dir``,
    every computed embedding on disk."""

    def __init__(self, size: int = 8, cache_dir: str | Path | None = None) -> None:
        if size < 0:
            raise ValueError(f"cache_size must be >= 0, got {size}")
        self.size = size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, ImageEmbedding] = OrderedDict()

    def get(self, key: str, device: torch.device | str = "cpu") -> ImageEmbedding | None:
        """The embedding under ``key`` from memory, else from disk (moved to ``device``), else None."""
        with self._lock:
            embedding = self._memory.get(key)
            if embedding is not None:
                self._memory.move_to_end(key)
                return embedding
        return self._disk_get(key, device)

    def put_memory(self, embedding: ImageEmbedding) -> None:
        """Keep ``embedding`` in memory (without its image)."""
        if self.size == 0:
            return
        with self._lock:
            self._memory[embedding.key] = replace(embedding, image=None)
            self._memory.move_to_end(embedding.key)
            while len(self._memory) > self.size:
                self._memory.popitem(last=False)

    def put_disk(self, embedding: ImageEmbedding) -> None:
        """Write ``embedding`` to ``cache_dir`` (if set); a full or read-only disk is logged, not raised."""
        if self.cache_dir is None:
            return
        from safetensors.torch import save_file

        tensors = {"features": embedding.features}
        tensors.update({f"extra_{i}": t for i, t in enumerate(embedding.extra_features)})
        with torch.inference_mode(False):  # normal tensors: safetensors reads their storage
            tensors = {k: t.detach().to("cpu").contiguous().clone() for k, t in tensors.items()}
        features = tensors["features"]
        meta = {
            "format": _CACHE_FORMAT,
            "key": embedding.key,
            "original_size": ",".join(map(str, embedding.original_size)),
            "input_size": ",".join(map(str, embedding.input_size)),
            "sha256": hashlib.sha256(features.numpy().tobytes()).hexdigest(),
        }
        try:
            with atomic_path(self._disk_path(embedding.key)) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
        except OSError as exc:  # a full or read-only disk must not break segmentation
            logger.warning("could not write embedding cache file in %s: %s", self.cache_dir, exc)

    def in_memory(self, key: str) -> bool:
        """Whether ``key`` is held in memory (a hit costs no encoder pass and no disk read)."""
        with self._lock:
            return key in self._memory

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk are kept)."""
        with self._lock:
            self._memory.clear()

    def __len__(self) -> int:
        return len(self._memory)

    def _disk_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"{key}.safetensors"

    def _disk_get(self, key: str, device: torch.device | str) -> ImageEmbedding | None:
        if self.cache_dir is None:
            return None
        path = self._disk_path(key)
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                features = f.get_tensor("features")
                stored = list(f.keys())  # safe_open is not a dict: it has keys() but no __iter__
                names = sorted((k for k in stored if k.startswith("extra_")), key=lambda k: int(k[6:]))
                extra = tuple(f.get_tensor(k).to(device) for k in names)
            if meta.get("format") != _CACHE_FORMAT or meta.get("key") != key:
                raise ValueError("metadata does not match")
            if meta.get("sha256") != hashlib.sha256(features.numpy().tobytes()).hexdigest():
                raise ValueError("checksum does not match")
            original_size = tuple(int(v) for v in meta["original_size"].split(","))
            input_size = tuple(int(v) for v in meta["input_size"].split(","))
            if features.ndim != 4 or features.shape[0] != 1 or len(original_size) != 2 or len(input_size) != 2:
                raise ValueError(f"unexpected shapes {tuple(features.shape)}")
        except Exception as exc:  # noqa: BLE001 - a bad cache file is only a cache miss
            logger.warning("ignoring unreadable embedding cache file %s (%s); recomputing", path, exc)
            return None
        return ImageEmbedding(features.to(device), original_size, input_size, key, extra_features=extra)
