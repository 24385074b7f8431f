"""The settings of a fine-tuning run (:class:`TrainConfig`) and named presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from infosam_core.distill.registry import (
    DISTILLERS,
    NO_DISTILLATION,
    batch_size_problem,
    distiller_names,
    make_distiller_config,
    options_for_batch,
)

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setup for all datasets (roads: 20 epochs).
    "paper": dict(
        peft="adapter",
        distill="infosam",
        distill_options={"alpha": 1.0, "beta": 0.5, "center": False},  # the paper's formula, on every model
        distill_weight=1.0,
        epochs=10,
        batch_size=4,
        lr=2e-4,
        min_lr=2e-5,
        seed=42,
    ),
}


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are the paper's (see :data:`PRESETS`).

    The loss is ``segmentation + distill_weight * distiller`` where the distiller (``distill``, one of
    :func:`~infosam_core.distill.distiller_names`) weighs its own terms with ``distill_options``: for InfoSAM
    ``alpha`` (weight of L_r) and ``beta`` (weight of L_d). ``distill_weight`` is the paper's lambda; the CLI
    keeps the paper's flag names ``--lam``, ``--alpha``, ``--beta``.
    """

    peft: str = "adapter"
    peft_options: dict[str, Any] = field(default_factory=dict)
    distill: str = "infosam"  # a registered distiller, or "none" (plain PEFT)
    distill_options: dict[str, Any] = field(default_factory=dict)  # e.g. InfoSAM's {"alpha": 1.0, "beta": 0.5}
    distill_weight: float = 1.0  # lambda: weight of the distiller's loss against the segmentation loss
    epochs: int = 10
    batch_size: int = 4
    lr: float = 2e-4
    min_lr: float = 2e-5
    # multiplies lr (and min_lr) for the mask decoder's trainable parameters (1 = the paper: one rate for all)
    decoder_lr_scale: float = 1.0
    # 0 = the teacher is the frozen pre-trained model (the paper). In (0, 1): the teacher is an exponential moving
    # average of the student (a "mean teacher"), starting where the student starts and updated after every step
    # as teacher = teacher_ema * teacher + (1 - teacher_ema) * student (issue 31's candidate for weak teachers)
    teacher_ema: float = 0.0
    grad_clip: float | None = None
    seed: int = 42
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    bf16: bool = True  # bf16 autocast where bf16 is native: CUDA GPUs with bf16, CPUs with AMX (else float32)
    p_box: float = 0.5
    box_jitter: int = 5
    hflip: bool = True
    vflip: bool = False
    time_budget_s: float | None = None
    max_steps: int | None = None
    teacher_cache: bool = True
    teacher_cache_max_mb: float = 4096.0
    grad_checkpoint: bool = False  # recompute the student's encoder blocks in backward: less memory, ~1/3 slower
    val_prompt: str = "box"
    keep_best: bool = True  # with validation samples, end with the best epoch's weights

    def validate(self) -> None:
        """Raise ValueError for a setting that cannot train; the PEFT and distiller options first
        (:class:`~infosam_core.options.OptionError`, one line naming the option)."""
        from infosam_core.peft.registry import make_config

        make_config(self.peft, self.peft_options)  # unknown method or option, wrong type, out of bounds
        if self.distill != NO_DISTILLATION and self.distill not in DISTILLERS:
            raise ValueError(f"distill must be one of {', '.join(distiller_names())}, got {self.distill!r}")
        if self.distill != NO_DISTILLATION:
            make_distiller_config(self.distill, self.distill_options)  # raises for unknown or bad options
        elif self.distill_options:
            raise ValueError(f"distill_options {sorted(self.distill_options)} given with distill='none'")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        # a distiller built for the batch (SemCKD) takes the run's batch size unless its option names one (the
        # trainer gives it the per-process batch under DDP)
        options = options_for_batch(self.distill, self.distill_options, self.batch_size)
        problem = batch_size_problem(self.distill, options, self.batch_size)
        if problem:
            raise ValueError(problem)
        if not math.isfinite(self.distill_weight) or self.distill_weight < 0:
            raise ValueError(f"distill_weight (lambda) must be a finite number >= 0, got {self.distill_weight}")
        if not 0 <= self.p_box <= 1:
            raise ValueError(f"p_box must be in [0, 1], got {self.p_box}")
        if (
            not (math.isfinite(self.lr) and math.isfinite(self.min_lr))
            or self.lr <= 0
            or self.min_lr < 0
            or self.min_lr > self.lr
        ):
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if not (math.isfinite(self.decoder_lr_scale) and self.decoder_lr_scale > 0):
            raise ValueError(f"decoder_lr_scale must be a finite number > 0, got {self.decoder_lr_scale}")
        if not (math.isfinite(self.teacher_ema) and 0 <= self.teacher_ema < 1):
            raise ValueError(
                f"teacher_ema must be in [0, 1) (0: the frozen pre-trained teacher; e.g. 0.9 for a moving average of "
                f"the student), got {self.teacher_ema}"
            )
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or self.max_steps < 1):
            raise ValueError(f"max_steps must be >= 1 (or not given), got {self.max_steps}")
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s >= 0):
            raise ValueError(f"time_budget_s must be a finite number of seconds >= 0, got {self.time_budget_s}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a finite number > 0 (or None), got {self.grad_clip}")
        if self.box_jitter < 0:
            raise ValueError(f"box_jitter must be >= 0, got {self.box_jitter}")
        if not (math.isfinite(self.teacher_cache_max_mb) and self.teacher_cache_max_mb >= 0):
            raise ValueError(f"teacher_cache_max_mb must be a finite number >= 0, got {self.teacher_cache_max_mb}")
        if self.val_prompt not in ("box", "point", "points5"):
            raise ValueError(f"val_prompt must be box, point or points5, got {self.val_prompt!r}")
