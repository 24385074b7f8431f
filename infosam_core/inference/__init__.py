"""Prediction from prompts: :class:`.predictor.Predictor` (SamPredictor's API with model hot swap) and its
image-embedding cache (:mod:`.embedding_cache`); on large images, :class:`.tiling_predictor.TiledPredictor`
(prompts answered from tiles at native resolution) with :class:`.tiling.TilingConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infosam_core.lazy_exports import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["Predictor", "TiledPredictor", "TilingConfig"]
