"""A large image in the studio, headless (issue 26): a 2048 x 2048 scene is larger than one tile of the tiny
model (tile 192, halo 32), so a click is answered from its tile at native resolution, Segment all runs tile by
tile and is stitched, and the exported label image has the image's size."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")

from infosam_app.state.models import ModelInfo
from infosam_core.annotation.export import read_label_image
from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
from infosam_core.inference.automatic import AutomaticConfig
from infosam_core.inference.tiling import TilingConfig, tile_grid

pytestmark = [pytest.mark.gui, pytest.mark.slow]

SIZE = 2048
#: a sparse grid and loose filters: ~25 prompts per tile, so Segment all over the 121 tiles stays short
LOOSE = AutomaticConfig.for_model("tiny", points_per_side=6)


def _seam_object(truth: np.ndarray, seams: list[int]) -> tuple[int, int]:
    """A true object whose pixels lie on both sides of a vertical tile seam: (label, seam column)."""
    for seam in seams:
        left, right = set(np.unique(truth[:, seam - 1])) - {0}, set(np.unique(truth[:, seam])) - {0}
        for label in sorted(left & right):
            cols = np.nonzero(truth == label)[1]
            if cols.min() < seam - 3 and cols.max() > seam + 2:  # well across, not grazing it
                return int(label), seam
    raise AssertionError("no object crosses a tile seam in the synthetic scene")


def test_large_image_click_at_a_seam_segment_all_and_export(studio, qtbot, tmp_path, monkeypatch):
    s, c, p = studio.session, studio.prompts, studio.proposals
    image, truth = nuclei_scene(NucleiSceneConfig(size=(SIZE, SIZE), n_objects=150), seed=26)
    path = tmp_path / "large" / "scene_2048.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, image)
    s.add_images([path])
    qtbot.waitUntil(lambda: s.entry is not None and s.entry.name == path.name and s.embedding_ready, timeout=60_000)
    assert s.rgb.shape[:2] == (SIZE, SIZE)
    tiling = TilingConfig.for_model(s.predictor.model)
    assert s.tiled_predictor() is not None  # never embedded whole: prompts go to the tiles
    seams = sorted({t.inner[3] for t in tile_grid((SIZE, SIZE), tiling)} - {SIZE})
    label, seam = _seam_object(truth, seams)

    # a click on the object: one mask at native resolution, across the seam
    rows, cols = np.nonzero(truth == label)
    centre = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    t0 = time.perf_counter()
    c.add_point(cols[centre] + 0.5, rows[centre] + 0.5, positive=True)
    qtbot.waitUntil(lambda: c.mask is not None, timeout=30_000)
    click_seconds = time.perf_counter() - t0
    mask = c.mask
    assert mask.shape == (SIZE, SIZE)
    obj = truth == label
    iou = (mask & obj).sum() / (mask | obj).sum()
    assert iou >= 0.5, f"mask IoU {iou:.2f} with the true object across the seam at column {seam}"
    mask_cols = np.nonzero(mask)[1]
    assert mask_cols.min() < seam <= mask_cols.max(), "the mask stops at the tile seam"

    # compare: an adapted model (here a copy of the base) answers the same click from its own tiles
    s.set_adapted(copy.deepcopy(s.sams["base"]), ModelInfo("copy (test)", "CPU", "tiny"), activate=False)
    qtbot.waitUntil(lambda: s.has_adapted, timeout=30_000)
    shown = []
    c.mask_shown.connect(lambda: shown.append(s.active))
    c.toggle_model()
    qtbot.waitUntil(lambda: "adapted" in shown, timeout=30_000)
    assert s.tiled_predictor().predictor is s.predictors["adapted"] is not s.predictors["base"]
    np.testing.assert_array_equal(c.mask, mask)  # same weights, same tile: the same native-resolution mask
    c.toggle_model()
    qtbot.waitUntil(lambda: s.active == "base" and s.embedding_ready, timeout=30_000)
    accepted = c.accept()
    assert accepted is not None
    labels = s.project.annotations(s.key).labels
    assert labels.shape == (SIZE, SIZE) and set(np.unique(labels)) == {0, accepted.id}

    # Segment all: tile by tile, stitched into proposals of the image's size
    monkeypatch.setattr(p, "config", lambda: LOOSE)
    t0 = time.perf_counter()
    assert p.segment_all()
    qtbot.waitUntil(lambda: not p.running, timeout=120_000)
    segment_seconds = time.perf_counter() - t0
    assert s.last_error is None, s.last_error
    assert p.key == s.key and len(p.proposals) >= 50, f"{len(p.proposals)} proposals of 150 nuclei"
    assert s.layers.proposals.data.shape == (SIZE, SIZE)
    assert all(q.mask.shape == (SIZE, SIZE) for q in p.proposals)
    proposed = len(p.proposals)
    objects = p.accept_all()
    assert len(objects) >= 50

    # export: the label image has the image's size and holds the objects
    paths = studio.export_panel.export_masks(tmp_path / "out", fmt="tif")
    exported = read_label_image(next(q for q in paths if q.stem.startswith(path.stem)))
    assert exported.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(exported, s.project.annotations(s.key).labels)
    assert len(np.unique(exported)) - 1 == len(objects) + 1
    print(
        f"\nlarge image {SIZE}^2: click {click_seconds:.2f} s, segment all {segment_seconds:.1f} s, "
        f"{proposed} proposals, IoU {iou:.2f}"
    )


def test_large_image_is_multiscale_and_the_tiles_near_the_view_are_prefetched(studio, qtbot, tmp_path):
    """The 2048^2 image is a multiscale layer (2048, 1024); the tiles near the view are embedded in the
    background with progress in the status line, again when the view moves; a click on a prefetched tile runs
    no encoder pass and gives a native-resolution object; a small image is a plain layer again."""
    from infosam_app.tile_prefetch import camera_of

    s, c, prefetcher = studio.session, studio.prompts, studio.tile_prefetch
    image, truth = nuclei_scene(NucleiSceneConfig(size=(SIZE, SIZE), n_objects=300), seed=27)
    path = tmp_path / "large" / "scene_2048.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, image)
    said: list[str] = []
    s.status.connect(said.append)
    small_layer = s.layers.image
    assert not small_layer.multiscale
    s.add_images([path])
    qtbot.waitUntil(lambda: s.entry is not None and s.entry.name == path.name and s.embedding_ready, timeout=60_000)

    layer = s.layers.image
    assert layer.multiscale and layer.rgb
    assert [tuple(shape) for shape in layer.level_shapes] == [(SIZE, SIZE), (SIZE // 2, SIZE // 2)]
    assert layer.data[0] is s.rgb  # level 0 is the image: full-resolution data coordinates
    assert s.layers.objects.data.shape == (SIZE, SIZE) and s.layers.image_shape() == (SIZE, SIZE)

    # zoom onto a region: its tiles are prefetched, nearest the view's centre first, with progress
    camera = camera_of(s.viewer)
    camera.zoom = 2.0
    camera.center = (0.0, 1500.0, 700.0)
    qtbot.waitUntil(
        lambda: bool(prefetcher.last_tiles) and prefetcher.last_tiles[0].owns(1500.0, 700.0), timeout=30_000
    )
    qtbot.waitUntil(lambda: not prefetcher.running, timeout=60_000)
    tiled = s.tiled_predictor()
    tiles = prefetcher.last_tiles
    assert 1 < len(tiles) <= 24 and all(tiled.tile_in_memory(t) for t in tiles)
    assert prefetcher.last_progress is not None and prefetcher.last_progress[0] == prefetcher.last_progress[1]
    assert any(m.startswith("Embedding tiles near the view") for m in said), said[-5:]

    # a click on a nucleus in a prefetched tile: the decoder only, a native-resolution object
    encodes: list[int] = []
    encode = s.predictor._encode
    s.predictor._encode = lambda rgb, key: encodes.append(1) or encode(rgb, key)
    label = None
    for tile in tiles:
        y0, x0, y1, x1 = tile.inner
        inside = np.unique(truth[y0 + 20 : y1 - 20, x0 + 20 : x1 - 20])
        for candidate in inside[inside > 0]:
            rows, cols = np.nonzero(truth == candidate)
            if rows.min() > y0 and rows.max() < y1 and cols.min() > x0 and cols.max() < x1 and rows.size > 80:
                label = int(candidate)
                break
        if label is not None:
            break
    assert label is not None, "no nucleus wholly inside a prefetched tile"
    obj = truth == label
    rows, cols = np.nonzero(obj)
    centre = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    c.add_point(cols[centre] + 0.5, rows[centre] + 0.5, positive=True)
    qtbot.waitUntil(lambda: c.mask is not None, timeout=30_000)
    assert encodes == [], "a click on a prefetched tile ran the encoder"
    mask = c.mask
    assert mask.shape == (SIZE, SIZE)
    iou = (mask & obj).sum() / (mask | obj).sum()
    assert iou >= 0.5, f"mask IoU {iou:.2f} on a prefetched tile"
    accepted = c.accept()
    assert accepted is not None
    assert set(np.unique(s.project.annotations(s.key).labels)) == {0, accepted.id}

    # the view moves: a new plan around the new centre replaces the old one
    camera.center = (0.0, 300.0, 1800.0)
    qtbot.waitUntil(
        lambda: bool(prefetcher.last_tiles) and prefetcher.last_tiles[0].owns(300.0, 1800.0), timeout=30_000
    )
    qtbot.waitUntil(lambda: not prefetcher.running, timeout=60_000)
    assert all(tiled.tile_in_memory(t) for t in prefetcher.last_tiles)
    assert len(encodes) >= 1  # those tiles were new: the background task ran the encoder
    s.predictor._encode = encode

    # back to a small image: a plain layer again, prompts in its own coordinates
    s.show_image(0)
    qtbot.waitUntil(lambda: s.index == 0 and s.embedding_ready, timeout=30_000)
    assert not s.layers.image.multiscale and s.layers.image.data.shape[:2] == s.rgb.shape[:2]
    assert s.tiled_predictor() is None and not prefetcher.running
