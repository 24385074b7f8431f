"""The mask preview layer is updated in the changed region only (issue 29, click -> drawn)."""

from __future__ import annotations

import traceback

import numpy as np
import pytest

from infosam_app.layers import mask_bounds, union_bounds


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_mask_bounds_and_union():
    mask = np.zeros((10, 12), bool)
    assert mask_bounds(mask) is None
    mask[2:5, 7:9] = True
    mask[6, 3] = True
    assert mask_bounds(mask) == (slice(2, 7), slice(3, 9))
    a, b = (slice(1, 3), slice(4, 6)), (slice(5, 8), slice(0, 2))
    assert union_bounds(a, b) == (slice(1, 8), slice(0, 6))
    assert union_bounds(None, b) == b and union_bounds(a, None) == a and union_bounds(None, None) is None


@pytest.mark.gui
def test_preview_updates_only_the_changed_region(make_napari_viewer, monkeypatch):
    pytest.importorskip("napari")
    from infosam_app.layers import StudioLayers

    layers = StudioLayers(make_napari_viewer())
    shape = (300, 400)
    layers.set_preview(None, shape)
    layer = layers.preview
    full_refreshes = []
    monkeypatch.setattr(layer, "refresh", lambda *a, **k: full_refreshes.append(traceback.format_stack()[-4:-1]))
    partial = []
    original = layer.events.labels_update
    layer.events.labels_update.connect(lambda event: partial.append((event.offset, event.data.shape)))

    masks = [_disc(shape, 100, 120, 30), _disc(shape, 200, 300, 20), _disc(shape, 205, 300, 22)]
    for mask in masks:
        layers.set_preview(mask, shape)
        np.testing.assert_array_equal(layer.data.astype(bool), mask)
        # what the canvas shows: the layer's displayed slice follows the data
        np.testing.assert_array_equal(np.asarray(layer._slice.image.raw).astype(bool), mask)
    # the second mask's region: the box around the old disc and the new one, never the whole image
    (r0, c0), (h, w) = partial[1]
    assert (r0, c0) == (70, 90) and (h, w) == (151, 231)
    # the third differs from the second by a ring: a box around the two discs only
    assert partial[2][1] == (48, 45)
    layers.set_preview(None, shape)
    assert not layer.data.any()
    layers.set_preview(None, shape)  # already empty: nothing to do
    assert len(partial) == 4
    # no full refresh of ours; napari's canvas falls back to one only where its texture is not the data's size
    # (offscreen Qt has no OpenGL: the texture is never made there)
    assert all("_on_partial_labels_update" in "".join(stack) for stack in full_refreshes)
    assert original is layer.events.labels_update


@pytest.mark.gui
def test_preview_of_another_size_replaces_the_array(make_napari_viewer):
    pytest.importorskip("napari")
    from infosam_app.layers import StudioLayers

    layers = StudioLayers(make_napari_viewer())
    layers.set_preview(_disc((50, 60), 20, 20, 10), (50, 60))
    small = _disc((40, 30), 10, 10, 5)
    layers.set_preview(small, (40, 30))
    np.testing.assert_array_equal(layers.preview.data.astype(bool), small)
    layers.show_nothing()  # a new (1, 1) array: its bounds are not known, so the next change covers it all
    layers.set_preview(np.ones((1, 1), bool))
    assert layers.preview.data.tolist() == [[1]]
    layers.partial_preview = False  # the full refresh benchmarks compare with
    layers.set_preview(np.zeros((1, 1), bool))
    assert layers.preview.data.tolist() == [[0]]
