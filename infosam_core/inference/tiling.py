"""Tiling a large image for SAM (micro-sam's names): a tile shape, a halo, and the tile grid.

SAM sees every image at its encoder's input side (1024 px for SAM, 256 px for the bundled tiny model): a larger
image is shrunk whole, and objects of a few pixels vanish. Tiling cuts the image into tiles of ``tile_shape``
(the *inner* region a tile owns) and embeds each with a ``halo`` of context on every side, so the model sees the
image near its native resolution. Every path that works on large images (prompted segmentation:
:mod:`.tiling_predictor`; segment all: :mod:`.tiling_segment`) uses this one grid.

* :class:`TilingConfig` -- ``tile_shape`` (H, W) and ``halo`` (H, W). :meth:`TilingConfig.for_model` chooses the
  defaults from the model's input side ``S``: ``halo = S // 8`` and ``tile_shape = S - 2 * halo``, so a tile
  with its halo is exactly ``S`` and is embedded at native resolution (tiny: tile 192, halo 32; SAM: tile 768,
  halo 128). The halo should be larger than half the largest object, so that an object whose centre a tile owns
  lies wholly inside what the model saw of that tile.
* :meth:`TilingConfig.needs_tiling` -- an image no larger than one tile *with* its halo is not tiled (it is
  embedded whole, as before).
* :func:`tile_grid` -- the tiles in raster order. Inner regions partition the image (the last row/column may
  be narrower). The *window* embedded for a tile is its inner region grown by the halo and, at the image's
  border, shifted inwards so that every window has the same size (``tile_shape + 2 * halo``, or the image's
  side when that is smaller): every tile is seen at the same scale.

Tile embeddings go through the predictor's embedding cache like any image's (memory LRU and the on-disk
cache): the key is the sha256 of the tile window's pixels (so the image *and* the tile) plus the fingerprint
of the encoder's weights (so the model and the adapter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

#: ``--tile-shape 0``: tiling off (the image is embedded whole, shrunk to the model's input side)
TILING_OFF = 0


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, Integral):
        pair: tuple[Any, Any] = (value, value)
    else:
        items = tuple(value) if isinstance(value, Sequence) else ()
        if len(items) != 2:
            raise ValueError(f"{name} must be one number or two (height, width), got {value!r}")
        pair = (items[0], items[1])
    if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be whole pixels, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class TilingConfig:
    """``tile_shape``: the inner region each tile owns, (H, W) pixels, >= 16; ``halo``: context added on every
    side of a tile when it is embedded, (H, W) pixels, >= 0. Ints are taken as square."""

    tile_shape: tuple[int, int]
    halo: tuple[int, int] = (0, 0)

    def __init__(self, tile_shape: int | Sequence[int], halo: int | Sequence[int] = 0) -> None:
        tile, margin = _pair(tile_shape, "tile_shape"), _pair(halo, "halo")
        if min(tile) < 16:
            raise ValueError(f"tile_shape must be at least 16 pixels per side, got {tile}")
        if min(margin) < 0:
            raise ValueError(f"halo must be >= 0, got {margin}")
        object.__setattr__(self, "tile_shape", tile)
        object.__setattr__(self, "halo", margin)

    @classmethod
    def for_input_size(cls, input_size: int) -> TilingConfig:
        """Defaults for a model whose encoder sees ``input_size`` x ``input_size``: a tile and its halo fill it."""
        halo = max(0, input_size // 8)
        return cls(max(16, input_size - 2 * halo), halo)

    @classmethod
    def for_model(cls, model: Any) -> TilingConfig:
        """Defaults for ``model`` (any SAM-like model: ``image_encoder.img_size`` is its input side)."""
        return cls.for_input_size(int(model.image_encoder.img_size))

    @property
    def window_shape(self) -> tuple[int, int]:
        """What the model sees of one tile: ``tile_shape + 2 * halo`` per axis."""
        return self.tile_shape[0] + 2 * self.halo[0], self.tile_shape[1] + 2 * self.halo[1]

    def needs_tiling(self, image_size: tuple[int, int]) -> bool:
        """Whether an (H, W) image is larger than one tile with its halo (else it is embedded whole)."""
        window = self.window_shape
        return image_size[0] > window[0] or image_size[1] > window[1]


def parse_tile_shape(text: str) -> tuple[int, int]:
    """``"N"`` or ``"H,W"`` -> (H, W); ``"0"`` -> (0, 0) (tiling off). ValueError with an example otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 0:
        raise ValueError(f"{text!r}: expected N or H,W (whole pixels), e.g. 256 or 256,512; 0 turns tiling off")
    return values[0], values[1]


