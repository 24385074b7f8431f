"""Prediction from prompts: :class:`.predictor.Predictor` (SamPredictor's API with model hot swap) and its
image-embedding cache (:mod:`.embedding_cache`)."""

from infosam_core.inference.predictor import Predictor

__all__ = ["Predictor"]
