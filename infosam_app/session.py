"""The Qt side of one studio (one per viewer): signals, background tasks and messages around plain state.

:class:`Session` owns everything the panels share and is passed to them explicitly (no global state).
The state itself lives in Qt-free objects (:mod:`infosam_app.state`): :class:`Navigation` (project, image
shown), :class:`ImageStore` + :class:`PrefetchPolicy` (images read, what to embed ahead of time) and
:class:`ModelSet` (base / adapted models and their predictors). All heavy work (reading images, loading
models, computing embeddings) runs in :class:`Task` threads; the GUI thread only swaps in results. Signals
tell the panels what changed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal

from infosam_app.layers import StudioLayers
from infosam_app.state import inference_options
from infosam_app.state.images import ImagePair, ImageStore, PrefetchPolicy, display_levels, read_image_pair
from infosam_app.state.large_images import TiledPredictors
from infosam_app.state.models import (
    ModelInfo,
    ModelSet,
    device_name,
    load_model_and_predictor,
    make_predictor,
    origin_label,
)
from infosam_app.state.navigation import Navigation
from infosam_app.state.wording import plural
from infosam_app.workers import TaskKind, TaskRunner
from infosam_core.annotation.project import Project, ProjectError, default_projects_dir

__all__ = ["ModelInfo", "Session", "device_name"]


class Session(QObject):
    """State of one studio. Signals are emitted on the GUI thread."""

    project_changed = Signal()
    images_changed = Signal()  # the list or a count changed
    image_changed = Signal(int)  # the image at this index is now shown
    embedding_changed = Signal(str)  # "computing" | "ready" | "error"
    model_changed = Signal()  # a model was loaded / adapted / the active one switched
    model_loading = Signal(bool)
    category_changed = Signal()  # the current category (new objects take it) or the project's list changed
    status = Signal(str)  # a one-line message for the status bar
    error = Signal(str)  # a message the user must see (also shown as a napari notification)

    def __init__(self, viewer, parent: QObject | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.layers = StudioLayers(viewer)
        self.tasks = TaskRunner(self)
        self.navigation = Navigation()
        self.images = ImageStore()
        self.prefetch = PrefetchPolicy()
        self.models = ModelSet()
        self.tiled = TiledPredictors()
        self.last_error: str | None = None
        self.category_id = 1  # new objects take this category (an id of the project's list)
        self.color_by_category = False
        self.precision = inference_options.load_precision_preference()  # the predictors' encoder precision
        self.embedding_store = None  # the open project's precomputed embeddings (EmbeddingStore), if it names one

    # ------------------------------------------------------------------------------------------ state views
    # The panels read these; the state objects above own them.
    @property
    def project(self) -> Project | None:
        return self.navigation.project

    @property
    def index(self) -> int:
        return self.navigation.index

    @property
    def raw(self) -> np.ndarray | None:
        return self.navigation.raw

    @property
    def rgb(self) -> np.ndarray | None:
        return self.navigation.rgb

    @property
    def entry(self):
        return self.navigation.entry

    @property
    def key(self) -> str | None:
        return self.navigation.key

    @property
    def sams(self) -> dict:
        return self.models.sams

    @property
    def predictors(self) -> dict:
        return self.models.predictors

    @property
    def infos(self) -> dict[str, ModelInfo]:
        return self.models.infos

    @property
    def active(self) -> str:
        return self.models.active

    @property
    def predictor(self):
        return self.models.predictor

    @property
    def has_adapted(self) -> bool:
        return self.models.has_adapted

    def tiled_predictor(self, name: str | None = None):
        """Model ``name``'s (default: active) tiled predictor on the shown image; None when it fits one tile."""
        return self.tiled.get(self.models.predictors.get(name or self.active), self.rgb)

    @property
    def prefetch_enabled(self) -> bool:
        return self.prefetch.enabled

    @prefetch_enabled.setter
    def prefetch_enabled(self, value: bool) -> None:
        self.prefetch.enabled = bool(value)

    @property
    def last_embed_seconds(self) -> float | None:
        return self.prefetch.last_embed_seconds

    # ------------------------------------------------------------------------------------------ messages
    def tell(self, message: str) -> None:
        self.status.emit(message)
        with contextlib.suppress(Exception):  # a closed viewer
            self.viewer.status = message

    def fail(self, message: str) -> None:
        """Show an error without raising: notification + status; the app keeps running."""
        from napari.utils.notifications import show_error

        self.last_error = message
        self.error.emit(message)
        self.tell(message)
        show_error(message)

    # ------------------------------------------------------------------------------------------ project
    def open_project(self, root: str | Path, create: bool = True, name: str | None = None) -> Project | None:
        try:
            project = Project.open_or_create(root, name) if create else Project.open(root)
        except (ProjectError, OSError) as exc:
            self.fail(f"Cannot open project: {exc}")
            return None
        self._set_project(project)
        return project

    # ------------------------------------------------------------------------------------------ categories
    def set_category(self, category_id: int) -> None:
        """Make ``category_id`` (one of the project's) the category of the objects accepted from now on."""
        project = self.project
        if project is None or category_id not in [c.id for c in project.categories]:
            return
        if category_id != self.category_id:
            self.category_id = category_id
            self.category_changed.emit()
            self.tell(f"Category: {project.category(category_id).name} (K: next)")

    def next_category(self) -> None:
        """Switch to the project's next category (K), wrapping around."""
        project = self.project
        if project is None:
            return
        ids = [c.id for c in project.categories]
        i = ids.index(self.category_id) if self.category_id in ids else -1
        self.set_category(ids[(i + 1) % len(ids)])

    def add_category(self, name: str) -> int | None:
        """Add a category to the project (or find it by name) and make it current; returns its id."""
        try:
            project = self.ensure_project()
            category = project.add_category(name)
        except (ProjectError, OSError) as exc:
            self.fail(f"Cannot add the category: {exc}")
            return None
        self.category_changed.emit()
        self.set_category(category.id)
        return category.id

    def set_color_by_category(self, on: bool) -> None:
        self.color_by_category = bool(on)
        if self.key is not None:
            self.show_objects(self.key)

    def show_objects(self, key: str) -> None:
        """Put image ``key``'s accepted objects on the objects layer (coloured by category when chosen)."""
        project = self.project
        if project is None:
            return
        ann = project.annotations(key)
        if ann.labels is None:
            return
        colors = None
        if self.color_by_category:
            by_id = {c.id: c.color for c in project.categories}
            colors = {oid: by_id.get(obj.category, "#ffffff") for oid, obj in ann.objects.items()}
        self.layers.set_objects(ann.labels, colors)

    def _set_project(self, project: Project) -> None:
        self.navigation.open(project)
        self.category_id = project.categories[0].id
        self.category_changed.emit()
        self.images.clear()
        self.models.set_cache_dir(self.embedding_cache_dir)
        self.embedding_store, problem = inference_options.open_project_store(project)
        self.models.set_embedding_store(self.embedding_store)
        if problem is not None:
            self.fail(problem)
        self.project_changed.emit()
        self.images_changed.emit()
        self.tell(
            f"Project {project.name}: {plural(len(project.images), 'image')}, {plural(project.total_objects(), 'object')} "
            f"({project.root})"
        )
        if not project.images:
            self.navigation.clear_image()
            self.layers.show_nothing()
            self.image_changed.emit(-1)
        else:
            self.show_image(self.navigation.restore_index())

    @property
    def embedding_cache_dir(self) -> Path | None:
        return self.project.root / "cache" / "embeddings" if self.project is not None else None

    def ensure_project(self, hint: str = "untitled") -> Project:
        """The open project, or a new one in the user data folder (never the working directory)."""
        if self.project is None:
            base = default_projects_dir()
            root = base / hint
            n = 1
            while (root / "project.json").exists() and hint == "untitled":
                n += 1
                root = base / f"{hint}-{n}"
            self._set_project(Project.open_or_create(root, name=root.name))
        return self.project

    def add_images(self, paths: list[str | Path], project_hint: str | None = None) -> int:
        """Add files/folders to the project (creating one if needed); shows the first new image. Files that are
        not usable images are refused (not added) and named, with the reason, in an error message."""
        if not paths:
            return 0
        try:
            hint = project_hint or (Path(paths[0]).name if Path(paths[0]).is_dir() else Path(paths[0]).parent.name)
            project = self.ensure_project(hint or "untitled")
            before = len(project.images)
            entries = project.add_images(paths)
        except (ProjectError, OSError) as exc:
            self.fail(f"Cannot add images: {exc}")
            return 0
        self.images_changed.emit()
        if entries:
            self.show_image(project.index_of(entries[0].key))
        added = len(project.images) - before
        text = f"Added {plural(added, 'image')} to {project.name}" + (
            " (others were already there)" if added < len(entries) else ""
        )
        refused = getattr(entries, "refused", [])
        if refused:
            reasons = "; ".join(str(r) for r in refused[:5]) + (
                f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
            )
            self.fail(f"{text}. Not added ({plural(len(refused), 'file')}): {reasons}")
        else:
            self.tell(text)
        return added

    def remove_image(self, key: str) -> bool:
        """Take image ``key`` out of the project (its objects and cached embeddings too; the file stays)."""
        project = self.project
        if project is None:
            return False
        try:
            index = project.index_of(key)
            entry = project.remove_image(key)
        except (ProjectError, OSError, KeyError, ValueError) as exc:
            self.fail(f"Cannot remove the image: {exc}")
            return False
        self.images.forget(key)
        shown = self.navigation.index
        self.images_changed.emit()
        self.tell(f"Removed {entry.name} from {project.name} (the file itself is kept).")
        if not project.images:
            self.navigation.clear_image()
            self.navigation.index = -1
            self.layers.show_nothing()
            self.image_changed.emit(-1)
        elif index == shown:
            self.navigation.index = -1
            self.show_image(min(index, len(project.images) - 1))
        elif index < shown:
            self.navigation.index = shown - 1
            self.images_changed.emit()
        return True

    # ------------------------------------------------------------------------------------------ images
    def show_image(self, index: int) -> None:
        """Show image ``index``: read it in the background, then compute its embedding in the background."""
        if self.project is None or not self.project.images:
            return
        gen = self.navigation.go_to(index)
        entry = self.navigation.entry
        cached, levels = self.images.get(entry.key), self.images.levels(entry.key)
        if cached is not None and levels is not None:
            self._on_image_read(gen, entry.key, (cached, levels))
            return
        path = None
        if cached is None:
            try:
                path = self.project.image_path(entry)
            except ProjectError as exc:
                self.fail(str(exc))
                return
            self.tell(f"Reading {entry.name} ...")

        def read() -> tuple[ImagePair, list[np.ndarray]]:  # a large image's display pyramid too: not on the GUI
            pair = cached if cached is not None or path is None else read_image_pair(path)
            return pair, display_levels(pair)

        self.tasks.run(
            read,
            name="read image",
            on_result=lambda res: self._on_image_read(gen, entry.key, res),
            on_error=lambda exc: self._on_image_error(gen, entry.name, exc),
        )

    def next_image(self, step: int = 1) -> None:
        index = self.navigation.step(step)
        if index is not None:
            self.show_image(index)

    def _on_image_error(self, gen: int, name: str, exc: BaseException) -> None:
        if self.navigation.is_current(gen):
            self.fail(f"Cannot show {name}: {exc}")

    def _on_image_read(self, gen: int, key: str, shown: tuple[ImagePair, list[np.ndarray]]) -> None:
        pair, levels = shown
        self.images.remember(key, pair, levels)
        if not self.navigation.is_current(gen) or self.project is None:
            return  # the user moved on meanwhile
        raw, rgb = pair
        entry = self.project.entry(key)
        try:
            ann = self.project.annotations(key)
            labels = ann.ensure_labels(rgb.shape[:2])
            self.project.set_shape(key, rgb.shape[:2])
            self.project.save_ui_state(current=key)
        except (ProjectError, OSError) as exc:
            self.fail(str(exc))
            return
        self.navigation.raw, self.navigation.rgb = raw, rgb
        self.layers.show_image(raw, rgb, entry.name, levels)
        self.layers.set_objects(labels)
        if self.color_by_category:
            self.show_objects(key)
        self.layers.set_preview(None, rgb.shape[:2])
        self.image_changed.emit(self.index)
        self.ensure_embedding()

    # ------------------------------------------------------------------------------------------ embeddings
    @property
    def embedding_ready(self) -> bool:
        return self.models.is_embedded(self.active, self.key)

    def ensure_embedding(self, name: str | None = None) -> None:
        """Compute (in the background) the embedding of the shown image for model ``name`` (default: active)."""
        name = name or self.active
        pred, key, rgb = self.models.predictors.get(name), self.key, self.rgb
        if pred is None or key is None or rgb is None:
            return
        if self.models.is_embedded(name, key):
            if name == self.active:
                self.embedding_changed.emit("ready")
            return
        job = self.models.start_job(name, key)
        if job is None:
            return  # already being computed
        if name == self.active:
            self.embedding_changed.emit("computing")
            self.tell(f"Computing the image embedding ({self.infos[name].label}, {self.infos[name].device}) ...")
        t0 = time.perf_counter()
        tiled = self.tiled_predictor(name)  # a large image: tiles are embedded when a prompt needs them

        def done(embedding):
            self.models.end_job(job)
            if not self.models.is_current(name, pred) or self.key != key:
                return
            try:
                if tiled is None:
                    pred.set_embedding(embedding)
            except ValueError:  # the model changed meanwhile: start again
                self.ensure_embedding(name)
                return
            self.models.mark_embedded(name, key, pred)
            self.prefetch.last_embed_seconds = time.perf_counter() - t0
            if name == self.active:
                if tiled is not None:
                    self.tell(
                        f"Large image: {len(tiled.tiles)} tiles; those near the view are embedded in the "
                        "background, any other when a prompt first needs it."
                    )
                else:
                    self.tell(f"Embedding ready ({self.prefetch.last_embed_seconds:.2f} s). Click to prompt.")
                self.embedding_changed.emit("ready")
                self._prefetch_next()

        def failed(exc):
            self.models.end_job(job)
            if name == self.active and self.key == key:
                self.embedding_changed.emit("error")
                self.fail(f"Embedding failed: {exc}")

        work = (lambda: None) if tiled is not None else (lambda: pred.embed(rgb))
        self.tasks.run(work, name="embed", on_result=done, on_error=failed)

    def invalidate_embeddings(self) -> None:
        """Forget every computed embedding (memory caches too) and recompute the shown image's."""
        self.models.forget_embeddings(clear_caches=True)
        self.ensure_embedding()

    def _prefetch_next(self) -> None:
        """Read the next image and compute its embedding into the cache, when that is cheap."""
        index = self.prefetch.next_index(self.index, self.navigation.count)
        if index is None:
            return
        entry = self.project.images[index]
        pred = self.predictor
        cached = self.images.get(entry.key)
        try:
            path = self.project.image_path(entry)
        except ProjectError:
            return

        def work(should_stop):
            pair = cached or read_image_pair(path)
            if not should_stop():
                pred.embed(pair[1])
            return pair, display_levels(pair)

        self.tasks.run(
            work,
            name="prefetch",
            on_result=lambda shown: self.images.remember(entry.key, *shown),
            on_error=lambda exc: None,
        )

    # ------------------------------------------------------------------------------------------ models
    def load_model(
        self, model_type: str = "tiny", checkpoint: str | None = None, on_done: Callable[[bool], None] | None = None
    ) -> None:
        """Load SAM in the background; on success it becomes the base model (an adapted model is dropped)."""
        if self.tasks.is_running(TaskKind.TRAINING):
            self.fail("An adaptation run uses the current model: wait for it to end (or cancel it) first.")
            if on_done:
                on_done(False)
            return
        self.model_loading.emit(True)
        self.tell(f"Loading model {model_type}{' from ' + Path(checkpoint).name if checkpoint else ''} ...")

        def ok(result):
            sam, predictor = result
            label = origin_label(model_type, checkpoint)
            self._install_base(sam, predictor, ModelInfo(label, device_name(sam), model_type, checkpoint))
            self.model_loading.emit(False)
            if on_done:
                on_done(True)

        def failed(exc):
            self.model_loading.emit(False)
            base = self.models.base_info
            keep = f" Still using {base.label}." if base is not None else ""
            self.fail(f"Cannot load the model: {exc}{keep}")
            if on_done:
                on_done(False)

        self.tasks.run(
            load_model_and_predictor,
            model_type,
            checkpoint,
            self.embedding_cache_dir,
            self.precision,
            self.embedding_store,
            name="load model",
            on_result=ok,
            on_error=failed,
        )

    def use_model(self, sam, label: str | None = None, on_done: Callable[[bool], None] | None = None) -> None:
        """Use an already built SAM as the base model (scripts, tests); the predictor is made in the background."""
        model_type = getattr(sam, "model_type", "custom")
        info = ModelInfo(label or f"{model_type} (given)", device_name(sam), model_type)

        def ok(predictor):
            self._install_base(sam, predictor, info)
            if on_done:
                on_done(True)

        self.tasks.run(
            make_predictor,
            sam,
            self.embedding_cache_dir,
            self.precision,
            self.embedding_store,
            name="predictor",
            on_result=ok,
            on_error=lambda exc: self.fail(f"Cannot use the model: {exc}"),
        )

    def _install_base(self, sam, predictor, info: ModelInfo) -> None:
        predictor.embedding_store = self.embedding_store  # a project opened while it was being made
        self.models.install_base(sam, predictor, info)
        self.model_changed.emit()
        self.tell(f"Model {info.label} on {info.device}")
        self.ensure_embedding()

    def set_adapted(
        self, sam, info: ModelInfo, activate: bool = True, on_done: Callable[[bool], None] | None = None
    ) -> None:
        """Hot-swap: ``sam`` (an adapted student) becomes the ``adapted`` model; prompts re-predict with it."""

        def ok(predictor):
            predictor.embedding_store = self.embedding_store
            self.models.install_adapted(sam, predictor, info, activate=activate)
            self.model_changed.emit()
            self.ensure_embedding("adapted")
            if on_done:
                on_done(True)

        def failed(exc):
            self.fail(f"Cannot use the adapted model: {exc}")
            if on_done:
                on_done(False)

        self.tasks.run(
            make_predictor,
            sam,
            self.embedding_cache_dir,
            self.precision,
            self.embedding_store,
            name="adapted predictor",
            on_result=ok,
            on_error=failed,
        )

    def drop_adapted(self) -> None:
        """Predict with the base model only (the project opened has no adapter of its own)."""
        if self.models.drop_adapted():
            self.model_changed.emit()
            self.ensure_embedding()

    def set_active(self, name: str) -> None:
        """Switch the model prompts are predicted with ("base" or "adapted")."""
        if not self.models.activate(name):
            return
        self.model_changed.emit()
        self.tell(f"Now predicting with the {name} model ({self.infos[name].label})")
        self.ensure_embedding(name)

    # ------------------------------------------------------------------------------------------ inference options
    def set_precision(self, precision: str) -> bool:
        """Run the encoders (base and adapted) in ``precision`` (auto, float32, bfloat16, int8) from now on and
        remember it for the next start; the shown image is embedded again in the background."""
        try:
            self.models.set_precision(precision)
        except ValueError as exc:
            self.fail(f"Cannot use precision {precision}: {exc}")
            return False
        self.precision = precision
        inference_options.save_precision_preference(precision)
        self.model_changed.emit()
        predictor = self.predictor
        if predictor is not None:
            self.tell(f"Encoder precision: {inference_options.precision_text(predictor)}")
        self.ensure_embedding()
        return True

    def set_embedding_store(self, path: str | Path | None) -> bool:
        """Make ``path`` (a folder made by ``infosam embed``; None: none) the project's embedding store: saved in
        the project, read by every predictor before any encoder pass. A folder that is not a store is refused
        with one message; nothing changes then."""
        project = self.project
        if project is None:
            self.fail("Open a project first: the embedding store is a project setting.")
            return False
        try:
            store = inference_options.open_store(Path(path)) if path is not None else None
            inference_options.remember_store(project, Path(path) if path is not None else None)
        except (ValueError, ProjectError, OSError) as exc:
            self.fail(f"Cannot use that embedding store: {exc}")
            return False
        self.embedding_store = store
        self.models.set_embedding_store(store)
        self.project_changed.emit()
        self.tell(f"Embedding store: {store.path} ({len(store)} embeddings)" if store else "No embedding store.")
        return True

    def shutdown(self) -> None:
        self.tasks.shutdown()
        self.layers.close()
