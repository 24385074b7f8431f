"""The app's Qt-free state for large images: the view's region, the prefetch plan, display pyramids kept with
the images read (issue 26)."""

from __future__ import annotations

import numpy as np
import pytest

from infosam_app.state.images import ImageStore, display_levels
from infosam_app.state.large_images import (
    PREFETCH_MAX_TILES,
    TILE_MEMORY_CACHE,
    TiledPredictors,
    prefetch_plan,
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
    assert tiled is not None and predictor.cache.size >= TILE_MEMORY_CACHE > PREFETCH_MAX_TILES
    whole = prefetch_plan(tiled, (0, 0, 2048, 2048))  # zoomed out: the 24 tiles nearest the centre of 121
    assert len(whole) == PREFETCH_MAX_TILES and whole[0].owns(1024.0, 1024.0)
    zoomed = prefetch_plan(tiled, (10, 10, 100, 100))
    assert zoomed[0].index == (0, 0) and len(zoomed) == 4  # the corner tile and its neighbours
    assert tiled_predictors.get(predictor, np.zeros((200, 200, 3), np.uint8)) is None  # one tile: not tiled


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
