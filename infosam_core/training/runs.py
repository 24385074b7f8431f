"""Train and save a run: the one way `infosam train`, the app's "Adapt to my data" and the experiment runner
train a student and leave its files.

``train_and_save(config, base_sam, samples, folder, facts=...)`` trains
(:func:`~infosam_core.training.trainer.train`) and writes into ``folder``:

* ``adapter.json`` + the tensors file it names (``adapter.<hash>.safetensors``), saved all or nothing by
  :func:`~infosam_core.adapter_files.checkpoint.save_peft_checkpoint`, with the run's summary inside;
* ``history.json``: the same summary (``TrainResult.summary()``: settings, per-epoch losses, validation mIoU,
  parameter counts) plus the caller's ``facts`` (e.g. the data and model, the number of samples) and
  ``error`` (None, or the message of a failed run).

A cancelled run (``should_stop``) is saved like a finished one, with its best weights so far;
:attr:`SavedRun.partial` says so. A run that fails after at least one step (:class:`TrainingError`, e.g. a
diverging loss) saves its last good weights too and raises :class:`RunFailedError`, a TrainingError that
carries the saved files. ``folder=None`` trains without writing (a torchrun process other than rank 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infosam_core.adapter_files.checkpoint import save_peft_checkpoint
from infosam_core.data.datasets import SegmentationSample
from infosam_core.io.atomic import write_json_atomic
from infosam_core.models.protocols import SamLike
from infosam_core.training.config import TrainConfig
from infosam_core.training.results import TrainingError, TrainProgress, TrainResult
from infosam_core.training.trainer import EpochCallback, train

ADAPTER_NAME = "adapter"  # <folder>/adapter.json + <folder>/adapter.<hash>.safetensors
HISTORY_NAME = "history.json"


@dataclass(frozen=True)
class RunFiles:
    """The files a saved run left in ``folder``."""

    folder: Path
    adapter: Path  # the adapter's JSON; it names the tensors file (load with load_model_with_adapter)
    tensors: Path
    history: Path


@dataclass
class SavedRun:
    """A run that ended (finished, cancelled, or stopped by its step or time limit) and its files."""

    result: TrainResult
    files: RunFiles | None  # None when nothing was written (``folder=None``)

    @property
    def partial(self) -> bool:
        """True when the run was cancelled before its planned end: the files hold its best weights so far."""
        return self.result.cancelled


class RunFailedError(TrainingError):
    """A run failed after some steps; its last good weights (after step ``saved_step``) were saved as ``files``
    (``result`` holds them too)."""

    def __init__(self, error: TrainingError, files: RunFiles) -> None:
        super().__init__(str(error), result=error.result, reason=error.reason)
        self.files = files
        self.saved_step = error.result.steps if error.result is not None else 0


def save_run(
    result: TrainResult, folder: Path, facts: dict[str, Any] | None = None, error: str | None = None
) -> RunFiles:
    """Write ``result``'s adapter and history into ``folder`` (created if missing); see the module docstring.
    Raises OSError when the folder cannot be written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    summary.update(facts or {})
    summary["error"] = error
    tensors, adapter = save_peft_checkpoint(result.model, folder / ADAPTER_NAME, summary)
    history = folder / HISTORY_NAME
    write_json_atomic(history, summary)
    return RunFiles(folder=folder, adapter=adapter, tensors=tensors, history=history)


def train_and_save(
    config: TrainConfig,
    base_sam: SamLike,
    samples: list[SegmentationSample],
    folder: Path | None,
    *,
    facts: dict[str, Any] | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    val_samples: list[SegmentationSample] | None = None,
    init_model: SamLike | None = None,
    callbacks: list[EpochCallback] | None = None,
) -> SavedRun:
    """Train (arguments as :func:`~infosam_core.training.trainer.train`) and save the run into ``folder``
    (None: write nothing). Raises :class:`RunFailedError` when training failed after saving its last good
    weights, a plain TrainingError when there was nothing to save, ValueError for unusable settings or data,
    OSError when the files cannot be written."""
    try:
        result = train(
            config,
            base_sam,
            samples,
            progress=progress,
            should_stop=should_stop,
            val_samples=val_samples,
            init_model=init_model,
            callbacks=callbacks,
        )
    except TrainingError as exc:
        if folder is None or exc.result is None or exc.result.steps == 0:
            raise
        files = save_run(exc.result, folder, facts, error=str(exc))
        raise RunFailedError(exc, files) from exc
    return SavedRun(result=result, files=save_run(result, folder, facts) if folder is not None else None)
