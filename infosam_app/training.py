"""'Adapt to my data': runs :func:`infosam_core.training.runs.train_and_save` on the accepted objects in a background
thread.

Every accepted object becomes one sample (its image, the binary mask of that object). The run writes into
the project folder (``adapters/<run>/``: ``adapter.json`` + its tensors file and ``history.json``, as every
saved run). When it ends -- finished, cancelled (the best adapter so far is kept) or stopped by
the time budget -- the student is hot-swapped into the session as the ``adapted`` model. Errors (NaN,
out of memory, bad data) are reported and the previous model stays in use. ``continue_run`` trains the
last adapter further.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal

from infosam_app.session import Session
from infosam_app.state import gc_policy
from infosam_app.state.method_choices import default_distiller, distill_label
from infosam_app.state.models import ModelInfo, device_name
from infosam_app.workers import TaskKind
from infosam_core.annotation.training_samples import ObjectSource, snapshot_objects

MIN_OBJECTS = 2
MAX_VAL_SAMPLES = 16  # the best epoch is chosen on (at most) this many of the user's objects


@dataclass
class RunSettings:
    method: str = "adapter"
    distill: str = dataclasses.field(default_factory=default_distiller)  # one of distiller_names(); InfoSAM
    epochs: int = 30
    time_budget_s: float | None = None
    max_steps: int | None = None
    batch_size: int = 4
    lr: float | None = None
    seed: int = 42
    low_memory: bool = False  # activation checkpointing (TrainConfig.grad_checkpoint)


def _train_job(sources, config, base_sam, init_model, run_dir: Path, report, should_stop):
    from infosam_core.annotation.training_samples import build_samples
    from infosam_core.inference.tiling import TilingConfig
    from infosam_core.training.runs import train_and_save

    samples = build_samples(sources, TilingConfig.for_model(base_sam))  # large images: crops around each object
    if len(samples) < MIN_OBJECTS:
        raise ValueError(f"need at least {MIN_OBJECTS} accepted objects to adapt, found {len(samples)}")
    config.batch_size = max(2, min(config.batch_size, len(samples)))
    rng = np.random.default_rng(config.seed)
    val = [samples[i] for i in sorted(rng.permutation(len(samples))[:MAX_VAL_SAMPLES])]
    # the set-up (copying the model, resizing samples) makes many objects: no full GC pass until the first step
    with gc_policy.hold_collections() as gc_hold:  # a failed run keeps its last good weights: RunFailedError
        saved = train_and_save(
            config,
            base_sam,
            samples,
            run_dir,
            facts={"n_samples": len(samples)},
            progress=gc_hold.release_before(report),
            should_stop=should_stop,
            val_samples=val,
            init_model=init_model,
        )
    assert saved.files is not None  # a folder was given
    return saved.result, saved.files.adapter


class TrainingController(QObject):
    """Starts, cancels and continues adaptation runs for one session."""

    started = Signal()
    progress = Signal(object)  # infosam_core.training.results.TrainProgress
    finished = Signal(object)  # infosam_core.training.results.TrainResult
    failed = Signal(str)
    message = Signal(str)

    def __init__(self, session: Session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.task = None
        self.last_result = None
        self.last_adapter_path: Path | None = None
        self.last_settings: RunSettings | None = None
        self.run_dir: Path | None = None
        self.lr_scale = 1.0  # after a diverged run, Continue trains its last good weights at a lower rate

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.is_done

    def sample_sources(self) -> list[ObjectSource]:
        project = self.session.project
        return [] if project is None else snapshot_objects(project, self.message.emit)

    def object_count(self) -> int:
        return self.session.project.total_objects() if self.session.project is not None else 0

    def can_continue(self) -> bool:
        return self.last_result is not None and not self.running

    def start(self, settings: RunSettings, continue_run: bool = False) -> bool:
        """Start a run in the background; False (with a message) when it cannot start."""
        session = self.session
        n = self._objects_to_train_on()
        if n is None:
            return False
        init_model = None
        if not continue_run:
            self.lr_scale = 1.0
        else:
            if self.last_result is None:
                self.failed.emit("Nothing to continue: start a run first.")
                return False
            init_model = self.last_result.model
            settings = dataclasses.replace(settings, method=self.last_result.config.peft)
        config = self._train_config(settings, continue_run)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = session.project.adapters_dir / f"{stamp}-{settings.method}{'-continued' if continue_run else ''}"
        self.last_settings = settings
        gc_policy.freeze_new()  # where the app manages the GC (StudioWidget): what was made since, too
        self.task = session.tasks.run(
            _train_job,
            self.sample_sources(),
            config,
            session.sams["base"],
            init_model,
            self.run_dir,
            name="train",
            kind=TaskKind.TRAINING,  # the session refuses to swap the base model while it runs
            on_progress=self.progress.emit,
            on_result=self._on_done,
            on_error=self._on_error,
        )
        self.started.emit()
        session.tell(f"Adapting ({settings.method}{distill_label(settings.distill)}) on {n} objects …")
        return True

    def _objects_to_train_on(self) -> int | None:
        """The number of accepted objects, or None (with a message) when a run cannot start now."""
        if self.running:
            self.message.emit("A run is already going on.")
            return None
        if "base" not in self.session.sams:
            self.failed.emit("Load a model first.")
            return None
        n = self.object_count()
        if n < MIN_OBJECTS:
            msg = f"Adapting needs at least {MIN_OBJECTS} accepted objects (the project has {n}): accept more first."
            self.failed.emit(msg)
            self.session.tell(msg)
            return None
        return n

    def _train_config(self, settings: RunSettings, continue_run: bool):
        """The core's TrainConfig for the panel's settings; a continued run after a divergence uses a lower lr."""
        from infosam_core.training.config import TrainConfig

        config = TrainConfig(
            peft=settings.method,
            distill=settings.distill,
            epochs=settings.epochs,
            time_budget_s=settings.time_budget_s,
            max_steps=settings.max_steps,
            batch_size=settings.batch_size,
            seed=settings.seed,
            grad_checkpoint=settings.low_memory,
        )
        if settings.lr is not None:
            config.lr = settings.lr
            config.min_lr = min(config.min_lr, settings.lr)
        if continue_run and self.lr_scale != 1.0:
            config.lr *= self.lr_scale
            config.min_lr = min(config.min_lr, config.lr)
        return config

    def cancel(self) -> None:
        if self.running:
            self.task.cancel()
            self.session.tell("Cancelling: the run stops after this step and keeps its best adapter so far …")

    def _on_done(self, payload) -> None:
        result, adapter_path = payload
        self.task = None
        self.last_result, self.last_adapter_path = result, adapter_path
        session = self.session
        base_label = session.infos["base"].label if "base" in session.infos else "SAM"
        info = ModelInfo(
            label=f"{result.config.peft} adapter{distill_label(result.config.distill)} "
            f"({self.run_dir.name if self.run_dir else 'run'}) on {base_label}",
            device=device_name(result.model),
            model_type=session.infos["base"].model_type if session.infos else "",
            adapter_path=str(adapter_path),
        )
        session.set_adapted(result.model, info, activate=True)
        reason = {
            "cancelled": "cancelled (best adapter so far kept)",
            "time_budget": "time budget reached",
            "max_steps": "step limit reached",
            "completed": "finished",
        }.get(result.stop_reason, result.stop_reason)
        session.tell(
            f"Adaptation {reason} after {result.steps} steps; now predicting with the adapted model. "
            f"Saved in {adapter_path.parent}"
        )
        self.finished.emit(result)

    def _on_error(self, exc: BaseException) -> None:
        from infosam_core.training.runs import RunFailedError

        self.task = None
        text = str(exc) or type(exc).__name__
        if "out of memory" in text.lower():
            text = (
                f"out of memory: {text.splitlines()[0]}. Tick 'Low memory (slower)', or try a smaller model, "
                "fewer/lower-resolution images, or the CPU"
            )
        msg = f"Adaptation failed: {text}. The previous model stays in use."
        if isinstance(exc, RunFailedError) and exc.result is not None:  # a diverged run: its last good weights
            saved, result = exc.files.adapter, exc.result
            self.last_result, self.last_adapter_path = result, saved
            self.lr_scale *= 0.1
            msg = (
                f"Adaptation stopped: {exc.reason}. The previous model stays in "
                f"use. The last good adapter (step {result.steps}) is saved as {saved}: 'Load adapter…' to try "
                f"it, or 'Continue' to train it further at a {round(1 / self.lr_scale):d}x lower learning rate."
            )
        self.session.fail(msg)
        self.failed.emit(msg)
