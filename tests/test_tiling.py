"""Tiling: the grid (tile_shape, halo), prompted segmentation from tiles at native resolution, tiled segment-all."""

from __future__ import annotations

import numpy as np
import pytest

from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
from infosam_core.evaluation.instances import match_instances
from infosam_core.evaluation.seams import seam_score
from infosam_core.inference.automatic import AutomaticConfig
from infosam_core.inference.predictor import Predictor
from infosam_core.inference.tiling import TilingConfig, parse_tile_shape, tile_at, tile_grid
from infosam_core.inference.tiling_predictor import TiledPredictor
from infosam_core.inference.tiling_segment import TiledProposal, TiledResult, segment_all_tiled, stitch


# ------------------------------------------------------------------------------------------------ the grid
@pytest.mark.parametrize("size", [(1000, 700), (512, 512), (300, 1300), (257, 900)])
def test_inner_regions_partition_the_image_and_windows_hold_them(size):
    config = TilingConfig(200, 30)
    tiles = tile_grid(size, config)
    owner = np.zeros(size, dtype=np.int32)
    for tile in tiles:
        y0, x0, y1, x1 = tile.inner
        owner[y0:y1, x0:x1] += 1
        wy0, wx0, wy1, wx1 = tile.window
        assert wy0 <= y0 and wx0 <= x0 and wy1 >= y1 and wx1 >= x1
        assert min(wy0, wx0) >= 0 and wy1 <= size[0] and wx1 <= size[1]
        # every window has the same size (the image's side where it is smaller): the same scale everywhere
        assert (wy1 - wy0, wx1 - wx0) == (min(260, size[0]), min(260, size[1]))
        # the halo is there wherever the image goes on
        assert y0 - wy0 >= 30 or wy0 == 0
        assert wx1 - x1 >= 30 or wx1 == size[1]
    assert (owner == 1).all()


def test_an_image_no_larger_than_one_tile_with_its_halo_is_not_tiled():
    config = TilingConfig(192, 32)
    assert config.window_shape == (256, 256)
    assert not config.needs_tiling((256, 200))
    assert config.needs_tiling((257, 200))
    assert tile_grid((256, 256), config) == tile_grid((256, 256), TilingConfig(100, 0))[:0] + [
        tile_grid((256, 256), config)[0]
    ]
    (only,) = tile_grid((256, 200), config)
    assert only.inner == only.window == (0, 0, 256, 200)


def test_defaults_fill_the_models_input_and_configs_are_checked(tiny_sam):
    config = TilingConfig.for_model(tiny_sam)
    assert config.window_shape == (256, 256) and config.halo == (32, 32)
    assert TilingConfig.for_input_size(1024) == TilingConfig(768, 128)
    assert TilingConfig((256, 128), (8, 4)).tile_shape == (256, 128)
    for bad in [dict(tile_shape=8), dict(tile_shape=(64, 64, 64)), dict(tile_shape=64, halo=-1), dict(tile_shape=64.5)]:
        with pytest.raises(ValueError):
            TilingConfig(**bad)
    assert parse_tile_shape("256") == (256, 256) and parse_tile_shape("128, 512") == (128, 512)
    assert parse_tile_shape("0") == (0, 0)
    for bad in ["", "a", "1,2,3", "-5"]:
        with pytest.raises(ValueError, match="expected N or H,W"):
            parse_tile_shape(bad)


def test_tile_at_finds_the_owner():
    tiles = tile_grid((500, 500), TilingConfig(200, 20))
    assert tile_at(tiles, 0, 0).index == (0, 0)
    assert tile_at(tiles, 250, 450).index == (1, 2)
    assert tile_at(tiles, 500, 500).index == (2, 2)  # the far edge belongs to the last tile


# ------------------------------------------------------------------------------------- prompted, native
@pytest.fixture(scope="module")
def scene():
    return nuclei_scene(NucleiSceneConfig(size=(640, 640), n_objects=110), seed=11)