@dataclass(frozen=True)
class Tile:
    """One tile: ``index`` (row, column) in the grid, ``inner`` -- the region it owns -- and ``window`` -- what
    is embedded (inner + halo, shifted inwards at the image border) -- both as (y0, x0, y1, x1), ends exclusive."""

    index: tuple[int, int]
    inner: tuple[int, int, int, int]
    window: tuple[int, int, int, int]

    def owns(self, y: float, x: float) -> bool:
        """Whether the point (y, x) (pixel coordinates, continuous) lies in this tile's inner region."""
        y0, x0, y1, x1 = self.inner
        return y0 <= y < y1 and x0 <= x < x1

    def contains(self, box: tuple[float, float, float, float], margin: float = 0.0) -> bool:
        """Whether the box (y0, x0, y1, x1) lies inside this tile's window shrunk by ``margin`` (at the image's
        border there is nothing to shrink: pass ``image_size`` checks to the caller)."""
        y0, x0, y1, x1 = self.window
        return box[0] >= y0 + margin and box[1] >= x0 + margin and box[2] <= y1 - margin and box[3] <= x1 - margin


def _starts(length: int, tile: int) -> list[int]:
    return list(range(0, length, tile))


def _window(start: int, stop: int, halo: int, window: int, length: int) -> tuple[int, int]:
    """The window (a, b) of size min(window, length) around [start, stop) grown by ``halo``, inside [0, length)."""
    size = min(window, length)
    a = max(0, start - halo)
    a = min(a, length - size)
    b = a + size
    if b < stop:  # a narrow last tile and a large halo: never cut the inner region
        b = stop
    return a, b


def tile_grid(image_size: tuple[int, int], config: TilingConfig) -> list[Tile]:
    """The tiles of an (H, W) image in raster order (one tile when the image does not need tiling)."""
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {image_size}")
    if not config.needs_tiling((height, width)):
        return [Tile((0, 0), (0, 0, height, width), (0, 0, height, width))]
    (tile_h, tile_w), (halo_h, halo_w) = config.tile_shape, config.halo
    window_h, window_w = config.window_shape
    tiles = []
    for row, y0 in enumerate(_starts(height, tile_h)):
        y1 = min(y0 + tile_h, height)
        wy0, wy1 = _window(y0, y1, halo_h, window_h, height)
        for col, x0 in enumerate(_starts(width, tile_w)):
            x1 = min(x0 + tile_w, width)
            wx0, wx1 = _window(x0, x1, halo_w, window_w, width)
            tiles.append(Tile((row, col), (y0, x0, y1, x1), (wy0, wx0, wy1, wx1)))
    return tiles


#: a grown window longer than this many tile windows per side is read downscaled
MAX_NATIVE_WINDOWS = 2


