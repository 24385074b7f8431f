"""The stack dock (issue 27): a z-stack or time series shown with napari's slider, prompted on one slice and
propagated through the stack; accepted 3D objects saved in the project, undo, correction from one slice, export.

Layers (napari's (plane, row, col) coordinates): ``stack`` (the planes as RGB, read lazily through dask),
``stack points`` and ``stack box`` (prompts: points and rectangles drawn on the slice shown), ``stack preview``
(the last propagation, not yet saved) and ``stack objects`` (the accepted 3D objects, one id through their
slices). Propagation runs in a background task with a fork of the predictor the caller gives (base or adapted
model); the state lives in :class:`infosam_app.state.stack_session.StackSession`. Keys while the dock exists:
none of its own -- buttons only, so the studio's key bindings are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from infosam_app.state.stack_session import PendingPropagation, StackSession
from infosam_app.workers import TaskRunner
from infosam_core.annotation.project import Project
from infosam_core.annotation.stack_objects import BOTH
from infosam_core.inference.propagation import SlicePrompt

STACK_NAME = "stack"
POINTS_NAME = "stack points"
BOX_NAME = "stack box"
PREVIEW_NAME = "stack preview"
OBJECTS_NAME = "stack objects"


class StackPanel(QWidget):
    """Open a stack, prompt the slice shown, Propagate, Accept / Undo, Export (see the module docstring)."""

    def __init__(self, viewer: Any, project: Project, predictor: Callable[[], Any]) -> None:
        super().__init__()
        self.viewer = viewer
        self.state = StackSession(project)
        self.predictor = predictor  # the model in use (base or adapted), asked at each propagation
        self.runner = TaskRunner(self)
        self.running = False
        self.message = ""

        self.open_button = QPushButton("Open stack…")
        self.direction = QComboBox()
        self.direction.addItems([BOTH, "forward", "backward"])
        self.propagate_button = QPushButton("Propagate")
        self.correct_button = QPushButton("Correct object under prompt")
        self.accept_button = QPushButton("Accept")
        self.undo_button = QPushButton("Undo")
        self.export_button = QPushButton("Export 3D labels…")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.open_button)
        row = QHBoxLayout()
        row.addWidget(self.propagate_button)
        row.addWidget(self.direction)
        layout.addLayout(row)
        layout.addWidget(self.correct_button)
        row = QHBoxLayout()
        row.addWidget(self.accept_button)
        row.addWidget(self.undo_button)
        layout.addLayout(row)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        self.open_button.clicked.connect(self._ask_open)
        self.propagate_button.clicked.connect(lambda: self.propagate())
        self.correct_button.clicked.connect(lambda: self.propagate(correct=True))
        self.accept_button.clicked.connect(lambda: self.accept())
        self.undo_button.clicked.connect(lambda: self.undo())
        self.export_button.clicked.connect(self._ask_export)
        self._update_buttons()

    # ------------------------------------------------------------------------------------------ layers
    def _layer(self, name: str) -> Any:
        for layer in self.viewer.layers:
            if layer.name == name:
                return layer
        return None

    def open_stack(self, path: str | Path, axes: str | None = None) -> None:
        import dask.array as da
        from dask import delayed

        stack = self.state.open(path, axes)
        height, width = stack.plane_shape
        planes = [
            da.from_delayed(delayed(stack.rgb)(i), shape=(height, width, 3), dtype=np.uint8)
            for i in range(stack.n_planes)
        ]
        for name in (STACK_NAME, POINTS_NAME, BOX_NAME, PREVIEW_NAME, OBJECTS_NAME):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.viewer.add_image(da.stack(planes), name=STACK_NAME, rgb=True)
        self.viewer.add_labels(self.state.labels().copy(), name=OBJECTS_NAME, opacity=0.5)
        self.viewer.add_labels(np.zeros(stack.label_shape, np.uint8), name=PREVIEW_NAME, opacity=0.6)
        self.viewer.add_shapes(name=BOX_NAME, ndim=3, edge_color="#ffd400", face_color="transparent", edge_width=2)
        self.viewer.add_points(name=POINTS_NAME, ndim=3, face_color="#39ff14", size=8)
        self.viewer.dims.set_current_step(0, stack.n_planes // 2)
        self._tell(f"{Path(path).name}: {stack.n_planes} {'frames' if stack.kind == 'T' else 'slices'} ({stack.axes})")

    def current_slice(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def prompt_on_slice(self, index: int) -> SlicePrompt | None:
        """The points and the last rectangle drawn on slice ``index`` as SAM's (x, y) prompt."""
        points_layer, box_layer = self._layer(POINTS_NAME), self._layer(BOX_NAME)
        points = []
        if points_layer is not None:
            points = [(float(p[2]), float(p[1])) for p in points_layer.data if round(float(p[0])) == index]
        box = None
        if box_layer is not None:
            for shape in box_layer.data:
                corners = np.asarray(shape)
                if round(float(corners[0, 0])) == index:
                    rows, cols = corners[:, 1], corners[:, 2]
                    box = np.array([cols.min(), rows.min(), cols.max(), rows.max()])
        if not points and box is None:
            return None
        return SlicePrompt(
            np.array(points) if points else None, np.ones(len(points), np.int64) if points else None, box
        )

    def _clear_prompts(self) -> None:
        for name in (POINTS_NAME, BOX_NAME):
            layer = self._layer(name)
            if layer is not None and len(layer.data):
                layer.data = [] if name == BOX_NAME else np.empty((0, 3))

    def _refresh(self) -> None:
        objects, preview = self._layer(OBJECTS_NAME), self._layer(PREVIEW_NAME)
        if objects is not None:
            objects.data = self.state.labels().copy()
        if preview is not None:
            pending = self.state.pending
            preview.data = pending.result.masks.astype(np.uint8) if pending is not None else np.zeros_like(preview.data)
        self._update_buttons()

    # ----------------------------------------------------------------------------------------- actions
    def propagate(self, correct: bool = False) -> bool:
        """Propagate the prompt of the slice shown (``correct``: as the new shape of the object under it, from that
        slice); False when there is nothing to do."""
        if self.running or self.state.stack is None:
            return False
        index = self.current_slice()
        prompt = self.prompt_on_slice(index)
        if prompt is None:
            self._tell(f"slice {index}: draw a box or click points on it first")
            return False
        corrects = None
        if correct:
            x, y = prompt.points[0] if prompt.points is not None else prompt.box.reshape(2, 2).mean(axis=0)
            corrects = self.state.object_at(index, int(round(y)), int(round(x)))
            if corrects is None:
                self._tell("no accepted object under the prompt to correct")
                return False
        predictor = self.predictor()
        if predictor is None:
            self._tell("load a model first")
            return False
        worker = predictor.fork() if hasattr(predictor, "fork") else predictor
        direction = self.direction.currentText()
        self.running = True
        self._update_buttons()

        def work(should_stop: Callable[[], bool]) -> PendingPropagation:
            return self.state.propagate(worker, index, prompt, direction, corrects, should_stop=should_stop)

        self.runner.run(work, on_result=self._propagated, on_error=self._failed, name="propagate")
        self._tell(f"propagating from slice {index}…")
        return True

    def _propagated(self, pending: PendingPropagation) -> None:
        self.running = False
        self.state.show_pending(pending)
        slices = pending.result.slices
        span = f"slices {slices[0]}..{slices[-1]}" if slices else "nothing"
        self._tell(f"{span} ({pending.result.seconds_per_slice:.2f} s per slice): Accept or Undo")
        self._refresh()

    def _failed(self, exc: BaseException) -> None:
        self.running = False
        self._tell(f"propagation failed: {exc}")
        self._update_buttons()

    def accept(self) -> bool:
        if self.running or self.state.pending is None:
            return False
        obj = self.state.accept(model=getattr(self.predictor(), "model_type", ""))
        self._clear_prompts()
        self._tell(f"object {obj.id} saved (slices {obj.slices[0]}..{obj.slices[-1]})" if obj.slices else "saved")
        self._refresh()
        return True

    def undo(self) -> str | None:
        if self.running or self.state.stack is None:
            return None
        what = self.state.undo()
        self._tell(f"undone: {what}" if what else "nothing to undo")
        self._refresh()
        return what

    def export(self, path: str | Path) -> Path:
        out = self.state.export(path)
        self._tell(f"3D labels -> {out}")
        return out

    # ---------------------------------------------------------------------------------------- plumbing
    def _ask_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a stack", "", "Stacks (*.tif *.tiff *.zarr)")
        if path:
            try:
                self.open_stack(path)
            except ValueError as exc:  # StackError, ProjectError: one line naming the file
                self._tell(str(exc))

    def _ask_export(self) -> None:
        if self.state.stack is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export 3D labels", "labels.tif", "TIFF (*.tif);;zarr (*.zarr)")
        if path:
            self.export(path)

    def _tell(self, message: str) -> None:
        self.message = message
        self.status.setText(message)

    def _update_buttons(self) -> None:
        has_stack = self.state.stack is not None
        for button in (self.propagate_button, self.correct_button, self.undo_button, self.export_button):
            button.setEnabled(has_stack and not self.running)
        self.accept_button.setEnabled(self.state.pending is not None and not self.running)


