"""Prompted segmentation of large images at native resolution: :class:`TiledPredictor`.

A point or box anywhere on a large image is answered from the tile that holds it (:mod:`.tiling`'s grid, so
clicks near each other reuse one cached tile embedding; :func:`~infosam_core.inference.tiling.region_window`):
the grid tile whose window holds all the prompts, else (a box larger than a tile, or points spread over several
tiles) a *grown tile* centred on the prompts, as large as they are plus the halo on every side. The encoder
shrinks any window to its input side; a window more than twice the tile window per side is read as a
*downscaled view* (every ``step``-th pixel), so a huge box never decodes a huge region, and the mask is scaled
back up.

Masks come back at the image's own resolution (``predict``), or as the window's masks and where they lie
(``predict_region``, which never allocates an image-sized array). An image no larger than one tile with its
halo is predicted whole, exactly as :class:`~infosam_core.inference.predictor.Predictor` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infosam_core.inference.embedding_cache import ImageEmbedding
from infosam_core.inference.predictor import Predictor, box_outside_image
from infosam_core.inference.tiling import Tile, TilingConfig, region_window, tile_grid
from infosam_core.io.large_images import RegionSource, as_regions


@dataclass(frozen=True)
class RegionMasks:
    """Masks of one window: ``masks`` (C, h, w) bool (or float logits), covering rows ``window[0]:window[2]`` and
    columns ``window[1]:window[3]`` of the image; ``scores`` (C,); ``low_res_logits`` (C, h', w') of the window's
    embedding; ``step`` > 1 when the window was read downscaled (the masks are scaled back to full resolution)."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
    window: tuple[int, int, int, int]
    step: int = 1

    def full(self, image_size: tuple[int, int], fill: float | bool = False) -> np.ndarray:
        """The masks pasted into (C, H, W) arrays of ``image_size`` (``fill`` outside the window)."""
        y0, x0, y1, x1 = self.window
        out = np.full((len(self.masks), *image_size), fill, dtype=self.masks.dtype)
        out[:, y0:y1, x0:x1] = self.masks
        return out


