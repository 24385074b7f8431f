"""The state of one studio (one per viewer): project, image shown, models and their predictors.

:class:`Session` owns everything the panels share and is passed to them explicitly (no global state).
All heavy work (reading images, loading models, computing embeddings) runs in :class:`Task` threads;
the GUI thread only swaps in results. Signals tell the panels what changed.

Models. ``base`` is the loaded SAM (bundled tiny by default); ``adapted`` is a PEFT student from
"Adapt to my data" or a loaded adapter. Each has its own :class:`~infosam_core.inference.predictor.Predictor` (own
embedding cache), and ``active`` names the one prompts are predicted with (the Base / Adapted toggle).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal

from infosam_app.layers import StudioLayers
from infosam_app.workers import TaskRunner
from infosam_core.annotation.project import Project, ProjectError, default_projects_dir

PREFETCH_MAX_EMBED_S = 3.0  # precompute the next image's embedding only when one takes less than this
IMAGE_CACHE_SIZE = 4


@dataclass
class ModelInfo:
    """What the UI shows about a model."""

    label: str  # e.g. "tiny (bundled)", "vit_b: sam_vit_b_01ec64.pth", "adapter (lora) run-003"
    device: str  # "CPU" or "GPU (NVIDIA ...)"
    model_type: str
    checkpoint: str | None = None
    adapter_path: str | None = None


def device_name(sam) -> str:
    try:
        dev = next(sam.parameters()).device
    except StopIteration:
        return "CPU"
    if dev.type == "cuda":
        import torch

        return f"GPU ({torch.cuda.get_device_name(dev)})"
    return "CPU" if dev.type == "cpu" else dev.type.upper()


def _read_image(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from infosam_core.io.images import read_image, to_rgb_uint8

    raw = read_image(path)
    return raw, to_rgb_uint8(raw, name=path.name)


def _make_predictor(sam, cache_dir: Path | None):
    from infosam_core.inference.predictor import Predictor

    return Predictor(sam, cache_size=8, cache_dir=cache_dir)


def _load_model(model_type: str, checkpoint: str | None, cache_dir: Path | None):
    import torch

    from infosam_core.models.registry import load_sam

    sam = load_sam(model_type, checkpoint)
    if torch.cuda.is_available():
        sam = sam.to("cuda")
    return sam, _make_predictor(sam, cache_dir)


class Session(QObject):
    """State of one studio. Signals are emitted on the GUI thread."""

    project_changed = Signal()
    images_changed = Signal()  # the list or a count changed
    image_changed = Signal(int)  # the image at this index is now shown
    embedding_changed = Signal(str)  # "computing" | "ready" | "error"
    model_changed = Signal()  # a model was loaded / adapted / the active one switched
    model_loading = Signal(bool)
    status = Signal(str)  # a one-line message for the status bar
    error = Signal(str)  # a message the user must see (also shown as a napari notification)

    def __init__(self, viewer, parent: QObject | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.layers = StudioLayers(viewer)
        self.tasks = TaskRunner(self)
        self.project: Project | None = None
        self.index = -1
        self.raw: np.ndarray | None = None
        self.rgb: np.ndarray | None = None
        self._image_gen = 0
        self._image_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        # models
        self.sams: dict[str, Any] = {}
        self.predictors: dict[str, Any] = {}
        self.infos: dict[str, ModelInfo] = {}
        self.active = "base"
        self._embedded: dict[str, tuple[str, int]] = {}  # model name -> (image key, id(predictor))
        self._embedding_jobs: set[tuple[str, int, str]] = set()
        self.last_embed_seconds: float | None = None
        self.prefetch_enabled = True
        self.last_error: str | None = None

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
    @property
    def entry(self):
        if self.project is None or not (0 <= self.index < len(self.project.images)):
            return None
        return self.project.images[self.index]

    @property
    def key(self) -> str | None:
        e = self.entry
        return e.key if e is not None else None

    def open_project(self, root: str | Path, create: bool = True, name: str | None = None) -> Project | None:
        try:
            project = Project.open_or_create(root, name) if create else Project.open(root)
        except (ProjectError, OSError) as exc:
            self.fail(f"Cannot open project: {exc}")
            return None
        self._set_project(project)
        return project

    def _set_project(self, project: Project) -> None:
        self.project = project
        self.index = -1
        self._image_cache.clear()
        self._embedded.clear()
        for p in self.predictors.values():
            p.cache_dir = self.embedding_cache_dir
        self.project_changed.emit()
        self.images_changed.emit()
        self.tell(
            f"Project {project.name}: {len(project.images)} images, {project.total_objects()} objects ({project.root})"
        )
        if not project.images:
            self.raw = self.rgb = None
            self.layers.show_nothing()
            self.image_changed.emit(-1)
        else:
            current = project.ui_state().get("current")
            keys = [e.key for e in project.images]
            self.show_image(keys.index(current) if current in keys else 0)

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
        """Add files/folders to the project (creating one if needed); shows the first new image."""
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
        self.tell(
            f"Added {added} image(s) to {project.name}"
            + (" (others were already there)" if added < len(entries) else "")
        )
        return added

    # ------------------------------------------------------------------------------------------ images
    def show_image(self, index: int) -> None:
        """Show image ``index``: read it in the background, then compute its embedding in the background."""
        if self.project is None or not self.project.images:
            return
        index = max(0, min(index, len(self.project.images) - 1))
        self.index = index
        self._image_gen += 1
        gen = self._image_gen
        entry = self.project.images[index]
        cached = self._image_cache.get(entry.key)
        if cached is not None:
            self._on_image_read(gen, entry.key, cached)
            return
        try:
            path = self.project.image_path(entry)
        except ProjectError as exc:
            self.fail(str(exc))
            return
        self.tell(f"Reading {entry.name} ...")
        self.tasks.run(
            _read_image,
            path,
            name="read image",
            on_result=lambda res: self._on_image_read(gen, entry.key, res),
            on_error=lambda exc: self._on_image_error(gen, entry.name, exc),
        )

    def next_image(self, step: int = 1) -> None:
        if self.project and self.project.images:
            self.show_image((self.index + step) % len(self.project.images))

    def _on_image_error(self, gen: int, name: str, exc: BaseException) -> None:
        if gen == self._image_gen:
            self.fail(f"Cannot show {name}: {exc}")

    def _remember_image(self, key: str, pair: tuple[np.ndarray, np.ndarray]) -> None:
        self._image_cache[key] = pair
        self._image_cache.move_to_end(key)
        while len(self._image_cache) > IMAGE_CACHE_SIZE:
            self._image_cache.popitem(last=False)

    def _on_image_read(self, gen: int, key: str, pair: tuple[np.ndarray, np.ndarray]) -> None:
        self._remember_image(key, pair)
        if gen != self._image_gen or self.project is None:
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
        self.raw, self.rgb = raw, rgb
        self.layers.show_image(raw, rgb, entry.name)
        self.layers.set_objects(labels)
        self.layers.set_preview(None, rgb.shape[:2])
        self.image_changed.emit(self.index)
        self.ensure_embedding()

    # ------------------------------------------------------------------------------------------ embeddings
    @property
    def predictor(self):
        return self.predictors.get(self.active)

    @property
    def embedding_ready(self) -> bool:
        p = self.predictor
        return p is not None and self.key is not None and self._embedded.get(self.active) == (self.key, id(p))

    def ensure_embedding(self, name: str | None = None) -> None:
        """Compute (in the background) the embedding of the shown image for model ``name`` (default: active)."""
        name = name or self.active
        pred, key, rgb = self.predictors.get(name), self.key, self.rgb
        if pred is None or key is None or rgb is None:
            return
        if self._embedded.get(name) == (key, id(pred)):
            if name == self.active:
                self.embedding_changed.emit("ready")
            return
        job = (name, id(pred), key)
        if job in self._embedding_jobs:
            return
        self._embedding_jobs.add(job)
        if name == self.active:
            self.embedding_changed.emit("computing")
            self.tell(f"Computing the image embedding ({self.infos[name].label}, {self.infos[name].device}) ...")
        t0 = time.perf_counter()

        def done(embedding):
            self._embedding_jobs.discard(job)
            if self.predictors.get(name) is not pred or self.key != key:
                return
            try:
                pred.set_embedding(embedding)
            except ValueError:  # the model changed meanwhile: start again
                self.ensure_embedding(name)
                return
            self._embedded[name] = (key, id(pred))
            self.last_embed_seconds = time.perf_counter() - t0
            if name == self.active:
                self.tell(f"Embedding ready ({self.last_embed_seconds:.2f} s). Click to prompt.")
                self.embedding_changed.emit("ready")
                self._prefetch_next()

        def failed(exc):
            self._embedding_jobs.discard(job)
            if name == self.active and self.key == key:
                self.embedding_changed.emit("error")
                self.fail(f"Embedding failed: {exc}")

        self.tasks.run(pred.embed, rgb, name="embed", on_result=done, on_error=failed)

    def invalidate_embeddings(self) -> None:
        """Forget every computed embedding (memory caches too) and recompute the shown image's."""
        self._embedded.clear()
        for p in self.predictors.values():
            p.clear_cache()
        self.ensure_embedding()

    def _prefetch_next(self) -> None:
        """Read the next image and compute its embedding into the cache, when that is cheap."""
        if not self.prefetch_enabled or self.project is None or len(self.project.images) < 2:
            return
        if self.last_embed_seconds is None or self.last_embed_seconds > PREFETCH_MAX_EMBED_S:
            return
        entry = self.project.images[(self.index + 1) % len(self.project.images)]
        pred = self.predictor
        cached = self._image_cache.get(entry.key)
        try:
            path = self.project.image_path(entry)
        except ProjectError:
            return

        def work(should_stop):
            pair = cached or _read_image(path)
            if not should_stop():
                pred.embed(pair[1])
            return pair

        self.tasks.run(
            work,
            name="prefetch",
            on_result=lambda pair: self._remember_image(entry.key, pair),
            on_error=lambda exc: None,
        )

    # ------------------------------------------------------------------------------------------ models
    def load_model(
        self, model_type: str = "tiny", checkpoint: str | None = None, on_done: Callable[[bool], None] | None = None
    ) -> None:
        """Load SAM in the background; on success it becomes the base model (an adapted model is dropped)."""
        if any(t.name == "train" for t in self.tasks.running):
            self.fail("An adaptation run uses the current model: wait for it to end (or cancel it) first.")
            if on_done:
                on_done(False)
            return
        self.model_loading.emit(True)
        self.tell(f"Loading model {model_type}{' from ' + Path(checkpoint).name if checkpoint else ''} ...")

        def ok(result):
            sam, predictor = result
            origin = (
                "bundled"
                if model_type == "tiny" and not checkpoint
                else (Path(checkpoint).name if checkpoint else "random weights")
            )
            self._install_base(
                sam, predictor, ModelInfo(f"{model_type} ({origin})", device_name(sam), model_type, checkpoint)
            )
            self.model_loading.emit(False)
            if on_done:
                on_done(True)

        def failed(exc):
            self.model_loading.emit(False)
            keep = f" Still using {self.infos['base'].label}." if "base" in self.infos else ""
            self.fail(f"Cannot load the model: {exc}{keep}")
            if on_done:
                on_done(False)

        self.tasks.run(
            _load_model,
            model_type,
            checkpoint,
            self.embedding_cache_dir,
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
            _make_predictor,
            sam,
            self.embedding_cache_dir,
            name="predictor",
            on_result=ok,
            on_error=lambda exc: self.fail(f"Cannot use the model: {exc}"),
        )

    def _install_base(self, sam, predictor, info: ModelInfo) -> None:
        self.sams = {"base": sam}
        self.predictors = {"base": predictor}
        self.infos = {"base": info}
        self.active = "base"
        self._embedded.clear()
        self.model_changed.emit()
        self.tell(f"Model {info.label} on {info.device}")
        self.ensure_embedding()

    def set_adapted(
        self, sam, info: ModelInfo, activate: bool = True, on_done: Callable[[bool], None] | None = None
    ) -> None:
        """Hot-swap: ``sam`` (an adapted student) becomes the ``adapted`` model; prompts re-predict with it."""

        def ok(predictor):
            self.sams["adapted"] = sam
            self.predictors["adapted"] = predictor
            self.infos["adapted"] = info
            self._embedded.pop("adapted", None)
            if activate:
                self.active = "adapted"
            self.model_changed.emit()
            self.ensure_embedding("adapted")
            if on_done:
                on_done(True)

        def failed(exc):
            self.fail(f"Cannot use the adapted model: {exc}")
            if on_done:
                on_done(False)

        self.tasks.run(
            _make_predictor, sam, self.embedding_cache_dir, name="adapted predictor", on_result=ok, on_error=failed
        )

    def set_active(self, name: str) -> None:
        """Switch the model prompts are predicted with ("base" or "adapted")."""
        if name not in self.predictors or name == self.active:
            return
        self.active = name
        self.model_changed.emit()
        self.tell(f"Now predicting with the {name} model ({self.infos[name].label})")
        self.ensure_embedding(name)

    @property
    def has_adapted(self) -> bool:
        return "adapted" in self.predictors

    def shutdown(self) -> None:
        self.tasks.shutdown()