def _box(labels, index):
    ys, xs = np.nonzero(labels == index)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_box_prompts_on_small_objects_at_native_resolution(tiny_sam, scene):
    image, labels = scene
    tiled = TiledPredictor(Predictor(tiny_sam, cache_size=16), TilingConfig(256, 32))
    tiled.set_image(image)
    whole = Predictor(tiny_sam, cache_size=1)
    whole.set_image(image)
    tiled_ious, whole_ious = [], []
    for index in range(1, 9):
        truth = labels == index
        masks, scores, _ = tiled.predict(box=_box(labels, index), multimask_output=False)
        assert masks.shape == (1, 640, 640) and scores.shape == (1,)
        tiled_ious.append(_iou(masks[0], truth))
        whole_masks, _, _ = whole.predict(box=_box(labels, index), multimask_output=False)
        whole_ious.append(_iou(whole_masks[0], truth))
    assert np.mean(tiled_ious) >= 0.75
    assert np.mean(tiled_ious) > np.mean(whole_ious) + 0.05  # the whole image shrunk 2.5x to 256 px loses detail


def test_tile_embeddings_are_cached_under_the_tile(tiny_sam, scene):
    image, labels = scene
    predictor = Predictor(tiny_sam, cache_size=16)
    tiled = TiledPredictor(predictor, TilingConfig(256, 32))
    tiled.set_image(image)
    calls = []
    handle = tiny_sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = tiled.predict_region(point_coords=[[100, 100]], point_labels=[1])
        tiled.predict_region(point_coords=[[150, 120]], point_labels=[1])  # same tile: no encoder pass
        assert len(calls) == 1
        other = tiled.predict_region(point_coords=[[600, 600]], point_labels=[1])  # another tile
        assert len(calls) == 2 and other.window != first.window
        tiled.set_image(image)  # the same image again: both tiles from the cache
        tiled.predict_region(point_coords=[[100, 100]], point_labels=[1])
        tiled.predict_region(point_coords=[[600, 600]], point_labels=[1])
        assert len(calls) == 2
    finally:
        handle.remove()
    assert first.window == tiled.tiles[0].window and first.step == 1


def test_boxes_larger_than_a_tile_grow_the_window_or_read_a_downscaled_view(tiny_sam):
    image = np.random.default_rng(0).integers(0, 255, (2000, 2000), dtype=np.uint8)
    tiled = TiledPredictor(Predictor(tiny_sam, cache_size=0), TilingConfig(192, 32))
    tiled.set_image(image)
    window, step = tiled.window_for(None, np.array([100.0, 100.0, 500.0, 400.0]))
    assert step == 1 and window[0] <= 100 - 32 and window[2] >= 400 + 32 and window[3] >= 500 + 32
    window, step = tiled.window_for(None, np.array([0.0, 0.0, 1900.0, 1500.0]))
    assert step > 1 and window[2] >= 1500 and window[3] >= 1900
    region = tiled.predict_region(box=[0, 0, 1900, 1500], multimask_output=False)
    y0, x0, y1, x1 = region.window
    assert region.masks.shape == (1, y1 - y0, x1 - x0)  # scaled back to full resolution
    masks, _, _ = tiled.predict(box=[0, 0, 1900, 1500], multimask_output=False)
    assert masks.shape == (1, 2000, 2000)


def test_small_images_are_predicted_whole_as_by_the_predictor(tiny_sam, scene):
    image = scene[0][:200, :240]
    tiled = TiledPredictor(Predictor(tiny_sam, cache_size=2))
    tiled.set_image(image)
    assert not tiled.is_tiled
    plain = Predictor(tiny_sam, cache_size=2)
    plain.set_image(image)
    a, sa, _ = tiled.predict(point_coords=[[50, 60]], point_labels=[1])
    b, sb, _ = plain.predict(point_coords=[[50, 60]], point_labels=[1])
    assert np.array_equal(a, b) and np.allclose(sa, sb)


def test_prompts_are_checked_against_the_whole_image(tiny_sam, scene):
    tiled = TiledPredictor(Predictor(tiny_sam, cache_size=0), TilingConfig(256, 32))
    with pytest.raises(RuntimeError, match="set_image"):
        tiled.predict(point_coords=[[1, 1]], point_labels=[1])
    tiled.set_image(scene[0])
    with pytest.raises(ValueError, match="outside the 640x640 image"):
        tiled.predict(point_coords=[[700, 1]], point_labels=[1])
    with pytest.raises(ValueError, match="reaches outside"):
        tiled.predict(box=[600, 600, 650, 630])
    with pytest.raises(ValueError, match="give a prompt"):
        tiled.predict()


