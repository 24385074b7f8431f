"""Tile prefetch (issue 26, the app's background embeddings): which tiles a view needs, in which order, and that
prefetching them leaves a prompt there only the decoder to run. Also the display pyramid of large images."""

from __future__ import annotations

import numpy as np
import pytest

from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
from infosam_core.inference.predictor import Predictor
from infosam_core.inference.tiling import TilingConfig, tile_at, tile_grid, tiles_for_view
from infosam_core.inference.tiling_predictor import TiledPredictor
from infosam_core.io.pyramid import downsample_2x, pyramid_levels

CONFIG = TilingConfig(192, 32)  # the tiny model's defaults: window 256


# ------------------------------------------------------------------------------------------ view -> tiles
def test_a_view_inside_one_tile_needs_that_tile_alone_without_margin():
    tiles = tiles_for_view((1000, 1000), (200, 200, 300, 300), CONFIG, margin=0)
    assert [t.index for t in tiles] == [(1, 1)]


def test_view_tiles_are_those_meeting_the_grown_view_nearest_to_its_centre_first():
    size, view = (2048, 2048), (700.0, 300.0, 1100.0, 900.0)
    tiles = tiles_for_view(size, view, CONFIG)  # margin: one tile
    centre = (900.0, 600.0)
    assert tiles[0] is not None and tiles[0].owns(*centre)
    assert tiles[0].index == tile_at(tile_grid(size, CONFIG), *centre).index
    grown = (view[0] - 192, view[1] - 192, view[2] + 192, view[3] + 192)
    expected = {
        t.index
        for t in tile_grid(size, CONFIG)
        if t.inner[0] < grown[2] and t.inner[2] > grown[0] and t.inner[1] < grown[3] and t.inner[3] > grown[1]
    }
    assert {t.index for t in tiles} == expected and len(tiles) == len(expected)

    def gap(t):  # distance from the centre to the tile's inner region
        dy = max(t.inner[0] - centre[0], 0, centre[0] - t.inner[2])
        dx = max(t.inner[1] - centre[1], 0, centre[1] - t.inner[3])
        return dy * dy + dx * dx

    gaps = [gap(t) for t in tiles]
    assert gaps == sorted(gaps)


def test_a_view_is_clipped_to_the_image_and_one_outside_it_needs_no_tile():
    assert tiles_for_view((1000, 1000), (2000, 2000, 2500, 2500), CONFIG) == []
    clipped = tiles_for_view((1000, 1000), (-500, -500, 100, 100), CONFIG, margin=0)
    assert [t.index for t in clipped] == [(0, 0)]
    whole = tiles_for_view((200, 240), (0, 0, 200, 240), CONFIG)  # no tiling: the one whole-image tile
    assert len(whole) == 1 and whole[0].window == (0, 0, 200, 240)


# ------------------------------------------------------------------------------------------ prefetch
def _counting(predictor: Predictor) -> list[int]:
    calls: list[int] = []
    encode = predictor._encode

    def counted(rgb, key):
        calls.append(1)
        return encode(rgb, key)

    predictor._encode = counted  # type: ignore[method-assign]
    return calls


def test_prefetch_fills_the_cache_so_a_prompt_there_runs_no_encoder_pass(random_tiny_sam):
    image, _ = nuclei_scene(NucleiSceneConfig(size=(800, 800), n_objects=30), seed=3)
    predictor = Predictor(random_tiny_sam, cache_size=16)
    calls = _counting(predictor)
    tiled = TiledPredictor(predictor, CONFIG)
    tiled.set_image(image)
    near = tiles_for_view((800, 800), (200, 200, 300, 300), CONFIG)  # rows / columns 0-2 of 5: 9 tiles
    assert len(near) == 9 and not any(tiled.tile_in_memory(t) for t in near)

    progress: list[tuple[int, int]] = []
    assert tiled.prefetch(near, report=progress.append) == 9
    assert len(calls) == 9 and progress == [(i, 9) for i in range(1, 10)]
    assert all(tiled.tile_in_memory(t) for t in near)
    assert tiled.prefetch(near) == 9 and len(calls) == 9  # already there: nothing recomputed

    masks, _, _ = tiled.predict(np.array([[250.0, 250.0]]), np.array([1]))
    assert masks.shape[1:] == (800, 800) and len(calls) == 9  # a prefetched tile: the decoder only
    tiled.predict(np.array([[790.0, 790.0]]), np.array([1]))  # a tile far from the view: one encoder pass
    assert len(calls) == 10


def test_prefetch_stops_when_asked(random_tiny_sam):
    image, _ = nuclei_scene(NucleiSceneConfig(size=(600, 600), n_objects=20), seed=4)
    predictor = Predictor(random_tiny_sam, cache_size=16)
    calls = _counting(predictor)
    tiled = TiledPredictor(predictor, CONFIG)
    tiled.set_image(image)
    tiles = tiles_for_view((600, 600), (0, 0, 600, 600), CONFIG)
    assert tiled.prefetch(tiles, should_stop=lambda: len(calls) >= 2) == 2
    assert len(calls) == 2 and [tiled.tile_in_memory(t) for t in tiles[:3]] == [True, True, False]


# ------------------------------------------------------------------------------------------ display pyramid
def test_pyramid_halves_until_the_longer_side_fits_and_keeps_level_zero():
    image = np.zeros((2048, 2048, 3), np.uint8)
    levels = pyramid_levels(image)
    assert [lv.shape for lv in levels] == [(2048, 2048, 3), (1024, 1024, 3)]
    assert levels[0] is image and levels[1].dtype == np.uint8
    assert [lv.shape for lv in pyramid_levels(np.zeros((3001, 900), np.uint16))] == [
        (3001, 900),
        (1501, 450),
        (751, 225),
    ]
    small = np.zeros((1024, 700, 3), np.uint8)
    assert len(pyramid_levels(small)) == 1 and pyramid_levels(small)[0] is small


def test_downsample_is_the_rounded_block_mean_and_repeats_an_odd_edge():
    image = np.array([[0, 1, 10], [2, 3, 20], [250, 255, 30]], np.uint8)
    half = downsample_2x(image)
    np.testing.assert_array_equal(half, [[2, 15], [253, 30]])  # (0+1+2+3)/4=1.5 -> 2; odd edge repeated
    floats = downsample_2x(image.astype(np.float32))
    assert floats.dtype == np.float32 and floats[0, 0] == pytest.approx(1.5)
