"""Prediction from prompts: :class:`.predictor.Predictor` (SamPredictor's API with model hot swap) and its
image-embedding cache (:mod:`.embedding_cache`); on large images, :class:`.tiling_predictor.TiledPredictor`
(prompts answered from tiles at native resolution) with :class:`.tiling.TilingConfig`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infosam_core.inference.predictor import Predictor
    from infosam_core.inference.tiling import TilingConfig
    from infosam_core.inference.tiling_predictor import TiledPredictor

# name -> the module it comes from, imported on first use (PEP 562): importing a light submodule such as
# :mod:`.tiling` (the CLI's argument checks do) then imports no torch
_LAZY = {
    "Predictor": "infosam_core.inference.predictor",
    "TilingConfig": "infosam_core.inference.tiling",
    "TiledPredictor": "infosam_core.inference.tiling_predictor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Predictor", "TiledPredictor", "TilingConfig"]
