"""Prediction from prompts: :class:`.predictor.Predictor` (SamPredictor's API with model hot swap) and its
image-embedding cache (:mod:`.embedding_cache`); on large images, :class:`.tiling_predictor.TiledPredictor`
(prompts answered from tiles at native resolution) with :class:`.tiling.TilingConfig`."""

from infosam_core.inference.predictor import Predictor
from infosam_core.inference.tiling import TilingConfig
from infosam_core.inference.tiling_predictor import TiledPredictor

__all__ = ["Predictor", "TiledPredictor", "TilingConfig"]
