"""A store of precomputed image embeddings (micro-sam's "precomputed embeddings"): a Zarr folder that
``infosam embed`` fills -- on a machine with a GPU, say -- and that prediction reads, so a stored image costs no
encoder pass (``infosam predict|segment --embeddings STORE``, ``Predictor(embedding_store=...)``).

Layout (Zarr v3)::

    store.zarr/
      zarr.json                    attributes: {"format": "infosam-embeddings-1"}
      <image hash>-<fingerprint>/  one group per embedding, named by its key (``ImageEmbedding.key``)
        features                   (1, C, h, w) float32
        extra_0, extra_1, ...      further feature maps (SAM2's high-resolution features)
        zarr.json                  attributes: original_size, input_size

The key is the image's content hash and the model fingerprint the predictor computes: the encoder's weights
(an adapter that changes the encoder changes it; one that adapts the decoder only does not, and rightly shares
the entry), the encoder blocks a decoder reads, and the precision (``_bf16``, ``_int8``). An entry is written
under a temporary name and renamed into place, so a reader never sees half an entry. Reading checks the
format, dtypes, shapes and that every value is finite; an entry that fails is a miss (logged), never an error.
A store holds arrays and JSON attributes only: nothing in it is executed.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
import torch

from infosam_core.inference.embedding_cache import ImageEmbedding

logger = logging.getLogger(__name__)

STORE_FORMAT = "infosam-embeddings-1"
_PARTIAL_PREFIX = ".partial-"


class EmbeddingStoreError(ValueError):
    """A path that is not an embedding store (or cannot become one); the message names it and the fix."""


class EmbeddingStore:
    """An embedding store at ``path`` (see the module docstring). ``writable=False`` opens an existing store
    for reading only; ``writable=True`` creates it when missing."""

    def __init__(self, path: str | Path, writable: bool = False) -> None:
        import zarr

        self.path = Path(path)
        self.writable = writable
        self._lock = threading.Lock()
        if writable and not self.path.exists():
            try:
                group = zarr.open_group(str(self.path), mode="w")
                group.attrs["format"] = STORE_FORMAT
            except OSError as exc:
                raise EmbeddingStoreError(
                    f"{self.path}: cannot create an embedding store there ({exc}); choose another --out"
                ) from None
        if not self.path.is_dir():
            raise EmbeddingStoreError(
                f"{self.path}: no embedding store there; make one with `infosam embed IMAGES --out {self.path}`"
            )
        try:
            group = zarr.open_group(str(self.path), mode="r")
            found = group.attrs.get("format")
        except Exception as exc:  # noqa: BLE001 - any reader complaint: not a store of ours
            raise EmbeddingStoreError(
                f"{self.path}: not a Zarr embedding store ({type(exc).__name__}); give a folder made by `infosam embed`"
            ) from None
        if found != STORE_FORMAT:
            raise EmbeddingStoreError(
                f"{self.path}: a Zarr group but not an InfoSAM embedding store (format {found!r}, expected "
                f"{STORE_FORMAT!r}); give a folder made by `infosam embed`"
            )

    def __contains__(self, key: str) -> bool:
        return (self.path / key / "zarr.json").is_file()

    def keys(self) -> list[str]:
        """The stored keys (complete entries only)."""
        return sorted(p.name for p in self.path.iterdir() if not p.name.startswith(".") and (p / "zarr.json").is_file())

    def __len__(self) -> int:
        return len(self.keys())

    def get(self, key: str, device: torch.device | str = "cpu") -> ImageEmbedding | None:
        """The embedding stored under ``key`` (on ``device``), None when absent or unreadable."""
        if not _valid_key(key) or key not in self:
            return None
        import zarr

        try:
            group = zarr.open_group(str(self.path / key), mode="r")
            original_size = _pair(group.attrs.get("original_size"))
            input_size = _pair(group.attrs.get("input_size"))
            arrays = dict(group.arrays())
            names = ["features", *sorted((n for n in arrays if n.startswith("extra_")), key=lambda n: int(n[6:]))]
            tensors = []
            for name in names:
                array = arrays[name]
                if array.dtype != np.float32 or array.ndim != 4 or array.shape[0] != 1:
                    raise ValueError(f"{name}: {array.dtype} {array.shape}, expected float32 (1, C, h, w)")
                values = np.asarray(array[...])
                if not np.isfinite(values).all():
                    raise ValueError(f"{name}: values that are not finite")
                tensors.append(torch.from_numpy(values).to(device))
        except Exception as exc:  # noqa: BLE001 - a damaged entry is a miss
            logger.warning("ignoring unreadable entry %s of embedding store %s (%s)", key, self.path, exc)
            return None
        return ImageEmbedding(tensors[0], original_size, input_size, key, extra_features=tuple(tensors[1:]))

    def put(self, embedding: ImageEmbedding) -> bool:
        """Store ``embedding`` (all or nothing); False when its key is stored already."""
        if not self.writable:
            raise EmbeddingStoreError(f"{self.path}: opened for reading only")
        if not _valid_key(embedding.key):
            raise ValueError(f"not an embedding key: {embedding.key!r}")
        if embedding.key in self:
            return False
        import zarr

        partial = self.path / f"{_PARTIAL_PREFIX}{uuid.uuid4().hex}"
        try:
            group = zarr.open_group(str(partial), mode="w")
            tensors = {"features": embedding.features}
            tensors.update({f"extra_{i}": t for i, t in enumerate(embedding.extra_features)})
            for name, tensor in tensors.items():
                data = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
                group.create_array(name, data=data)
            group.attrs.update(
                {"original_size": list(embedding.original_size), "input_size": list(embedding.input_size)}
            )
            with self._lock:
                if embedding.key in self:
                    return False
                os.replace(partial, self.path / embedding.key)
            return True
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)


def _valid_key(key: str) -> bool:
    """``<hex>-<fingerprint>``: letters, digits, ``-`` and ``_`` only (a key never names a path outside)."""
    return bool(key) and key[0] != "." and all(c.isalnum() or c in "-_" for c in key)


def _pair(value: object) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ValueError(f"size {value!r} is not two positive integers")
    return int(value[0]), int(value[1])
