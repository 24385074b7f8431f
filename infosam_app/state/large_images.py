"""Images larger than one tile of the model in use: prompts answered by the core's tiled predictor.

An image no larger than one tile (with its halo) of a model (:meth:`TilingConfig.needs_tiling`) is embedded
whole, as always. A larger one is never embedded whole (that would shrink it to the encoder's input side):
:class:`TiledPredictors` gives each model's predictor a
:class:`~infosam_core.inference.tiling_predictor.TiledPredictor` on the shown image, which embeds the tile a
prompt falls in when first needed (through that predictor's embedding cache) and answers at native resolution.
One per predictor, so base and adapted keep their own tiles (compare keeps working).

Prefetch (:mod:`infosam_app.tile_prefetch` schedules it): the tiles near the view
(:func:`~infosam_core.inference.tiling.tiles_for_view`, at most :data:`PREFETCH_MAX_TILES`, nearest the view's
centre first, no more than :data:`PREFETCH_MAX_BYTES` of embeddings) are embedded in the background, so that a
click there runs only the decoder; the predictor's memory cache is grown to keep them (:func:`prefetch_tiles`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from infosam_core.inference.tiling import Tile, TilingConfig, tiles_for_view
from infosam_core.inference.tiling_predictor import TiledPredictor

#: tiles embedded ahead of prompts per view (nearest the view's centre first), at most
PREFETCH_MAX_TILES = 24
#: and at most this many bytes of embeddings (SAM ViT-B: 4 MB a tile; a decoder with extra feature maps more)
PREFETCH_MAX_BYTES = 512 * 2**20
#: the memory cache keeps this many embeddings beyond the prefetched ones (the tiles clicked, the next image)
CACHE_SPARE = 8


def prefetch_budget(embedding_nbytes: int) -> int:
    """How many tiles of ``embedding_nbytes`` each are prefetched for one view: <= :data:`PREFETCH_MAX_TILES`
    and :data:`PREFETCH_MAX_BYTES` in all, at least 1."""
    return max(1, min(PREFETCH_MAX_TILES, PREFETCH_MAX_BYTES // max(1, int(embedding_nbytes))))


def prefetch_tiles(
    tiled: TiledPredictor,
    tiles: list[Tile],
    should_stop: Callable[[], bool] = lambda: False,
    report: Callable[[tuple[int, int]], None] | None = None,
) -> int:
    """Embed ``tiles`` (a :func:`prefetch_plan`, nearest first) into the predictor's cache, in the calling (a
    background) thread: the first tile not yet in memory tells the size of one embedding, which caps the count
    (:func:`prefetch_budget`); the memory cache is grown to hold them plus :data:`CACHE_SPARE`. ``report((done,
    total))`` after each tile computed; ``should_stop()`` before each. Returns how many tiles were computed."""
    todo = [t for t in tiles if not tiled.tile_in_memory(t)]
    if not todo or should_stop():
        return 0
    first = tiled.embed_tile(todo[0])
    budget = prefetch_budget(first.nbytes)
    cache = tiled.predictor.cache
    if cache.size < budget + CACHE_SPARE:
        cache.size = budget + CACHE_SPARE  # grown, never shrunk: prefetched tiles must stay in memory
    todo = [todo[0], *(t for t in todo[1:] if t in tiles[:budget])]
    if report is not None:
        report((1, len(todo)))
    done = 1 + tiled.prefetch(
        todo[1:],
        should_stop=should_stop,
        report=None if report is None else (lambda progress: report((progress[0] + 1, len(todo)))),
    )
    return done


def view_box(
    center: tuple[float, float], zoom: float, canvas_size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The image region (y0, x0, y1, x1, data pixels) a 2D view shows: ``center`` (row, col) in data pixels,
    ``zoom`` screen pixels per data pixel, ``canvas_size`` (height, width) in screen pixels."""
    half_h = canvas_size[0] / (2 * max(zoom, 1e-9))
    half_w = canvas_size[1] / (2 * max(zoom, 1e-9))
    return center[0] - half_h, center[1] - half_w, center[0] + half_h, center[1] + half_w


def prefetch_plan(tiled: TiledPredictor, box: tuple[float, float, float, float]) -> list[Tile]:
    """The tiles to embed ahead of prompts for the view ``box``: near it, nearest its centre first, at most
    :data:`PREFETCH_MAX_TILES` (none for an image that is not tiled)."""
    if not tiled.is_tiled:
        return []
    return tiles_for_view(tiled.original_size, box, tiled.tiling)[:PREFETCH_MAX_TILES]


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
