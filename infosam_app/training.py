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

import contextlib
import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal

from infosam_app.session import Session
from infosam_app.state import gc_policy
from infosam_app.state.adapt_memory import AdaptMemory, Comparison, held_out_split
from infosam_app.state.method_choices import default_distiller, distill_label
from infosam_app.state.models import ModelInfo, device_name
from infosam_app.state.wording import adapter_name, plural
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


def _train_job(sources, config, base_sam, init_model, run_dir: Path, report, should_stop, on_skip=None, settings=None):
    """Train on the objects (less a held-out fifth, see :func:`held_out_split`), save the run, then measure the
    base and the adapted model on the held-out objects (on the training objects when there are too few).

    The project's ``adapt.json`` is written here, on the worker, as soon as the adapter is saved: a run cut
    short by closing the app (whose results never reach the GUI) is still the project's adapter on reopen."""
    history: dict[str, list[list[float]]] = {}

    def record(p) -> None:
        if p.val_miou is None:  # the end-of-epoch report repeats the epoch's mean losses
            for name, value in {"seg": p.seg_loss, **p.terms}.items():
                if value is not None and np.isfinite(value):
                    history.setdefault(name, []).append([float(p.step), float(value)])
        report(p)

    from infosam_core.annotation.training_samples import build_samples
    from infosam_core.training.runs import train_and_save

    samples = build_samples(sources, on_skip=on_skip)
    if len(samples) < MIN_OBJECTS:
        raise ValueError(f"need at least {MIN_OBJECTS} accepted objects to adapt, found {len(samples)}")
    train_idx, held_idx = held_out_split(len(samples), config.seed)
    train = [samples[i] for i in train_idx]
    held = [samples[i] for i in held_idx]
    config.batch_size = max(2, min(config.batch_size, len(train)))
    rng = np.random.default_rng(config.seed)
    val = [train[i] for i in sorted(rng.permutation(len(train))[:MAX_VAL_SAMPLES])]
    # the set-up (copying the model, resizing samples) makes many objects: no full GC pass until the first step
    with gc_policy.hold_collections() as gc_hold:  # a failed run keeps its last good weights: RunFailedError
        saved = train_and_save(
            config,
            base_sam,
            train,
            run_dir,
            facts={"n_samples": len(train), "n_held_out": len(held)},
            progress=gc_hold.release_before(record),
            should_stop=should_stop,
            val_samples=val,
            init_model=init_model,
        )
    assert saved.files is not None  # a folder was given
    root = run_dir.parent.parent  # <project>/adapters/<run>
    remember_run(root, saved.files.adapter, settings, history, None)
    comparison = None
    if not should_stop():  # closing: the comparison can wait for a later run
        comparison = compare_models(base_sam, saved.result.model, held or val, held_out=bool(held), seed=config.seed)
        remember_run(root, saved.files.adapter, settings, history, comparison)
    return saved.result, saved.files.adapter, comparison


def remember_run(root: Path, adapter: Path, settings, history, comparison) -> None:
    """Write the project's ``adapt.json`` (:class:`AdaptMemory`): this run's adapter, settings and losses."""
    memory = AdaptMemory(
        settings=dataclasses.asdict(settings) if settings is not None else {},
        history={k: [list(p) for p in v] for k, v in history.items()},
        comparison=comparison,
    )
    memory.set_adapter(root, adapter)
    with contextlib.suppress(OSError):  # UI state: a read-only disk only means nothing is remembered
        memory.save(root)


def compare_models(base_sam, adapted_sam, samples, held_out: bool, seed: int = 0) -> Comparison | None:
    """Mean IoU of both models on ``samples``, one seeded box prompt each (the same for both)."""
    from infosam_core.evaluation.prompted import evaluate

    if not samples:
        return None
    base = evaluate(base_sam, samples, prompt="box", seed=seed, metrics=("iou",))
    adapted = evaluate(adapted_sam, samples, prompt="box", seed=seed, metrics=("iou",))
    if not base.rows:
        return None
    return Comparison(base.miou, adapted.miou, len(base.rows), held_out)


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
        self.skipped: list[str] = []
        self.last_comparison: Comparison | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.is_done

    def sample_sources(self) -> list[ObjectSource]:
        project = self.session.project
        return [] if project is None else snapshot_objects(project, self.message.emit)

    def object_count(self) -> int:
        return self.session.project.total_objects() if self.session.project is not None else 0

    def forget_run(self) -> None:
        """Another project: its runs are not this one's to continue."""
        if not self.running:
            self.last_result = self.last_adapter_path = self.last_settings = self.run_dir = None
            self.last_comparison = None
            self.lr_scale = 1.0

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
        self.skipped = []  # images the run could not read (filled from the worker; read once it is done)
        gc_policy.freeze_new()  # where the app manages the GC (StudioWidget): what was made since, too
        self.task = session.tasks.run(
            _train_job,
            self.sample_sources(),
            config,
            session.sams["base"],
            init_model,
            self.run_dir,
            on_skip=self.skipped.append,
            settings=dataclasses.replace(settings, max_steps=None),
            name="train",
            kind=TaskKind.TRAINING,  # the session refuses to swap the base model while it runs
            on_progress=self.progress.emit,
            on_result=self._on_done,
            on_error=self._on_error,
        )
        self.started.emit()
        session.tell(
            f"Adapting ({adapter_name(settings.method)}{distill_label(settings.distill)}) on {plural(n, 'object')} …"
        )
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
        from infosam_core.training.defaults import recommended_distill_options

        base = self.session.infos.get("base")  # the setting measured best for the model in use (issue 31)
        config = TrainConfig(
            peft=settings.method,
            distill=settings.distill,
            distill_options=recommended_distill_options(base.model_type if base else None, settings.distill),
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
        result, adapter_path, comparison = payload
        self.task = None
        self.last_result, self.last_adapter_path = result, adapter_path
        self.last_comparison = comparison
        session = self.session
        base_label = session.infos["base"].label if "base" in session.infos else "SAM"
        info = ModelInfo(
            label=f"{adapter_name(result.config.peft)}{distill_label(result.config.distill)} "
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
        if self.skipped:
            session.fail(
                f"Adapt skipped {plural(len(self.skipped), 'unreadable image')}: {'; '.join(self.skipped[:3])}"
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