# ------------------------------------------------------------------------------------- seams, stitched
def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius**2


def test_an_object_seen_by_two_tiles_gets_one_label_the_owners_view():
    disc = _disc(10)
    # tile (0, 0) owns the object (centroid at y=100.5 < 101); tile (0, 1) sees it too, slightly shifted
    owner = TiledProposal(disc, (90, 90), 0.8, 0.9, (0, 0), True)
    other = TiledProposal(disc, (90, 92), 0.95, 0.97, (0, 1), False)
    lone = TiledProposal(_disc(6), (200, 200), 0.7, 0.9, (1, 1), False)  # no tile owned it: still kept once
    labels, painted, dropped = stitch([other, lone, owner], (300, 300))
    assert painted == [owner, lone] and dropped == 1
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels[90:111, 90:111][disc] == 1).all()


def test_stitch_prefers_stable_masks_over_a_merge_of_two_objects():
    left, right = _disc(8), _disc(8)
    merged = np.zeros((17, 40), dtype=bool)
    merged[:, :17] |= left
    merged[:, 23:] |= right
    merged[6:11, 17:23] = True
    proposals = [
        TiledProposal(merged, (50, 50), 0.95, 0.85, (0, 0), True),
        TiledProposal(left, (50, 50), 0.8, 0.95, (0, 0), True),
        TiledProposal(right, (50, 73), 0.8, 0.95, (0, 0), True),
    ]
    labels, painted, dropped = stitch(proposals, (120, 120))
    assert painted == proposals[1:] and dropped == 1


def test_stitched_objects_become_image_sized_proposals_for_the_studio():
    owner = TiledProposal(_disc(10), (90, 90), 0.8, 0.9, (0, 0), True)
    lone = TiledProposal(_disc(6), (200, 200), 0.7, 0.6, (1, 1), False)
    labels, painted, dropped = stitch([owner, lone], (300, 300))
    result = TiledResult(labels, painted, (300, 300), 0.1, 4, dropped)
    proposals = result.as_proposals()
    assert [q.predicted_iou for q in proposals] == [0.8, 0.7] and [q.stability for q in proposals] == [0.9, 0.6]
    for index, proposal in enumerate(proposals, start=1):
        assert proposal.mask.shape == (300, 300)
        np.testing.assert_array_equal(proposal.mask, labels == index)
        x, y = proposal.point
        assert proposal.mask[int(y), int(x)]  # the prompt point lies on the object
    assert proposals[0].box == (90, 90, 110, 110) and proposals[1].box == (200, 200, 212, 212)


@pytest.mark.slow
def test_tiled_segment_all_finds_small_objects_with_no_seam_splits(tiny_sam):
    image, truth = nuclei_scene(NucleiSceneConfig(size=(512, 512), n_objects=80), seed=23)
    predictor = Predictor(tiny_sam, cache_size=8)
    config = AutomaticConfig.for_model("tiny")
    result = segment_all_tiled(predictor, image, config, TilingConfig(256, 32))
    assert result.labels.shape == (512, 512) and result.tiles == 4
    score = match_instances(result.labels, truth)
    seams = seam_score(result.labels, truth)
    assert score.f1 >= 0.7
    assert seams.split <= 1


def test_grid_prompts_cover_only_a_tiles_inner_region_at_the_windows_density():
    from infosam_core.inference.tiling_segment import inner_points

    tiles = tile_grid((700, 700), TilingConfig(192, 32))
    middle = next(t for t in tiles if t.index == (1, 1))
    points = inner_points(middle, 16)  # 16 per 256 px window: one per 16 px
    wy0, wx0, _, _ = middle.window
    ys, xs = points[:, 1] + wy0, points[:, 0] + wx0
    y0, x0, y1, x1 = middle.inner
    assert (ys >= y0).all() and (ys < y1).all() and (xs >= x0).all() and (xs < x1).all()
    assert len(points) == 12 * 12  # 192 / 16 per side
