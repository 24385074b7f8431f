"""The app's Qt-free state for large images: the view's region, the prefetch plan, display pyramids kept with
the images read (issue 26)."""

from __future__ import annotations

import numpy as np
import pytest

from infosam_app.state.images import ImageStore, display_levels
from infosam_app.state.large_images import (
    CACHE_SPARE,
    PREFETCH_MAX_BYTES,
    PREFETCH_MAX_TILES,
    TiledPredictors,
    prefetch_budget,
    prefetch_plan,
    prefetch_tiles,
    view_box,
)
from infosam_core.inference.predictor import Predictor


def test_view_box_is_the_canvas_in_data_pixels_around_the_camera_centre():
    assert view_box((500.0, 300.0), 2.0, (400, 800)) == pytest.approx((400.0, 100.0, 600.0, 500.0))
    assert view_box((0.0, 0.0), 0.5, (100, 100)) == pytest.approx((-100.0, -100.0, 100.0, 100.0))


def test_prefetch_plan_is_capped_nearest_first_and_empty_for_a_small_image(random_tiny_sam):
    predictor = Predictor(random_tiny_sam)
    tiled_predictors = TiledPredictors()
    large = np.zeros((2048, 2048, 3), np.uint8)
    tiled = tiled_predictors.get(predictor, large)
    assert tiled is not None
    whole = prefetch_plan(tiled, (0, 0, 2048, 2048))  # zoomed out: the 24 tiles nearest the centre of 121
    assert len(whole) == PREFETCH_MAX_TILES and whole[0].owns(1024.0, 1024.0)
    zoomed = prefetch_plan(tiled, (10, 10, 100, 100))
    assert zoomed[0].index == (0, 0) and len(zoomed) == 4  # the corner tile and its neighbours
    assert tiled_predictors.get(predictor, np.zeros((200, 200, 3), np.uint8)) is None  # one tile: not tiled


def test_prefetch_budget_caps_tiles_by_count_and_bytes():
    assert prefetch_budget(256 * 16 * 16 * 4) == PREFETCH_MAX_TILES  # tiny: 256 KB a tile
    assert prefetch_budget(4 * 2**20) == PREFETCH_MAX_TILES  # SAM ViT-B: 4 MB
    assert prefetch_budget(90 * 2**20) == PREFETCH_MAX_BYTES // (90 * 2**20) == 5  # large extra feature maps
    assert prefetch_budget(2 * PREFETCH_MAX_BYTES) == 1


def test_prefetch_tiles_embeds_the_plan_within_budget_and_grows_the_memory_cache(random_tiny_sam, monkeypatch):
    import infosam_app.state.large_images as large_images

    predictor = Predictor(random_tiny_sam, cache_size=8)
    tiled = TiledPredictors().get(predictor, np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), np.uint8))
    plan = prefetch_plan(tiled, (0, 0, 1200, 1200))
    assert len(plan) == PREFETCH_MAX_TILES  # 7 x 7 tiles, the 24 nearest the centre
    monkeypatch.setattr(large_images, "PREFETCH_MAX_TILES", 10)  # a smaller budget: the test stays short
    progress: list[tuple[int, int]] = []
    assert prefetch_tiles(tiled, plan, report=progress.append) == 10
    assert progress == [(i, 10) for i in range(1, 11)] and predictor.cache.size == 10 + CACHE_SPARE
    assert [tiled.tile_in_memory(t) for t in plan[:11]] == [True] * 10 + [False]
    assert prefetch_tiles(tiled, plan[:10]) == 0  # all in memory: nothing computed
    assert prefetch_tiles(tiled, plan, should_stop=lambda: True) == 0


def test_image_store_keeps_display_levels_with_their_image():
    store = ImageStore(capacity=2)
    big = np.zeros((2100, 1000, 3), np.uint8)
    pair = (big[..., 0], big)
    levels = display_levels(pair)
    assert [lv.shape[:2] for lv in levels] == [(2100, 1000), (1050, 500), (525, 250)] and levels[0] is big
    store.remember("a", pair, levels)
    assert store.levels("a") is levels
    store.remember("a", pair)  # the same image again: its levels stay
    assert store.levels("a") is levels
    other = np.ones((10, 10, 3), np.uint8)
    store.remember("a", (other, other))  # another image under the key: the old levels are dropped
    assert store.levels("a") is None
    store.remember("a", pair, [np.zeros((4, 4, 3), np.uint8)])  # levels of another image are refused
    assert store.levels("a") is None
    store.remember("a", pair, levels)
    store.remember("b", (other, other), [other])
    store.remember("c", (other, other), [other])  # "a" is evicted, with its levels
    assert "a" not in store and store.levels("a") is None and store.levels("c") is not None
