"""What a fine-tuning run reports while it runs and returns when it ends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from infosam_core.models.protocols import SamLike
from infosam_core.peft.state import PeftReport
from infosam_core.training.config import TrainConfig


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss diverged). ``result`` holds the model with the last good weights;
    ``reason`` is what went wrong without the advice on what to do (the message has both)."""

    def __init__(self, message: str, result: TrainResult | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.reason = reason or message


@dataclass
class TrainProgress:
    """Reported after every step. After an epoch's validation, one more report for the same step carries
    ``val_miou`` (and the epoch's mean losses)."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    seg_loss: float
    terms: dict[str, float]  # the distiller's terms, unweighted, by name (InfoSAM: l_r, l_d); empty without one
    lr: float
    elapsed_s: float
    eta_s: float
    val_miou: float | None = None
    # the distiller's diagnostics (InfoSAM: rel_cos_s) and the collapse flag (infosam_core.training.collapse)
    diagnostics: dict[str, float] = field(default_factory=dict)
    distill_collapsed: bool = False


@dataclass
class TrainResult:
    """The adapted model (eval mode; ``model.peft_state`` and, with a distiller, ``model.distiller``) and how it
    went."""

    model: SamLike
    report: PeftReport
    config: TrainConfig
    history: list[dict[str, Any]]  # one entry per epoch (mean losses, lr, validation mIoU)
    steps: int
    cancelled: bool = False
    stop_reason: str = "completed"  # completed | cancelled | time_budget | max_steps | error
    best_val_miou: float | None = None
    best_epoch: int | None = None
    elapsed_s: float = 0.0
    teacher_encoder_images: int = 0  # images the teacher's encoder ran on (once per image and flip variant)
    collapse_step: int | None = None  # the step at which the distillation was first flagged collapsed

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (stored in adapter files and the CLI's history file)."""
        return {
            "config": asdict(self.config),
            "steps": self.steps,
            "stop_reason": self.stop_reason,
            "cancelled": self.cancelled,
            "best_val_miou": self.best_val_miou,
            "best_epoch": self.best_epoch,
            "elapsed_s": round(self.elapsed_s, 3),
            "teacher_encoder_images": self.teacher_encoder_images,
            "distill_collapse_step": self.collapse_step,
            "history": self.history,
            "peft": self.report.to_dict(),
        }
