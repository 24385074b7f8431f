"""Embeddings of a large image's tiles near the view, computed in the background before the user clicks.

On a large image (:mod:`infosam_app.state.large_images`) a click is answered from the tile under it; the first
click on a tile also runs the encoder on it, on the GUI thread. :class:`TilePrefetcher` avoids that wait: when
a large image's embedding state turns "ready" (image shown, model loaded or switched) and when the view moves
(camera pan / zoom, debounced by :data:`DEBOUNCE_MS`), it embeds the tiles near the view
(:func:`~infosam_app.state.large_images.prefetch_plan`: nearest the view's centre first) in one background
:class:`~infosam_app.workers.Task`, with "Embedding tiles near the view i/n" in the status line. A new image, a
model change or a new view cancels the running prefetch (it stops after its current tile) and, for a view,
replaces it. Tiles already in memory are skipped, so going back to a view costs nothing. Nothing is prefetched
while an adaptation run trains (it has the CPU).
"""

from __future__ import annotations

import contextlib
from typing import Any

from qtpy.QtCore import QObject, QTimer

from infosam_app.state.large_images import prefetch_plan, prefetch_tiles, view_box
from infosam_app.workers import Task, TaskKind

#: the view must rest this long before its tiles are prefetched (panning emits many camera events)
DEBOUNCE_MS = 250


def camera_of(viewer: Any) -> Any:
    """The viewer's camera model (``viewer.scene.camera`` since napari 0.9; ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    camera = getattr(scene, "camera", None)
    return camera if camera is not None else viewer.camera


class TilePrefetcher(QObject):
    """Schedules the tile prefetch of one studio's session (see the module docstring)."""

    def __init__(self, session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self._task: Task | None = None
        self._plan: tuple[int, tuple[tuple[int, int], ...]] | None = None  # (id(tiled), tile indices) running
        self.last_progress: tuple[int, int] | None = None  # (done, total) of the last report
        self.last_tiles: list = []  # the tiles of the last plan started, nearest the view's centre first
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.schedule)
        camera = camera_of(session.viewer)
        camera.events.center.connect(self._on_view_moved)
        camera.events.zoom.connect(self._on_view_moved)
        session.embedding_changed.connect(self._on_embedding_state)
        session.image_changed.connect(lambda _index: self.cancel())
        session.model_changed.connect(self.cancel)

    # ------------------------------------------------------------------------------------------ triggers
    def _on_view_moved(self, _event: Any = None) -> None:
        if self.session.rgb is not None and self.session.tiled_predictor() is not None:
            self._timer.start()  # restarted by every event: runs once the view rests

    def _on_embedding_state(self, state: str) -> None:
        if state == "ready":
            self._timer.start()
        else:
            self.cancel()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.is_done

    def cancel(self) -> None:
        """Stop the running prefetch (after its current tile) and forget a pending one."""
        self._timer.stop()
        if self._task is not None:
            self._task.cancel()
        self._task, self._plan = None, None

    def close(self) -> None:
        """Disconnect from the viewer (the studio is closing); the session's runner ends the task."""
        self.cancel()
        camera = camera_of(self.session.viewer)
        for event in (camera.events.center, camera.events.zoom):
            with contextlib.suppress(Exception):  # already disconnected or the viewer is gone
                event.disconnect(self._on_view_moved)

    # ------------------------------------------------------------------------------------------ the work
    def current_view(self) -> tuple[float, float, float, float]:
        """The region (y0, x0, y1, x1, image pixels) the canvas shows now."""
        viewer = self.session.viewer
        camera = camera_of(viewer)
        center = tuple(float(v) for v in camera.center[-2:])
        canvas = getattr(viewer, "canvas", None)
        size = tuple(getattr(canvas, "size", None) or (600, 800))
        return view_box((center[0], center[1]), float(camera.zoom), (int(size[0]), int(size[1])))

    def schedule(self) -> bool:
        """Start prefetching the tiles of the current view now (False: nothing to do: a small image, no model,
        the embedding state not ready, or the same tiles already being prefetched)."""
        session = self.session
        tiled = session.tiled_predictor() if session.rgb is not None else None
        if tiled is None or not session.embedding_ready or session.tasks.is_running(TaskKind.TRAINING):
            self.cancel()  # (an adaptation run keeps the CPU: a click still embeds its own tile)
            return False
        tiles = prefetch_plan(tiled, self.current_view())
        plan = (id(tiled), tuple(t.index for t in tiles))
        if self.running and plan == self._plan:
            return False
        self.cancel()
        if not tiles:
            return False
        self._plan, self.last_tiles, self.last_progress = plan, tiles, None

        task = self.session.tasks.run(
            prefetch_tiles,
            tiled,
            tiles,
            name="tile prefetch",
            on_progress=lambda progress: self._on_progress(task, progress),
            on_result=lambda count: self._on_done(task, count),
            on_error=lambda exc: self._on_error(task, exc),
        )
        self._task = task
        return True

    def _on_progress(self, task: Task, progress: tuple[int, int]) -> None:
        if task is self._task and not task.cancelled:
            self.last_progress = progress
            self.session.tell(f"Embedding tiles near the view {progress[0]}/{progress[1]} ...")

    def _on_done(self, task: Task, computed: int) -> None:
        if task is not self._task or task.cancelled:
            return
        self._plan = None
        if computed:
            tiles = "tile" if computed == 1 else "tiles"
            self.session.tell(f"{computed} more {tiles} near the view embedded: a click there runs the decoder only.")

    def _on_error(self, task: Task, exc: BaseException) -> None:
        if task is self._task:
            self._plan = None
            self.session.tell(f"Tile prefetch stopped: {exc}")  # a click still embeds its own tile
