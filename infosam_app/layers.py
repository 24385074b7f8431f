"""The napari layers one studio owns: image, accepted objects, mask preview, box and point prompts.

Layers are created on first use and re-created if the user deletes one; their order is fixed (image at
the bottom, prompts on top). Coordinates are napari's (row, col) in image pixels; conversion to SAM's
(x, y) happens in :mod:`infosam_app.prompting`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from infosam_core.io.pyramid import pyramid_levels

if TYPE_CHECKING:  # pragma: no cover
    import napari

POSITIVE_COLOR = "#39ff14"
NEGATIVE_COLOR = "#ff2a2a"
PREVIEW_COLOR = "#00e5ff"
BOX_COLOR = "#ffd400"
# accepted objects cycle through these; no cyan, so that the preview always stands out
OBJECT_COLORS = [
    "#e6194b",
    "#f58231",
    "#911eb4",
    "#3cb44b",
    "#f032e6",
    "#4363d8",
    "#9a6324",
    "#bcf60c",
    "#800000",
    "#fabebe",
    "#808000",
    "#e6beff",
]

POINT_SCREEN_PX = 12  # point prompts are drawn this many screen pixels wide, whatever the image size or zoom

IMAGE_NAME = "image"
OBJECTS_NAME = "objects"
PREVIEW_NAME = "mask preview"
BOX_NAME = "box prompt"
POINTS_NAME = "point prompts"
PROPOSALS_NAME = "proposals"


Bounds = tuple[slice, slice]  # (rows, cols) of a 2-D array


def mask_bounds(mask: np.ndarray) -> Bounds | None:
    """The bounding box of ``mask``'s nonzero pixels as (rows, cols) slices; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def whole(shape: tuple[int, ...]) -> Bounds:
    return slice(0, int(shape[0])), slice(0, int(shape[1]))


def union_bounds(a: Bounds | None, b: Bounds | None) -> Bounds | None:
    """The smallest box holding boxes ``a`` and ``b`` (None: no box)."""
    if a is None or b is None:
        return a if b is None else b
    return (
        slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
        slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)),
    )


def _refresh_region(layer, region: Bounds) -> bool:
    """Send ``region`` of a 2-D Labels layer's data (already written, in place) to its texture: what napari's own
    brush does (``Labels._partial_labels_refresh``: that region's colours only, no slicing of the whole array,
    no thumbnail). False when this napari has no partial refresh, or the layer's displayed slice is not a view
    of its data (then the caller refreshes the whole layer)."""
    image = getattr(getattr(layer, "_slice", None), "image", None)
    refresh = getattr(layer, "_partial_labels_refresh", None)
    if image is None or refresh is None or not hasattr(layer, "_updated_slice"):
        return False
    if not (np.shares_memory(image.raw, layer.data) and image.raw.shape == layer.data.shape):
        return False
    rows, cols = region
    if not np.shares_memory(image.view, layer.data):  # the colours the texture holds: a converted copy
        image.view[rows, cols] = layer.colormap._data_to_texture(image.raw[rows, cols])
    layer._updated_slice = (rows, cols)
    refresh()
    return True


