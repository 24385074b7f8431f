"""The relation-map overlay: the adapted model's InfoSAM relation map of the current image as a napari Image
layer the user toggles (Adapt panel, "Show relation map").

The map is :func:`infosam_core.evaluation.relation_maps.relation_maps_for_box` of the adapted model (its
relation module, student features and mask token) for the current box prompt, or the whole image when there
is none, brought to the image's pixels (:func:`~infosam_core.evaluation.relation_maps.upsample_map`). It is
computed in the session's background task runner and recomputed when the image or the adapted model
changes while the overlay is on. Only an adapted model trained with InfoSAM has a relation module.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QObject, Signal

from infosam_app.session import Session

LAYER_NAME = "relation map"


def _relation_map_job(base_sam, adapted_sam, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    from infosam_core.evaluation.relation_maps import relation_maps_for_box, upsample_map

    pair = relation_maps_for_box(base_sam, adapted_sam, image, box)
    return upsample_map(pair.student, image.shape[:2])


class RelationOverlay(QObject):
    """Shows / hides the relation-map layer; ``available`` says whether the adapted model has a relation module."""

    changed = Signal()  # shown, hidden, computed or no longer available

    def __init__(self, session: Session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.layer = None
        self.wanted = False
        self._generation = 0
        self.computing = False
        session.image_changed.connect(lambda _index: self._refresh())
        session.model_changed.connect(self._on_model_changed)

    @property
    def available(self) -> bool:
        from infosam_core.evaluation.relation_maps import has_relation_module

        adapted = self.session.sams.get("adapted")
        return adapted is not None and has_relation_module(adapted)

    @property
    def shown(self) -> bool:
        return self.layer is not None and self.layer in self.session.viewer.layers

    def set_visible(self, on: bool) -> None:
        self.wanted = bool(on)
        if self.wanted:
            self._refresh()
        else:
            self._remove()
        self.changed.emit()

    def current_box(self) -> np.ndarray:
        """The box prompt on the canvas (XYXY, image pixels), or the whole image."""
        h, w = self.session.rgb.shape[:2]
        box_layer = self.session.layers.box
        if self.session.layers.alive(box_layer) and len(box_layer.data):
            corners = np.asarray(box_layer.data[-1])[:, -2:]  # (4, 2) rows, cols
            (y0, x0), (y1, x1) = corners.min(axis=0), corners.max(axis=0)
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                return np.array([max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1)], dtype=np.float64)
        return np.array([0, 0, w - 1, h - 1], dtype=np.float64)

    def _on_model_changed(self) -> None:
        if not self.available:
            self.wanted = False
            self._remove()
            self.changed.emit()
        else:
            self._refresh()

    def _refresh(self) -> None:
        s = self.session
        if not self.wanted or not self.available or s.rgb is None:
            return
        self._generation += 1
        generation, image = self._generation, s.rgb
        self.computing = True
        s.tell("Computing the relation map …")

        def done(values: np.ndarray) -> None:
            if generation != self._generation or not self.wanted:
                return
            self.computing = False
            self._show(values)
            s.tell("Relation map of the adapted model (InfoSAM's relation module) shown")
            self.changed.emit()

        def failed(exc: BaseException) -> None:
            if generation == self._generation:
                self.computing = False
                s.fail(f"Cannot compute the relation map: {exc}")
                self.changed.emit()

        s.tasks.run(
            _relation_map_job,
            s.sams["base"],
            s.sams["adapted"],
            image,
            self.current_box(),
            name="relation map",
            on_result=done,
            on_error=failed,
        )

    def _show(self, values: np.ndarray) -> None:
        lo, hi = float(values.min()), float(values.max())
        limits = (lo, hi if hi > lo else lo + 1e-6)
        if self.shown:
            self.layer.data = values
            self.layer.contrast_limits = limits
        else:
            selected = self.session.viewer.layers.selection.active
            self.layer = self.session.viewer.add_image(
                values, name=LAYER_NAME, colormap="inferno", opacity=0.5, blending="translucent", contrast_limits=limits
            )
            self.layer.metadata["infosam_role"] = "relation_map"
            self._select_prompt_layer(selected)  # napari selects a new layer: clicks would no longer add prompts

    def _remove(self) -> None:
        self._generation += 1
        self.computing = False
        if self.shown:
            selected = self.session.viewer.layers.selection.active
            self.session.viewer.layers.remove(self.layer)
            self._select_prompt_layer(None if selected is self.layer else selected)
        self.layer = None

    def _select_prompt_layer(self, previous) -> None:
        """Select ``previous`` again if it is still there, else the point prompts layer (in "add" mode), so
        that the next click on the image adds a prompt."""
        layers = self.session.layers
        viewer = self.session.viewer
        if previous is not None and previous in viewer.layers and previous is not self.layer:
            viewer.layers.selection.active = previous
            return
        points = layers.points
        if layers.alive(points):
            viewer.layers.selection.active = points
            points.mode = "add"
