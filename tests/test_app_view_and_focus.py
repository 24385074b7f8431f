"""The view fits each image (whatever the previous one's size), point prompts are sized in screen pixels, and
after the relation-map overlay is shown and hidden the point prompt layer is selected again (clicks add
prompts)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from infosam_app.layers import POINT_SCREEN_PX

pytestmark = pytest.mark.gui


def test_view_fits_each_image_and_points_are_screen_sized(studio, qtbot, tmp_path):
    import imageio.v3 as iio

    s = studio.session
    rng = np.random.default_rng(0)
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    iio.imwrite(big, rng.integers(0, 255, (900, 1400, 3), dtype=np.uint8))
    iio.imwrite(small, rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    s.add_images([big, small])
    keys = {e.name: i for i, e in enumerate(s.project.images)}
    zooms = {}
    for name, (h, w) in (("big.png", (900, 1400)), ("small.png", (60, 80))):
        s.show_image(keys[name])
        qtbot.waitUntil(lambda h=h: s.rgb is not None and s.rgb.shape[0] == h, timeout=30_000)
        center = s.viewer.camera.center[-2:]
        assert abs(center[0] - (h - 1) / 2) < 1 and abs(center[1] - (w - 1) / 2) < 1, (name, center)
        zooms[name] = s.viewer.camera.zoom
        pts = s.layers.points
        assert tuple(pts.canvas_size_limits) == (POINT_SCREEN_PX, POINT_SCREEN_PX)
        # POINT_SCREEN_PX on screen: its size in image pixels follows the zoom
        assert pts.current_size * s.viewer.camera.zoom == pytest.approx(POINT_SCREEN_PX, rel=1e-5)
    assert zooms["small.png"] > 5 * zooms["big.png"]  # the small image is not a speck in a corner


def test_after_the_relation_overlay_the_point_layer_is_selected(studio, qtbot):
    s, c, overlay = studio.session, studio.prompts, studio.adapt_panel.relation_overlay
    assert s.viewer.layers.selection.active is s.layers.points
    overlay.wanted = True
    overlay._show(np.random.default_rng(1).random(s.rgb.shape[:2]))  # as a computed map is shown
    assert s.viewer.layers.selection.active is s.layers.points
    overlay.set_visible(False)
    assert s.viewer.layers.selection.active is s.layers.points and s.layers.points.mode == "add"
    # a click on the canvas goes to the selected layer in "add" mode: it adds a prompt
    s.layers.points.add([[10.0, 12.0]])
    qtbot.waitUntil(lambda: c.prompt_count == 1, timeout=5_000)


def test_point_prompts_keep_their_screen_size_and_are_found_only_where_drawn(studio, qtbot):
    """Zooming resizes the points (in image pixels) so that they stay POINT_SCREEN_PX wide on screen, and what napari
    finds under the mouse (hover, select mode) is a point only where one is drawn -- not anywhere on the image, as
    with the former huge size clamped on screen."""
    s, c = studio.session, studio.prompts
    h, w = s.rgb.shape[:2]
    pts = s.layers.points
    pts.add([[h / 2, w / 2]])
    qtbot.waitUntil(lambda: c.prompt_count == 1, timeout=5_000)
    pts.add([[h / 4, w / 4]])
    qtbot.waitUntil(lambda: c.prompt_count == 2, timeout=5_000)
    for factor in (1.0, 3.0, 0.5):
        s.viewer.camera.zoom = s.viewer.camera.zoom * factor
        zoom = s.viewer.camera.zoom
        assert np.allclose(pts.size * zoom, POINT_SCREEN_PX, rtol=1e-5), factor
        assert pts.current_size * zoom == pytest.approx(POINT_SCREEN_PX, rel=1e-5)
        assert pts.get_value((h / 2, w / 2)) == 0
        assert pts.get_value((h / 4, w / 4)) == 1
        # a few screen pixels beyond a point's edge: no point there
        off = (POINT_SCREEN_PX / 2 + 3) / zoom
        assert pts.get_value((h / 2 + off, w / 2)) is None, factor
        assert pts.get_value((3 * h / 4, 3 * w / 4)) is None, factor