class StudioLayers:
    """Creates, finds and updates the studio's layers in one viewer."""

    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.image = None
        self.objects = None
        self.preview = None
        self.box = None
        self.points = None
        self.proposals = None  # "Segment all": one label per proposal (created on first use)
        # (the preview layer's array, the bounding box of its nonzero pixels): only that box is cleared next time
        self._preview_bounds: tuple[np.ndarray, Bounds | None] | None = None
        self.partial_preview = True  # False: every preview change refreshes the whole layer (benchmarks compare)
        self.on_created = []  # callbacks(layer): the prompt controller wires events and keys
        viewer.camera.events.zoom.connect(self._on_zoom)

    def close(self) -> None:
        """Stop following the camera (the widget is closing)."""
        with contextlib.suppress(Exception):  # already disconnected or the viewer is gone
            self.viewer.camera.events.zoom.disconnect(self._on_zoom)

    def _on_zoom(self, _event=None) -> None:
        self.size_points()

    # ---- helpers
    def alive(self, layer) -> bool:
        return layer is not None and layer in self.viewer.layers

    def _emit_created(self, layer) -> None:
        for cb in self.on_created:
            cb(layer)

    # ---- image
    def show_image(self, raw: np.ndarray, rgb: np.ndarray, name: str, levels: list[np.ndarray] | None = None) -> None:
        """Show the image as SAM sees it: the RGB uint8 conversion (16-bit and float images are scaled by
        :func:`infosam_core.io.images.to_rgb_uint8`; the raw array stays in ``layer.metadata["raw"]``).

        A large image (longer side above :data:`~infosam_core.io.pyramid.DISPLAY_MAX_SIDE`) is shown as a
        multiscale layer: full resolution first, then 2 x 2 block means until a level fits the screen
        (:func:`~infosam_core.io.pyramid.pyramid_levels`), so zoomed out napari draws a small level. Level 0 is
        the image: every other layer and every prompt keeps full-resolution pixel coordinates. ``levels``: that
        pyramid when already computed (the session computes it in the background with the image's read).

        One RGB layer is kept and its data replaced: removing a napari layer runs a full ``gc.collect()``
        (measured ~0.5 s with torch loaded), which would stall the GUI on every image change. Only a switch
        between a plain and a multiscale image re-creates it (napari fixes ``multiscale`` when a layer is made).
        """
        if levels is None or levels[0] is not rgb:
            levels = pyramid_levels(rgb)
        multiscale = len(levels) > 1
        old_shape = self.image_shape() if self.alive(self.image) else None
        if self.alive(self.image) and bool(self.image.multiscale) != multiscale:
            self.viewer.layers.remove(self.image)
            self.image = None
        if self.alive(self.image):
            self.image.data = levels if multiscale else rgb
            self.image.name = name
            self.image.contrast_limits = (0, 255)
        else:
            data = levels if multiscale else rgb
            self.image = self.viewer.add_image(
                data, name=name, rgb=True, multiscale=multiscale, contrast_limits=(0, 255)
            )
            self.viewer.layers.move(self.viewer.layers.index(self.image), 0)
            self._emit_created(self.image)
        self.image.metadata["infosam_role"] = "image"
        self.image.metadata["raw"] = raw
        shape = rgb.shape[:2]
        self.ensure_prompt_layers(shape)
        self.size_points()
        if old_shape != shape:
            self.fit_view(shape)

    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the image shown, at full resolution (level 0 of a multiscale image)."""
        data = self.image.data[0] if self.image.multiscale else self.image.data
        return tuple(data.shape[:2])

    def fit_view(self, shape: tuple[int, int]) -> None:
        """Fit the image to the canvas, centred. Only the image layer counts: the objects and preview layers
        still have the previous image's size at this point (and a relation map may too), and fitting all
        layers left a small image in a corner after a larger one."""
        try:
            self.viewer.reset_view(layers=[self.image])
        except TypeError:  # a napari whose reset_view fits every layer
            self.viewer.reset_view()

    def size_points(self) -> None:
        """Point prompts :data:`POINT_SCREEN_PX` screen pixels wide at any zoom: their size in image pixels is
        that divided by the camera's zoom, set again on every zoom change. What napari takes for a point when the mouse hovers or selects (its size in image pixels) is
        then what is drawn: a huge size clamped on screen by ``canvas_size_limits`` drew right, but put every
        position of the image "on" the newest point (select mode always grabbed it) and showed a point size of
        thousands in the layer controls. The limits stay as a guard between a zoom and its event."""
        size = self._point_size()
        if not self.alive(self.points) or size is None:
            return
        layer = self.points
        if np.isclose(float(layer.current_size), size, rtol=1e-6) and (
            not len(layer.data) or np.allclose(layer.size, size, rtol=1e-6)
        ):
            return
        layer.current_size = size
        if len(layer.data):
            layer.size = size

    def _point_size(self) -> float | None:
        """:data:`POINT_SCREEN_PX` in image pixels at the camera's zoom (None while the zoom is not a usable number)."""
        zoom = float(self.viewer.camera.zoom)
        return POINT_SCREEN_PX / zoom if np.isfinite(zoom) and zoom > 0 else None

    def show_nothing(self) -> None:
        """No image (an empty project): blank the image and every overlay."""
        if self.alive(self.image):
            blank = np.zeros((1, 1, 3), np.uint8)
            self.image.data = [blank, blank] if self.image.multiscale else blank
            self.image.name = IMAGE_NAME
        for layer in (self.objects, self.preview):
            if self.alive(layer):
                layer.data = np.zeros((1, 1), layer.data.dtype)

    # ---- labels
    def ensure_prompt_layers(self, shape: tuple[int, int]) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        if not self.alive(self.objects):
            from napari.utils.colormaps import CyclicLabelColormap

            self.objects = self.viewer.add_labels(
                np.zeros(shape, np.uint16),
                name=OBJECTS_NAME,
                opacity=0.5,
                colormap=CyclicLabelColormap(colors=["transparent", *OBJECT_COLORS], background_value=0),
            )
            # edited through prompts only (accept / refine / delete, all saved): napari's brush would
            # change pixels the project does not know about
            self.objects.editable = False
            self._emit_created(self.objects)
        if not self.alive(self.preview):
            self.preview = self.viewer.add_labels(
                np.zeros(shape, np.uint8),
                name=PREVIEW_NAME,
                opacity=0.55,
                colormap=DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: PREVIEW_COLOR}),
            )
            self.preview.editable = False
            self._emit_created(self.preview)
        if not self.alive(self.box):
            self.box = self.viewer.add_shapes(
                name=BOX_NAME,
                ndim=2,
                edge_color=BOX_COLOR,
                face_color="transparent",
                edge_width=2,
            )
            self.box.current_edge_color = BOX_COLOR
            self.box.current_face_color = "transparent"
            self._emit_created(self.box)
        if not self.alive(self.points):
            self.points = self.viewer.add_points(
                np.empty((0, 2)),
                name=POINTS_NAME,
                ndim=2,
                size=self._point_size() or POINT_SCREEN_PX,
                canvas_size_limits=(POINT_SCREEN_PX, POINT_SCREEN_PX),
                border_color="white",
                border_width=0.1,
                features={"label": np.empty(0, dtype=int)},
                face_color=POSITIVE_COLOR,
            )
            self.points.feature_defaults = {"label": 1}
            self._emit_created(self.points)

    def set_objects(self, labels: np.ndarray, colors: dict[int, str] | None = None) -> None:
        """Show the accepted objects; ``colors`` (object id -> colour, e.g. its category's) instead of the
        cycling colours."""
        from napari.utils.colormaps import CyclicLabelColormap, DirectLabelColormap

        self.ensure_prompt_layers(labels.shape)
        self.objects.data = labels
        if colors is not None:
            self.objects.colormap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", **colors})
        elif isinstance(self.objects.colormap, DirectLabelColormap):
            self.objects.colormap = CyclicLabelColormap(colors=["transparent", *OBJECT_COLORS], background_value=0)
        self.objects.refresh()

    def set_preview(self, mask: np.ndarray | None, shape: tuple[int, int] | None = None) -> None:
        """Show ``mask`` (bool H x W; None: nothing) in the preview layer.

        Only the bounding box of the old and the new mask is written, in place, and only that region of the
        layer's texture is sent (napari's partial labels refresh, as its brush does), where a full ``refresh()``
        re-slices and re-maps the whole array, re-sends the whole texture and redraws the layer list's thumbnail
        (``benchmarks/bench_app_responsiveness.py``: preview update). The preview's thumbnail is left as it is.
        """
        if mask is None:
            shape = shape or (self.preview.data.shape if self.alive(self.preview) else None)
            if shape is None:
                return
            self.ensure_prompt_layers(shape)
            if self.preview.data.shape != tuple(shape) or self.preview.data.dtype != np.uint8:
                self._replace_preview(np.zeros(shape, np.uint8), None)
            else:
                self._update_preview(None)
            return
        self.ensure_prompt_layers(mask.shape)
        if self.preview.data.shape == mask.shape and self.preview.data.dtype == np.uint8:
            self._update_preview(mask)
        else:
            self._replace_preview(mask.astype(np.uint8), mask_bounds(mask))

    def _replace_preview(self, data: np.ndarray, bounds: Bounds | None) -> None:
        self.preview.data = data
        self._preview_bounds = (self.preview.data, bounds)  # napari may keep another array than the one given

    def _update_preview(self, mask: np.ndarray | None) -> None:
        """Write ``mask`` into the preview layer's array in place, touching the changed region only."""
        data = self.preview.data
        known = self._preview_bounds
        old = known[1] if known is not None and known[0] is data else whole(data.shape)  # unknown: all of it
        new = mask_bounds(mask) if mask is not None else None
        self._preview_bounds = (data, new)
        if not self.partial_preview:
            if mask is not None or old is not None:
                data[...] = 0 if mask is None else mask
                self.preview.refresh()
            return
        region = union_bounds(old, new)
        if region is None:
            return  # empty before and after
        rows, cols = region
        data[rows, cols] = 0 if mask is None else mask[rows, cols]
        if not _refresh_region(self.preview, region):
            self.preview.refresh()

    def set_proposals(self, labels: np.ndarray):
        """Show "Segment all" proposals (0 none, i + 1 proposal i) above the objects; returns the layer."""
        if not self.alive(self.proposals):
            if not labels.any():
                return None
            from napari.utils.colormaps import CyclicLabelColormap

            self.proposals = self.viewer.add_labels(
                labels,
                name=PROPOSALS_NAME,
                opacity=0.4,
                colormap=CyclicLabelColormap(colors=["transparent", *OBJECT_COLORS[::-1]], background_value=0),
            )
            self.proposals.editable = False  # reviewed by clicks (reject) and buttons, never painted
            # below the prompt layers, so that clicks for prompts still reach them
            self.viewer.layers.move(
                self.viewer.layers.index(self.proposals), self.viewer.layers.index(self.objects) + 1
            )
            self._emit_created(self.proposals)
            return self.proposals
        self.proposals.data = labels
        self.proposals.refresh()
        return self.proposals