def stack_widget(viewer: Any) -> StackPanel:
    """napari's entry for the "InfoSAM Stacks" dock. With the InfoSAM Studio docked in the same viewer: the
    studio's project and the model it uses (base or adapted, asked at each propagation); otherwise a project
    under the studio's projects folder and the bundled tiny model (loaded at the first propagation)."""
    from infosam_app.widget import StudioWidget
    from infosam_core.annotation.project import default_projects_dir
    from infosam_core.inference.predictor import Predictor

    studio = next((w for w in _docked(viewer) if isinstance(w, StudioWidget)), None)
    if studio is not None:
        session = studio.session
        return StackPanel(viewer, session.ensure_project("stacks"), lambda: session.predictor)
    project = Project.open_or_create(default_projects_dir() / "stacks", name="stacks")
    cache: dict[str, Any] = {}

    def predictor() -> Any:
        if "predictor" not in cache:
            from infosam_core.models.registry import load_sam

            cache["predictor"] = Predictor(load_sam("tiny"), cache_size=4)
        return cache["predictor"]

    return StackPanel(viewer, project, predictor)


def _docked(viewer: Any) -> list[Any]:
    """The widgets docked in the viewer's window (none without a window)."""
    window = getattr(viewer, "window", None)
    try:
        return list(window.dock_widgets.values()) if window is not None else []
    except AttributeError:  # a napari without Window.dock_widgets
        return []