class TiledPredictor:
    """Point and box prompts on images of any size, answered at native resolution from tiles.

    ``predictor``: the :class:`Predictor` whose model and embedding cache are used (tile embeddings are cached
    under the tile's pixels + the model's fingerprint, so they survive between calls and, with a ``cache_dir``,
    between sessions). ``tiling``: the grid (default: :meth:`TilingConfig.for_model`).
    """

    def __init__(self, predictor: Predictor, tiling: TilingConfig | None = None) -> None:
        self.predictor = predictor
        self.tiling = tiling or TilingConfig.for_model(predictor.model)
        self._source: RegionSource | None = None
        self._tiles: list[Tile] = []

    # ------------------------------------------------------------------------------------------ image
    def set_image(self, image: np.ndarray | RegionSource) -> None:
        """The image to segment: an array (any ``to_rgb_uint8`` accepts) or a lazy :class:`RegionSource`.
        Nothing is embedded yet: each tile is embedded (or taken from the cache) when a prompt first needs it."""
        self._source = as_regions(image)
        self._tiles = tile_grid(self._source.shape, self.tiling)

    @property
    def original_size(self) -> tuple[int, int]:
        return self._require_source().shape

    @property
    def tiles(self) -> list[Tile]:
        """The tile grid of the current image (one tile when it is not tiled)."""
        self._require_source()
        return list(self._tiles)

    @property
    def is_tiled(self) -> bool:
        return self.tiling.needs_tiling(self.original_size)

    def embed_tile(self, tile: Tile) -> ImageEmbedding:
        """Compute (or find in the cache) ``tile``'s embedding now, e.g. to prefetch the tiles near a view."""
        y0, x0, y1, x1 = tile.window
        return self.predictor.embed(self._require_source().read_rgb(y0, x0, y1, x1))

    def tile_in_memory(self, tile: Tile) -> bool:
        """Whether ``tile``'s embedding is in the predictor's memory cache (a prompt there costs only the decoder)."""
        y0, x0, y1, x1 = tile.window
        return self.predictor.has_in_memory(self._require_source().read_rgb(y0, x0, y1, x1))

    def prefetch(
        self,
        tiles: Sequence[Tile],
        should_stop: Callable[[], bool] | None = None,
        report: Callable[[tuple[int, int]], None] | None = None,
    ) -> int:
        """Embed ``tiles`` in this order (e.g. :func:`~infosam_core.inference.tiling.tiles_for_view`'s) into the
        cache, so that a later prompt on one of them runs only the decoder. Tiles already in memory are skipped;
        ``should_stop()`` is asked before each tile; ``report((done, total))`` after each. Thread-safe (the
        predictor's ``embed`` is); returns how many tiles are now embedded. The memory cache keeps only its
        ``size`` most recent embeddings: pass at most that many tiles."""
        total = len(tiles)
        for done, tile in enumerate(tiles, 1):
            if should_stop is not None and should_stop():
                return done - 1
            if not self.tile_in_memory(tile):
                self.embed_tile(tile)
            if report is not None:
                report((done, total))
        return total

    def _require_source(self) -> RegionSource:
        if self._source is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        return self._source

    # ------------------------------------------------------------------------------------- prediction
    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`Predictor.predict`'s arguments and results (pixels of the whole image), answered from a tile:
        masks (C, H, W) at the image's resolution, scores (C,), the window's low-res logits."""
        region = self.predict_region(point_coords, point_labels, box, multimask_output, return_logits)
        fill: float | bool = -1e4 if return_logits else False
        return region.full(self.original_size, fill), region.scores, region.low_res_logits

    def predict_region(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> RegionMasks:
        """As :meth:`predict`, but the masks of the window only (see :class:`RegionMasks`)."""
        source = self._require_source()
        height, width = source.shape
        coords, labels, box_array = _checked_prompts(point_coords, point_labels, box, (height, width))
        window, step = self.window_for(coords, box_array)
        y0, x0, y1, x1 = window
        crop = source.read_rgb(y0, x0, y1, x1, step)
        predictor = self.predictor
        predictor.set_embedding(predictor.embed(crop))
        offset = np.array([x0, y0], dtype=np.float64)
        local_coords = (coords - offset) / step if coords is not None else None
        local_box = (box_array - np.tile(offset, 2)) / step if box_array is not None else None
        if local_box is not None:  # rounding of a downscaled view: keep the box on the crop
            local_box = np.clip(local_box, 0, np.array([crop.shape[1], crop.shape[0]] * 2, dtype=np.float64))
        if local_coords is not None:
            local_coords = np.clip(local_coords, 0, np.array([crop.shape[1] - 1, crop.shape[0] - 1], dtype=np.float64))
        masks, scores, low_res = predictor.predict(
            local_coords, labels, local_box, multimask_output=multimask_output, return_logits=return_logits
        )
        if step > 1:
            masks = np.repeat(np.repeat(masks, step, axis=1), step, axis=2)[:, : y1 - y0, : x1 - x0]
        return RegionMasks(masks, scores, low_res, window, step)

    def window_for(self, coords: np.ndarray | None, box: np.ndarray | None) -> tuple[tuple[int, int, int, int], int]:
        """The window (y0, x0, y1, x1) that answers these prompts (pixels, x/y order as ``predict`` takes them),
        and the read step (1: native resolution). See the module docstring for the rule."""
        extent = _prompt_extent(coords, box)  # (y0, x0, y1, x1)
        return region_window(self._tiles, self.tiling, self.original_size, extent)


def _prompt_extent(coords: np.ndarray | None, box: np.ndarray | None) -> tuple[float, float, float, float]:
    ys: list[float] = []
    xs: list[float] = []
    if coords is not None:
        xs += coords[:, 0].tolist()
        ys += coords[:, 1].tolist()
    if box is not None:
        xs += [float(box[0]), float(box[2])]
        ys += [float(box[1]), float(box[3])]
    return min(ys), min(xs), max(ys), max(xs)


def _checked_prompts(
    point_coords: Any, point_labels: Any, box: Any, size: tuple[int, int]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The prompts as arrays, checked as :meth:`Predictor.predict` checks them (ValueError naming the problem)."""
    height, width = size
    coords = labels = box_array = None
    if point_coords is None and box is None:
        raise ValueError("give a prompt: point_coords (with point_labels) and/or box")
    if point_coords is not None:
        coords = np.asarray(point_coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0 or not np.isfinite(coords).all():
            raise ValueError(f"point_coords must have shape (N, 2), as (x, y) pixels; got {coords.shape}")
        if point_labels is None:
            raise ValueError("point_labels must be given with point_coords (1 = foreground, 0 = background)")
        labels = np.asarray(point_labels)
        if labels.shape != (len(coords),):
            raise ValueError(f"point_labels must hold one label per point: {len(coords)} points, shape {labels.shape}")
        outside = ~((coords[:, 0] >= 0) & (coords[:, 0] <= width) & (coords[:, 1] >= 0) & (coords[:, 1] <= height))
        if outside.any():
            x, y = coords[int(np.argmax(outside))]
            raise ValueError(f"point ({x:g}, {y:g}) lies outside the {width}x{height} image")
    elif point_labels is not None:
        raise ValueError("point_labels given without point_coords")
    if box is not None:
        box_array = np.asarray(box, dtype=np.float64).reshape(-1)
        if box_array.shape != (4,) or not np.isfinite(box_array).all():
            raise ValueError(f"box must be 4 numbers x0, y0, x1, y1; got {box!r}")
        if box_array[2] < box_array[0] or box_array[3] < box_array[1]:
            raise ValueError(f"box must be x0, y0, x1, y1 with x0 <= x1 and y0 <= y1; got {box_array.tolist()}")
        if box_outside_image(box_array, width, height):
            raise ValueError(
                f"box {box_array.tolist()} reaches outside the {width}x{height} image; clip it to the image"
            )
    return coords, labels, box_array