def region_window(
    tiles: Sequence[Tile],
    config: TilingConfig,
    image_size: tuple[int, int],
    extent: tuple[float, float, float, float],
) -> tuple[tuple[int, int, int, int], int]:
    """The window (y0, x0, y1, x1) that holds ``extent`` (y0, x0, y1, x1: a prompt, an object), and the read step.

    * the grid tile whose inner region holds the extent's centre, when its window holds the extent with a margin
      (a quarter of the halo, at least 4 px, except along the image's border); else another grid tile that does
      (so nearby prompts and objects share cached tile embeddings);
    * else a *grown tile*: centred on the extent, as large as it plus the halo on every side, at least one tile
      window, inside the image; read every ``step``-th pixel (a downscaled view) when it is more than
      :data:`MAX_NATIVE_WINDOWS` tile windows long.

    An image that does not need tiling is one window, the whole image, step 1.
    """
    height, width = image_size
    if not config.needs_tiling((height, width)):
        return (0, 0, height, width), 1
    margin = max(4.0, min(config.halo) / 4)
    cy, cx = (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2
    home = tile_at(tiles, cy, cx)
    for tile in [home, *(t for t in tiles if t is not home)]:
        if _holds(tile.window, extent, margin, (height, width)):
            return tile.window, 1
    window_h, window_w = config.window_shape
    halo_h, halo_w = config.halo
    size_h = min(height, max(window_h, math.ceil(extent[2] - extent[0]) + 2 * halo_h))
    size_w = min(width, max(window_w, math.ceil(extent[3] - extent[1]) + 2 * halo_w))
    y0 = int(min(max(0, round(cy - size_h / 2)), height - size_h))
    x0 = int(min(max(0, round(cx - size_w / 2)), width - size_w))
    longest = max(size_h / window_h, size_w / window_w)
    step = 1 if longest <= MAX_NATIVE_WINDOWS else math.ceil(longest / MAX_NATIVE_WINDOWS)
    return (y0, x0, y0 + size_h, x0 + size_w), step


def _holds(
    window: tuple[int, int, int, int], extent: tuple[float, float, float, float], margin: float, size: tuple[int, int]
) -> bool:
    """Whether ``extent`` lies in ``window`` with ``margin`` on every side that is not the image's border."""
    y0, x0, y1, x1 = window
    height, width = size
    return (
        extent[0] >= (y0 + margin if y0 > 0 else 0)
        and extent[1] >= (x0 + margin if x0 > 0 else 0)
        and extent[2] <= (y1 - margin if y1 < height else height)
        and extent[3] <= (x1 - margin if x1 < width else width)
    )


def tile_at(tiles: Sequence[Tile], y: float, x: float) -> Tile:
    """The tile whose inner region holds the point (y, x) (a point on the image's far edge: the last tile)."""
    for tile in tiles:
        if tile.owns(y, x):
            return tile
    best = min(tiles, key=lambda t: _distance_to_inner(t, y, x))
    return best


def _distance_to_inner(tile: Tile, y: float, x: float) -> float:
    y0, x0, y1, x1 = tile.inner
    dy = max(y0 - y, 0.0, y - y1)
    dx = max(x0 - x, 0.0, x - x1)
    return float(dy * dy + dx * dx)


def tiles_for_view(
    image_size: tuple[int, int],
    view_box: tuple[float, float, float, float],
    config: TilingConfig,
    margin: float | None = None,
) -> list[Tile]:
    """The tiles to embed ahead of prompts on a view: every tile whose inner region meets ``view_box``
    (y0, x0, y1, x1, image pixels; clipped to the image) grown by ``margin`` pixels on every side (default: one
    tile, the tiles just outside the view), nearest to the view's centre first: the tile that holds the centre,
    then by distance from the centre to the tile's inner region, then to its middle (ties: raster order).

    An image that does not need tiling is one tile; a view wholly outside the image gives no tiles."""
    height, width = (int(v) for v in image_size)
    tiles = tile_grid((height, width), config)
    grow = float(max(config.tile_shape)) if margin is None else float(margin)
    y0, x0 = max(0.0, float(view_box[0])), max(0.0, float(view_box[1]))
    y1, x1 = min(float(height), float(view_box[2])), min(float(width), float(view_box[3]))
    if y1 <= y0 or x1 <= x0:
        return []
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    gy0, gx0, gy1, gx1 = y0 - grow, x0 - grow, y1 + grow, x1 + grow
    near = [t for t in tiles if t.inner[0] < gy1 and t.inner[2] > gy0 and t.inner[1] < gx1 and t.inner[3] > gx0]
    return sorted(near, key=lambda t: (_distance_to_inner(t, cy, cx), _distance_to_centre(t, cy, cx)))


def _distance_to_centre(tile: Tile, y: float, x: float) -> float:
    y0, x0, y1, x1 = tile.inner
    return float(((y0 + y1) / 2 - y) ** 2 + ((x0 + x1) / 2 - x) ** 2)
