"""Identifying a model's weights: a stable fingerprint (content hash) and a cheap in-process stamp."""

from __future__ import annotations

import hashlib

import torch

from infosam_core.models.protocols import SamLike


def model_fingerprint(model: SamLike | torch.nn.Module) -> str:
    """A short hash of every parameter and buffer value (and its name) of ``model``.

    Two models share a fingerprint only when their weights are identical, so image embeddings and
    adapters can be keyed on it: a swapped or adapted model never matches a stale entry.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def weights_stamp(module: torch.nn.Module) -> tuple:
    """Cheap identity of a module's weights: changes when any tensor is replaced or modified in place."""
    stamp = []
    for name, t in module.state_dict(keep_vars=True).items():
        try:
            version = t._version
        except RuntimeError:  # inference tensors have no version counter
            version = -1
        stamp.append((name, t.data_ptr(), version, tuple(t.shape), t.dtype))
    return tuple(stamp)
