"""Interactive prompting: points and a box in, a live mask preview out; accept, undo, refine.

:class:`PromptController` reads prompts from the studio's napari layers (napari (row, col) -> SAM (x, y)),
predicts with the session's active :class:`~infosam_core.inference.predictor.Predictor` on the GUI thread (only the
prompt encoder and mask decoder run: milliseconds), and writes accepted objects through the session's
project (saved at once). It never computes embeddings: the session does that in the background and says
when one is ready; prompts given before that are predicted as soon as it is.

The state between two key presses (prompt history, mode, next label, candidate choice, decoder outputs, the
refined object) is a Qt-free :class:`~infosam_app.state.prompts.PromptState`, where the candidate rules are
written; this controller moves prompts between it and the napari layers, predicts and emits signals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QObject, Signal

from infosam_app.layers import NEGATIVE_COLOR, POSITIVE_COLOR
from infosam_app.objects import ObjectEditor
from infosam_app.session import Session
from infosam_app.shortcuts import SHORTCUTS
from infosam_app.state.prompts import OutputKind, PromptMode, PromptState, candidate_text, prompts_from_layers
from infosam_app.workers import gui_torch_threads
from infosam_core.annotation.records import AnnotatedObject, ObjectPrompts


class PromptController(QObject):
    """Prompts -> mask preview -> accepted objects, for the session's current image."""

    state_changed = Signal()  # mode, next label, candidate, refine target or prompt count changed
    mask_shown = Signal()  # a new preview is on the layer (latency measurements hook here)

    def __init__(self, session: Session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.layers = session.layers
        self.state = PromptState()
        self.objects = ObjectEditor(session)
        self._updating = False
        self._bound_viewer_keys: list[str] = []
        self.layers.on_created.append(self._wire_layer)
        session.image_changed.connect(self._on_image_changed)
        session.embedding_changed.connect(self._on_embedding_changed)
        session.model_changed.connect(self._on_model_changed)
        self._bind_viewer_keys()

    # ------------------------------------------------------------------------------------------ state views
    @property
    def mode(self) -> PromptMode:
        """The prompt mode: "points" or "box"."""
        return self.state.mode

    @property
    def next_label(self) -> int:
        """The label of the next point: 1 positive, 0 negative."""
        return self.state.next_label

    @property
    def candidate(self) -> int | None:
        """The candidate shown: None = the single-mask output, k = multimask output k."""
        return self.state.candidate

    @property
    def refine_id(self) -> int | None:
        """The accepted object an accept replaces (None: an accept adds a new object)."""
        return self.state.refine_id

    @refine_id.setter
    def refine_id(self, value: int | None) -> None:
        self.state.refine_id = value

    # ------------------------------------------------------------------------------------------ wiring
    def _actions(self) -> dict[str, Callable[[], object]]:
        return {
            "accept": self.accept,
            "clear": self.clear,
            "undo": self.undo,
            "toggle_label": self.toggle_label,
            "toggle_mode": self.toggle_mode,
            "next_candidate": self.next_candidate,
            "refine": self.refine,
            "delete": self.delete_object,
            "toggle_model": self.toggle_model,
            "next_category": self.session.next_category,
            "set_category": self.set_object_category,
            "next_image": lambda: self.session.next_image(1),
            "previous_image": lambda: self.session.next_image(-1),
        }

    def _bind(self, target, bound: list[str] | None = None) -> None:
        for name, fn in self._actions().items():
            for key in SHORTCUTS[name][0]:
                target.bind_key(key, lambda _target, fn=fn: fn(), overwrite=True)
                if bound is not None:
                    bound.append(key)

    def _bind_viewer_keys(self) -> None:
        self._bind(self.session.viewer, self._bound_viewer_keys)

    def unbind(self) -> None:
        """Remove the viewer-level key bindings (the widget is closing)."""
        for key in self._bound_viewer_keys:
            with contextlib.suppress(Exception):  # a closed viewer
                self.session.viewer.bind_key(key, None)
        self._bound_viewer_keys.clear()

    def _wire_layer(self, layer) -> None:
        self._bind(layer)  # our keys win over the layer type's defaults while it is selected
        if layer is self.layers.points:
            layer.events.data.connect(self._on_points_event)
            layer.mode = "add"
            self._apply_label_default()
        elif layer is self.layers.box:
            layer.events.data.connect(self._on_box_event)
            layer.mode = "add_rectangle"

    # ------------------------------------------------------------------------------------------ prompts
    def current_prompts(self) -> ObjectPrompts:
        """The prompts on the layers, in SAM's (x, y) pixel convention, clipped to the image."""
        shape = self.session.rgb.shape[:2] if self.session.rgb is not None else None
        points, labels = np.empty((0, 2)), None
        pl = self.layers.points
        if self.layers.alive(pl) and len(pl.data):
            points = np.asarray(pl.data)
            labels = pl.features["label"].to_numpy() if "label" in pl.features else None
        bl = self.layers.box
        box = np.asarray(bl.data[-1]) if self.layers.alive(bl) and len(bl.data) else None
        return prompts_from_layers(points, labels, box, shape, candidate=self.candidate)

    @property
    def prompt_count(self) -> int:
        p = self.current_prompts()
        return len(p.points) + (p.box is not None)

    def set_prompts(self, prompts: ObjectPrompts, record: bool = True) -> None:
        """Put ``prompts`` on the layers (replacing what is there) and predict."""
        self._write_layers(prompts)
        self._prompts_changed(record=record, candidate=prompts.candidate, keep_candidate=True)

    def add_point(self, x: float, y: float, positive: bool | None = None) -> None:
        """Add a point prompt at pixel (x, y) (as a click would); label = ``positive`` or the next label."""
        label = self.next_label if positive is None else int(bool(positive))
        self._ensure_layers()
        pl = self.layers.points
        self._updating = True
        try:
            data = np.concatenate([np.asarray(pl.data).reshape(-1, 2), [[y, x]]])
            labels = np.concatenate([self._point_labels(), [label]]).astype(int)
            pl.data = data
            pl.features = {"label": labels}
            self._color_points()
        finally:
            self._updating = False
        self._prompts_changed()

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Set the box prompt (as a drag would)."""
        self._ensure_layers()
        bl = self.layers.box
        self._updating = True
        try:
            bl.data = [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)]
            bl.shape_type = ["rectangle"]
        finally:
            self._updating = False
        self._prompts_changed()

    def _ensure_layers(self) -> None:
        """Re-create prompt layers the user deleted (napari lets them)."""
        shape = self.session.rgb.shape[:2] if self.session.rgb is not None else (1, 1)
        self.layers.ensure_prompt_layers(shape)

    def _point_labels(self) -> np.ndarray:
        pl = self.layers.points
        if pl is None or "label" not in pl.features or len(pl.features) != len(pl.data):
            return np.ones(0 if pl is None else len(pl.data), int)
        return pl.features["label"].to_numpy().astype(int)

    def _write_layers(self, prompts: ObjectPrompts) -> None:
        """Put ``prompts`` on the point and box layers (an unchanged layer is not touched: every napari
        data assignment costs tens of ms of GUI time)."""
        shape = self.session.rgb.shape[:2] if self.session.rgb is not None else (1, 1)
        self.layers.ensure_prompt_layers(shape)
        self._updating = True
        try:
            pl, bl = self.layers.points, self.layers.box
            if prompts.points:
                pts = np.asarray(prompts.points, dtype=float)
                pl.selected_data = set()
                pl.data = pts[:, [1, 0]]
                pl.features = {"label": pts[:, 2].astype(int)}
            elif len(pl.data):
                pl.selected_data = set()
                pl.data = np.empty((0, 2))
                pl.features = {"label": np.empty(0, dtype=int)}
            self._color_points()
            if prompts.box is not None:
                x0, y0, x1, y1 = prompts.box
                bl.selected_data = set()
                bl.data = [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)]
                bl.shape_type = ["rectangle"]
            elif len(bl.data):
                bl.selected_data = set()
                bl.data = []
        finally:
            self._updating = False
        self._apply_label_default()

    def _color_points(self) -> None:
        pl = self.layers.points
        if pl is None or not len(pl.data):
            return
        labels = self._point_labels()
        if len(labels) == len(pl.data):
            pl.face_color = [POSITIVE_COLOR if lab else NEGATIVE_COLOR for lab in labels]

    def _apply_label_default(self) -> None:
        pl = self.layers.points
        if pl is None:
            return
        color = POSITIVE_COLOR if self.next_label else NEGATIVE_COLOR
        if int(pl.feature_defaults["label"].iloc[0]) == self.next_label and not pl.selected_data:
            return
        self._updating = True
        try:
            pl.selected_data = set()  # the current colour would otherwise repaint selected points
            pl.feature_defaults = {"label": self.next_label}
            pl.current_face_color = color
        finally:
            self._updating = False

    def _on_points_event(self, event) -> None:
        if self._updating or getattr(event, "action", None) not in ("added", "removed", "changed"):
            return
        self._updating = True
        try:
            self._color_points()
        finally:
            self._updating = False
        self._prompts_changed()

    def _on_box_event(self, event) -> None:
        if self._updating or getattr(event, "action", None) not in ("added", "removed", "changed"):
            return
        bl = self.layers.box
        if len(bl.data) > 1:  # one box at a time: the newest wins
            self._updating = True
            try:
                bl.data = [np.asarray(bl.data[-1])]
                bl.shape_type = ["rectangle"]
            finally:
                self._updating = False
        self._prompts_changed()

    def _prompts_changed(self, record: bool = True, candidate: int | None = None, keep_candidate: bool = False) -> None:
        prompts = self.current_prompts()
        if keep_candidate:
            prompts.candidate = candidate
        self.state.prompts_changed(prompts, record=record, keep_candidate=keep_candidate)
        self.predict()
        self.state_changed.emit()

    # ------------------------------------------------------------------------------------------ predict
    def predict(self) -> np.ndarray | None:
        """Predict the mask of the current prompts with the active model and show it (None if no prompt)."""
        prompts = self.current_prompts()
        session = self.session
        if prompts.empty or session.rgb is None:
            self._show(None)
            return None
        if not session.embedding_ready:
            session.tell("Prompts noted; the mask appears when the image embedding is ready ...")
            return None
        try:
            masks, scores = self._output(self.state.output_kind(prompts), prompts)
            mask = self.state.pick_mask(masks, scores)
        except Exception as exc:  # noqa: BLE001 - a bad prompt or model must not break the app
            session.fail(f"Prediction failed: {exc}")
            return None
        self._show(mask)
        return mask

    def _output(self, kind: OutputKind, prompts: ObjectPrompts) -> tuple[np.ndarray, np.ndarray]:
        predictor = self.session.predictor
        tiled = self.session.tiled_predictor()  # a large image: answered from its tiles, at native resolution
        embedding = predictor.embedding
        tag = (
            id(predictor),
            getattr(predictor, "resolved_precision", None),  # a precision change keeps the tiled predictor
            id(tiled) if tiled is not None else embedding.key if embedding is not None else None,
        )
        cached = self.state.cached_output(kind, tag)
        if cached is not None:
            return cached
        with gui_torch_threads():
            masks, scores, _ = (tiled or predictor).predict(
                point_coords=prompts.point_coords(),
                point_labels=prompts.point_labels(),
                box=prompts.box_array(),
                multimask_output=(kind == "multi"),
            )
        self.state.store_output(kind, masks, scores)
        return masks, scores

    def _show(self, mask: np.ndarray | None) -> None:
        self.state.mask = mask
        shape = self.session.rgb.shape[:2] if self.session.rgb is not None else None
        self.layers.set_preview(mask, shape)
        self.mask_shown.emit()

    @property
    def mask(self) -> np.ndarray | None:
        """The mask shown in the preview (bool H x W) or None."""
        return self.state.mask

    def next_candidate(self) -> None:
        """Cycle SAM's candidates: single output (when prompts are several), then multimask 0, 1, 2."""
        if not self.state.next_candidate(self.current_prompts()):
            return
        self.predict()
        self.state_changed.emit()
        self.session.tell(f"Candidate mask: {candidate_text(self.candidate)}")

    # ------------------------------------------------------------------------------------------ commands
    def toggle_label(self) -> None:
        self.state.toggle_label()
        self._apply_label_default()
        self.state_changed.emit()
        self.session.tell(f"Next point: {'positive' if self.next_label else 'negative'}")

    def set_mode(self, mode: str) -> None:
        self.state.set_mode(mode)
        layer = self.layers.points if mode == "points" else self.layers.box
        if layer is not None:
            self.session.viewer.layers.selection.active = layer
            layer.mode = "add" if mode == "points" else "add_rectangle"
        self.state_changed.emit()

    def toggle_mode(self) -> None:
        self.set_mode("box" if self.mode == "points" else "points")

    def clear(self) -> None:
        """Remove every prompt and leave refine mode (accepted objects stay)."""
        refining = self.state.refine_id
        self.state.clear()
        self._write_layers(ObjectPrompts())
        self._show(None)
        self.state_changed.emit()
        if refining is not None:  # the "Refining object N ..." line must not stay up
            self.session.tell(f"Stopped refining object {refining}; it is unchanged.")

    def accept(self) -> AnnotatedObject | None:
        """Save the previewed mask as a new object (or as the refined object's new shape); saved at once."""
        pending = self.state.pending_accept(self.current_prompts())
        if pending is None or self.session.key is None:
            self.session.tell("Nothing to accept: add a prompt first.")
            return None
        replaced = pending.replace_id is not None
        obj = self.objects.accept(pending.mask, pending.prompts, replace_id=pending.replace_id)
        if obj is None:
            return None
        self.clear()
        self.session.tell(f"{'Replaced' if replaced else 'Accepted'} object {obj.id} ({obj.area} px); saved.")
        return obj

    def undo(self) -> None:
        """Undo the last prompt; with no prompt left, undo the last object change on this image."""
        previous = self.state.undo()
        if previous is not None:
            self._write_layers(previous)
            self.predict()
            self.state_changed.emit()
            return
        self.objects.undo()

    def object_under_cursor(self) -> int | None:
        return self.objects.under_cursor()

    def proposal_under_cursor(self) -> bool:
        """Whether a "Segment all" proposal is under the mouse."""
        layer = self.layers.proposals
        if not self.layers.alive(layer):
            return False
        try:
            value = layer.get_value(self.session.viewer.cursor.position, world=True)
        except Exception:  # noqa: BLE001 - no image yet, or the cursor outside it
            return False
        return bool(value)

    def refine(self, object_id: int | None = None) -> bool:
        """Bring back an object's prompts (default: the accepted object under the mouse, and only that one:
        over a proposal or the background nothing is touched); accepting then replaces it."""
        project, key = self.session.project, self.session.key
        if project is None or key is None:
            return False
        ann = project.annotations(key)
        if object_id is None:
            object_id = self.object_under_cursor()
        if object_id is None or object_id not in ann.objects:
            if self.proposal_under_cursor():
                self.session.tell(
                    "R refines accepted objects; this is a proposal: click it to reject it, or Accept all first."
                )
            else:
                self.session.tell("Refine: point the mouse at an accepted object first, then press R.")
            return False
        self.state.refine_id = None  # clear() would announce the end of a refine that is being replaced
        self.clear()
        self.refine_id = object_id
        if self.layers.objects is not None:
            self.layers.objects.selected_label = object_id
        self.set_prompts(ann.objects[object_id].prompts)
        self.session.tell(f"Refining object {object_id}: change the prompts, Enter replaces it, Escape cancels.")
        return True

    def delete_object(self, object_id: int | None = None) -> bool:
        """Delete an accepted object (default: the one under the mouse); U undoes it."""
        object_id = object_id if object_id is not None else self.objects.under_cursor()
        if object_id is None:
            self.session.tell("Delete: point the mouse at an accepted object first.")
            return False
        return self.objects.delete(object_id)

    def set_object_category(self, object_id: int | None = None) -> bool:
        """Give an accepted object (default: the one under the mouse) the current category; U undoes it."""
        object_id = object_id if object_id is not None else self.objects.under_cursor()
        if object_id is None:
            self.session.tell("Category: point the mouse at an accepted object first (Shift+K gives it the category).")
            return False
        return self.objects.set_category(object_id)

    def toggle_model(self) -> None:
        s = self.session
        if not s.has_adapted:
            s.tell("No adapted model yet: use 'Adapt to my data' or load an adapter.")
            return
        s.set_active("base" if s.active == "adapted" else "adapted")

    # ------------------------------------------------------------------------------------------ session events
    def _on_image_changed(self, _index: int) -> None:
        self.state.reset_for_image()
        self._write_layers(ObjectPrompts())
        layer = self.layers.points if self.mode == "points" else self.layers.box
        if self.session.viewer.layers.selection.active is not layer:
            self.set_mode(self.mode)
        self.state_changed.emit()

    def _on_embedding_changed(self, state: str) -> None:
        if state == "ready":
            self.predict()  # decodes again only if the model or the embedding changed

    def _on_model_changed(self) -> None:
        if self.session.embedding_ready:
            self.predict()  # otherwise the preview is redone when the new model's embedding is ready
