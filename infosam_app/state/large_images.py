"""Images larger than one tile of the model in use: prompts answered by the core's tiled predictor.

An image no larger than one tile (with its halo) of a model (:meth:`TilingConfig.needs_tiling`) is embedded
whole, as always. A larger one is never embedded whole (that would shrink it to the encoder's input side):
:class:`TiledPredictors` gives each model's predictor a
:class:`~infosam_core.inference.tiling_predictor.TiledPredictor` on the shown image, which embeds the tile a
prompt falls in when first needed (through that predictor's embedding cache) and answers at native resolution.
One per predictor, so base and adapted keep their own tiles (compare keeps working).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infosam_core.inference.tiling import TilingConfig
from infosam_core.inference.tiling_predictor import TiledPredictor


def needs_tiling(predictor: Any, rgb: np.ndarray) -> bool:
    """Whether ``rgb`` is larger than one tile (with its halo) of ``predictor``'s model."""
    return TilingConfig.for_model(predictor.model).needs_tiling(rgb.shape[:2])


class TiledPredictors:
    """The :class:`TiledPredictor` of each predictor on the image shown (made when first asked for)."""

    def __init__(self) -> None:
        self._made: dict[int, tuple[Any, np.ndarray, TiledPredictor]] = {}  # id(predictor) -> (it, image, tiled)

    def get(self, predictor: Any, rgb: np.ndarray | None) -> TiledPredictor | None:
        """``predictor``'s tiled predictor on ``rgb``, or None when ``rgb`` needs no tiling (or is None)."""
        if predictor is None or rgb is None or not needs_tiling(predictor, rgb):
            return None
        made = self._made.get(id(predictor))
        if made is not None and made[0] is predictor and made[1] is rgb:
            return made[2]
        tiled = TiledPredictor(predictor)
        tiled.set_image(rgb)
        self._made = {k: v for k, v in self._made.items() if v[1] is rgb}  # other images' are dropped
        self._made[id(predictor)] = (predictor, rgb, tiled)
        return tiled
